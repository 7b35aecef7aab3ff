//! Time. Every business timestamp in Switchyard (event receipt, SLAs, schedules, backoff
//! delays) comes from a [`Clock`]; nothing else may call `Utc::now()` for business time.
//!
//! Three clocks exist:
//! - [`SystemClock`]: wall time.
//! - [`ScaledClock`]: business time runs `scale` times faster than wall time from a fixed
//!   origin, so the demo can pass a day in minutes. Its origin is persisted by the caller
//!   (see [`ScaledOrigin`]) so a restart continues the same simulated day.
//! - [`ManualClock`]: tests set and advance it by hand and never sleep.
//!
//! Network timeouts, leases, signature tolerance windows and the work itself are *not*
//! business time: they use real time (`std::time::Instant` / `Utc::now()` via
//! [`Clock::real_now`]), whatever the scale.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// The source of business time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Business time now.
    fn now(&self) -> DateTime<Utc>;

    /// How many business seconds pass per real second (1.0 for the system clock).
    fn scale(&self) -> f64 {
        1.0
    }

    /// Real (wall) time, for leases and other things that must not be scaled.
    fn real_now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Calls `wake` whenever business time jumps (a manual clock set by a test). Clocks that
    /// run by themselves never call it: waiters sleep the real duration instead.
    fn on_change(&self, wake: Waker) {
        let _ = wake;
    }

    /// The real duration to wait for `business` time to pass.
    fn real_duration(&self, business: Duration) -> std::time::Duration {
        let secs = business.num_milliseconds().max(0) as f64 / 1000.0 / self.scale();
        std::time::Duration::from_secs_f64(secs)
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// A callback for [`Clock::on_change`].
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// Wall time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The persisted anchor of a scaled clock: at real instant `real` business time was `business`,
/// and from there business time runs at `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaledOrigin {
    pub real: DateTime<Utc>,
    pub business: DateTime<Utc>,
    pub scale: f64,
}

impl ScaledOrigin {
    /// Business time at real instant `real_now`.
    pub fn business_at(&self, real_now: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed_ns = (real_now - self.real).num_nanoseconds().unwrap_or(i64::MAX) as f64;
        self.business + Duration::nanoseconds((elapsed_ns * self.scale) as i64)
    }

    /// The origin to use on start: continue `previous` when there is one (re-anchored at the
    /// current business time if the scale changed), otherwise start business time at `real_now`.
    pub fn resume(previous: Option<ScaledOrigin>, scale: f64, real_now: DateTime<Utc>) -> Self {
        match previous {
            Some(p) if p.scale == scale => p,
            Some(p) => ScaledOrigin {
                real: real_now,
                business: p.business_at(real_now),
                scale,
            },
            None => ScaledOrigin {
                real: real_now,
                business: real_now,
                scale,
            },
        }
    }
}

/// Business time that runs `scale` times faster than wall time.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin: ScaledOrigin,
}

impl ScaledClock {
    pub fn new(origin: ScaledOrigin) -> Self {
        assert!(
            origin.scale.is_finite() && origin.scale > 0.0,
            "scale must be positive"
        );
        Self { origin }
    }

    pub fn origin(&self) -> ScaledOrigin {
        self.origin
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        self.origin.business_at(Utc::now())
    }
    fn scale(&self) -> f64 {
        self.origin.scale
    }
}

/// A clock that only moves when a test moves it. Real time follows business time, so
/// lease expiry can be tested without sleeping too.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    wakers: Arc<Mutex<Vec<Waker>>>,
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            wakers: Arc::default(),
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().expect("clock poisoned") = t;
        self.wake();
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock poisoned") += by;
        self.wake();
    }

    fn wake(&self) {
        let wakers = self.wakers.lock().expect("clock poisoned").clone();
        for w in wakers {
            w();
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock poisoned")
    }
    fn on_change(&self, wake: Waker) {
        self.wakers.lock().expect("clock poisoned").push(wake);
    }
    fn real_now(&self) -> DateTime<Utc> {
        self.now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn scaled_origin_runs_faster_than_real_time() {
        let o = ScaledOrigin {
            real: t("2026-01-01T00:00:00Z"),
            business: t("2026-06-01T08:00:00Z"),
            scale: 60.0,
        };
        // one real minute is one business hour
        assert_eq!(
            o.business_at(t("2026-01-01T00:01:00Z")),
            t("2026-06-01T09:00:00Z")
        );
    }

    #[test]
    fn resume_keeps_the_same_simulated_day() {
        let o = ScaledOrigin {
            real: t("2026-01-01T00:00:00Z"),
            business: t("2026-06-01T08:00:00Z"),
            scale: 60.0,
        };
        let later = t("2026-01-01T00:10:00Z");
        assert_eq!(ScaledOrigin::resume(Some(o), 60.0, later), o);
        // a new scale re-anchors at the business time reached so far
        let r = ScaledOrigin::resume(Some(o), 10.0, later);
        assert_eq!(r.business, t("2026-06-01T18:00:00Z"));
        assert_eq!(r.real, later);
        assert_eq!(
            r.business_at(t("2026-01-01T00:16:00Z")),
            t("2026-06-01T19:00:00Z")
        );
        let fresh = ScaledOrigin::resume(None, 5.0, later);
        assert_eq!(fresh.business, later);
    }

    #[test]
    fn real_duration_divides_by_scale() {
        let c = ScaledClock::new(ScaledOrigin {
            real: Utc::now(),
            business: Utc::now(),
            scale: 120.0,
        });
        assert_eq!(
            c.real_duration(Duration::minutes(10)),
            std::time::Duration::from_secs(5)
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(t("2026-01-01T00:00:00Z"));
        assert_eq!(c.now(), t("2026-01-01T00:00:00Z"));
        c.advance(Duration::seconds(90));
        assert_eq!(c.now(), t("2026-01-01T00:01:30Z"));
        assert_eq!(c.real_now(), c.now());
    }
}
