//! Batch monitors: jobs that run on a schedule (a nightly cost roll-up, an export) report
//! their start and finish with a record count; a monitor knows when they should run and
//! what they should produce, and says when a run was missed, late, never finished, failed,
//! or produced a count out of its expected range ("it succeeded but missed records").
//!
//! `[[batch_monitors]]` is compiled here (the cron expression in its time zone, the
//! expected count); the runs and their findings are the workflow monitor's, which owns them
//! under the same lease. No I/O, no clock.

use crate::workflows::Criticality;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::str::FromStr;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchMonitorConfig {
    /// Unique name; heartbeats go to `POST /v1/heartbeats/<name>`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub criticality: Criticality,
    /// When a run is due: a crontab expression (minute hour day-of-month month
    /// day-of-week; 0 or 7 is Sunday) in `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// An IANA time zone (`Europe/Berlin`); default UTC. Schedules follow its daylight
    /// saving changes.
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// A run may start this long after its scheduled time before it is missed (and late if
    /// it comes after all).
    #[serde(default = "default_grace")]
    pub grace_seconds: u64,
    /// A started run not finished after this long never finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u64>,
    /// The record count a run must report...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_count: Option<u64>,
    /// ...or learn it: the median of the counts of this many recent successful runs (at
    /// least 3; nothing is checked before there are that many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn_count_from_runs: Option<u32>,
    /// The share a count may differ from the expected one (0.1 = ±10 %).
    #[serde(default = "default_tolerance")]
    pub count_tolerance: f64,
    /// For jobs that run many times a day: at least `min` runs must start in every window
    /// of `window_seconds` (windows aligned to midnight UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs_per_window: Option<RunsPerWindow>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunsPerWindow {
    pub window_seconds: u64,
    pub min: u32,
}

fn default_tz() -> String {
    "UTC".into()
}
fn default_grace() -> u64 {
    600
}
fn default_tolerance() -> f64 {
    0.1
}

/// What a run must count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expected {
    Nothing,
    Fixed(u64),
    /// The median of this many recent successful runs.
    Learned(u32),
}

/// A compiled batch monitor.
#[derive(Debug, Clone)]
pub struct BatchMonitor {
    pub name: String,
    pub title: String,
    pub criticality: Criticality,
    /// The crontab expression as written.
    pub expression: Option<String>,
    pub schedule: Option<cron::Schedule>,
    pub timezone: chrono_tz::Tz,
    pub grace: Duration,
    pub max_duration: Option<Duration>,
    pub expected: Expected,
    pub tolerance: f64,
    pub window: Option<(Duration, u32)>,
}

/// A crontab day-of-week field (0 or 7 = Sunday) in the `cron` crate's numbering (1 =
/// Sunday); names pass through.
fn day_of_week(field: &str) -> Result<String, String> {
    let shift = |n: &str| -> Result<u32, String> {
        let v: u32 = n
            .parse()
            .map_err(|_| format!("\"{n}\" is not a day of the week"))?;
        match v {
            0..=6 => Ok(v + 1),
            7 => Ok(1),
            _ => Err(format!("day of the week {v} is not 0-7")),
        }
    };
    let mut parts = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let numeric = range
            .split('-')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let range = if !numeric {
            range.to_string()
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (shift(a)?, b.parse::<u32>().map_err(|e| e.to_string())?);
            if b == 7 || b == 0 {
                // "5-7" is Friday to Sunday: Friday-Saturday and Sunday
                parts.push("1".to_string());
                format!("{a}-7")
            } else {
                format!("{a}-{}", shift(&b.to_string())?)
            }
        } else {
            shift(range)?.to_string()
        };
        parts.push(match step {
            Some(s) => format!("{range}/{s}"),
            None => range,
        });
    }
    Ok(parts.join(","))
}

/// The instants of a schedule in time zone `tz` after `after`, up to and including `until`
/// (at most 10,000). A local time that happens twice (the hour the clocks go back) is one
/// instant: the first.
pub fn slots(
    schedule: &cron::Schedule,
    tz: chrono_tz::Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    schedule
        .after(&after.with_timezone(&tz))
        .filter(|t| !second_of_two(tz, t))
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= until)
        .take(10_000)
        .collect()
}

/// The first instant of a schedule in time zone `tz` after `t`.
pub fn next_slot(
    schedule: &cron::Schedule,
    tz: chrono_tz::Tz,
    t: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule
        .after(&t.with_timezone(&tz))
        .find(|t| !second_of_two(tz, t))
        .map(|t| t.with_timezone(&Utc))
}

/// The later of the two instants a repeated local time stands for.
fn second_of_two(tz: chrono_tz::Tz, t: &DateTime<chrono_tz::Tz>) -> bool {
    use chrono::TimeZone;
    matches!(
        tz.from_local_datetime(&t.naive_local()),
        chrono::LocalResult::Ambiguous(_, later) if later == *t
    )
}

/// Parses an IANA time zone name, with the message `check` shows.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("\"{name}\" is not an IANA time zone (e.g. Europe/Berlin)"))
}

/// Parses a five-field crontab expression.
pub fn parse_schedule(expr: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "\"{expr}\" is not a crontab expression: five fields (minute hour day-of-month month day-of-week), not {}",
            fields.len()
        ));
    }
    let dow = day_of_week(fields[4])?;
    let quartz = format!(
        "0 {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], dow
    );
    cron::Schedule::from_str(&quartz).map_err(|e| format!("\"{expr}\": {e}"))
}

impl BatchMonitor {
    /// Scheduled instants after `after`, up to and including `until`.
    pub fn slots(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        match &self.schedule {
            Some(s) => slots(s, self.timezone, after, until),
            None => Vec::new(),
        }
    }

    /// The first scheduled instant after `t`.
    pub fn next_slot(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        next_slot(self.schedule.as_ref()?, self.timezone, t)
    }

    /// The scheduled instant a run that starts at `t` belongs to: the latest one at or
    /// before `t + grace` (a run may start a little early), within a day's search.
    pub fn slot_of(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let horizon = t + self.grace;
        let mut from = horizon - Duration::days(1);
        // Long gaps (a monthly job): search back further, a bounded number of times.
        for _ in 0..400 {
            if let Some(last) = self.slots(from, horizon).last() {
                return Some(*last);
            }
            from -= Duration::days(1);
        }
        None
    }

    /// The window a time falls in (`runs_per_window`): [start, end).
    pub fn window_of(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let (len, _) = self.window?;
        let secs = len.num_seconds().max(1);
        let start = t.timestamp().div_euclid(secs) * secs;
        let start = DateTime::from_timestamp(start, 0)?;
        Some((start, start + len))
    }

    /// The accepted count range, given the counts of recent successful runs (newest
    /// first); `None` when nothing is checked (yet).
    pub fn count_range(&self, recent: &[i64]) -> Option<(i64, i64)> {
        let expected = match self.expected {
            Expected::Nothing => return None,
            Expected::Fixed(n) => n as f64,
            Expected::Learned(n) => {
                let mut last: Vec<i64> = recent.iter().take(n as usize).copied().collect();
                if last.len() < 3 {
                    return None;
                }
                last.sort_unstable();
                let mid = last.len() / 2;
                if last.len().is_multiple_of(2) {
                    (last[mid - 1] + last[mid]) as f64 / 2.0
                } else {
                    last[mid] as f64
                }
            }
        };
        // (the small margins keep float noise from widening the range: 100 × 1.1 is not 110)
        let low = (expected * (1.0 - self.tolerance) + 1e-9).floor() as i64;
        let high = (expected * (1.0 + self.tolerance) - 1e-9).ceil() as i64;
        Some((low, high))
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not finished.
    Running,
    Succeeded,
    Failed,
    /// Its scheduled time plus the grace passed and it had not started (it becomes
    /// `running` if it starts after all: a late run).
    Missed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Missed => "missed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One run of a batch job (or the place of one that never came).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRun {
    pub monitor: String,
    /// The job's own id of the run, when it sends one.
    pub run_id: Option<String>,
    /// The scheduled instant it belongs to (none for monitors without a schedule).
    pub slot: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    /// Records the job reported.
    pub count: Option<i64>,
    /// The job's message (why it failed).
    pub message: Option<String>,
}

impl BatchRun {
    /// How people name it: the job's run id, else its scheduled time, else its start.
    pub fn label(&self) -> String {
        if let Some(id) = &self.run_id {
            return id.clone();
        }
        match self.slot.or(self.started_at) {
            Some(t) => t.format("%Y-%m-%d %H:%M UTC").to_string(),
            None => "?".into(),
        }
    }
}

/// Every `[[batch_monitors]]`, compiled.
#[derive(Debug, Clone, Default)]
pub struct BatchMonitors {
    pub list: Vec<BatchMonitor>,
}

impl BatchMonitors {
    pub fn compile(configs: &[BatchMonitorConfig]) -> Result<BatchMonitors, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut list = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let at = |k: &str| format!("batch_monitors[{i}].{k}");
            let before = problems.len();
            if !crate::workflows::is_name(&c.name) {
                problems.push((
                    at("name"),
                    "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
                ));
            } else if !names.insert(c.name.clone()) {
                problems.push((at("name"), format!("\"{}\" is declared twice", c.name)));
            }
            let schedule = match c.schedule.as_deref().map(parse_schedule) {
                Some(Err(e)) => {
                    problems.push((at("schedule"), e));
                    None
                }
                Some(Ok(s)) => Some(s),
                None => None,
            };
            if c.schedule.is_none() && c.runs_per_window.is_none() {
                problems.push((
                    at("schedule"),
                    "a batch monitor needs a schedule or runs_per_window".into(),
                ));
            }
            let timezone = parse_timezone(&c.timezone).unwrap_or_else(|e| {
                problems.push((at("timezone"), e));
                chrono_tz::UTC
            });
            let expected = match (c.expected_count, c.learn_count_from_runs) {
                (Some(_), Some(_)) => {
                    problems.push((
                        at("learn_count_from_runs"),
                        "either expected_count or learn_count_from_runs, not both".into(),
                    ));
                    Expected::Nothing
                }
                (Some(n), None) => Expected::Fixed(n),
                (None, Some(n)) if n < 3 => {
                    problems.push((at("learn_count_from_runs"), "must be at least 3".into()));
                    Expected::Nothing
                }
                (None, Some(n)) => Expected::Learned(n),
                (None, None) => Expected::Nothing,
            };
            if !(0.0..=1.0).contains(&c.count_tolerance) {
                problems.push((at("count_tolerance"), "must be between 0 and 1".into()));
            }
            if c.max_duration_seconds == Some(0) {
                problems.push((at("max_duration_seconds"), "must be at least 1".into()));
            }
            if let Some(w) = c.runs_per_window
                && (w.window_seconds < 60 || w.min == 0)
            {
                problems.push((
                    at("runs_per_window"),
                    "window_seconds must be at least 60 and min at least 1".into(),
                ));
            }
            if problems.len() > before {
                continue;
            }
            list.push(BatchMonitor {
                name: c.name.clone(),
                title: c.title.clone().unwrap_or_else(|| c.name.clone()),
                criticality: c.criticality,
                expression: c.schedule.clone(),
                schedule,
                timezone,
                grace: Duration::seconds(c.grace_seconds as i64),
                max_duration: c.max_duration_seconds.map(|s| Duration::seconds(s as i64)),
                expected,
                tolerance: c.count_tolerance,
                window: c
                    .runs_per_window
                    .map(|w| (Duration::seconds(w.window_seconds as i64), w.min)),
            });
        }
        if problems.is_empty() {
            Ok(BatchMonitors { list })
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, name: &str) -> Option<&BatchMonitor> {
        self.list.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor(schedule: &str, tz: &str) -> BatchMonitor {
        BatchMonitors::compile(&[BatchMonitorConfig {
            name: "nightly".into(),
            title: None,
            criticality: Criticality::P3,
            schedule: Some(schedule.into()),
            timezone: tz.into(),
            grace_seconds: 900,
            max_duration_seconds: Some(3600),
            expected_count: None,
            learn_count_from_runs: Some(5),
            count_tolerance: 0.1,
            runs_per_window: None,
        }])
        .unwrap()
        .list
        .remove(0)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_local_schedule_follows_daylight_saving() {
        // 01:00 in Berlin is 00:00 UTC in winter and 23:00 UTC the day before in summer;
        // on 2026-03-29 the clocks go forward at 02:00.
        let m = monitor("0 1 * * *", "Europe/Berlin");
        assert_eq!(
            m.slots(utc("2026-03-27T12:00:00Z"), utc("2026-03-30T12:00:00Z")),
            [
                utc("2026-03-28T00:00:00Z"),
                utc("2026-03-29T00:00:00Z"),
                utc("2026-03-29T23:00:00Z")
            ]
        );
        assert_eq!(
            m.slot_of(utc("2026-03-29T23:05:00Z")),
            Some(utc("2026-03-29T23:00:00Z"))
        );
        // 02:30 does not exist on the night the clocks go forward: no run is due that day
        let skipped = monitor("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            skipped.slots(utc("2026-03-28T12:00:00Z"), utc("2026-03-30T12:00:00Z")),
            [utc("2026-03-30T00:30:00Z")]
        );
        // and 02:30 happens twice when they go back: one run is due, the first
        let twice = monitor("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            twice.slots(utc("2026-10-24T12:00:00Z"), utc("2026-10-25T12:00:00Z")),
            [utc("2026-10-25T00:30:00Z")]
        );
        assert!(
            twice
                .slots(utc("2026-10-25T00:30:00Z"), utc("2026-10-25T12:00:00Z"))
                .is_empty()
        );
        assert_eq!(
            twice.next_slot(utc("2026-10-25T00:30:00Z")),
            Some(utc("2026-10-26T01:30:00Z"))
        );
        // a run a little early belongs to the coming slot
        assert_eq!(
            m.slot_of(utc("2026-03-29T22:50:00Z")),
            Some(utc("2026-03-29T23:00:00Z"))
        );
    }

    #[test]
    fn crontab_days_of_the_week_and_bad_expressions() {
        // Monday to Friday at 06:00 UTC: 2026-11-23 is a Monday
        let m = monitor("0 6 * * 1-5", "UTC");
        let days: Vec<String> = m
            .slots(utc("2026-11-22T00:00:00Z"), utc("2026-11-29T23:59:59Z"))
            .iter()
            .map(|t| t.format("%a").to_string())
            .collect();
        assert_eq!(days, ["Mon", "Tue", "Wed", "Thu", "Fri"]);
        let weekend = monitor("0 6 * * 6-7", "UTC");
        let days: Vec<String> = weekend
            .slots(utc("2026-11-22T00:00:00Z"), utc("2026-11-29T23:59:59Z"))
            .iter()
            .map(|t| t.format("%a").to_string())
            .collect();
        assert_eq!(days, ["Sun", "Sat", "Sun"]);
        assert!(
            parse_schedule("0 6 * *")
                .unwrap_err()
                .contains("five fields")
        );
        assert!(parse_schedule("0 25 * * *").is_err());
        assert!(parse_schedule("0 6 * * 9").is_err());
    }

    #[test]
    fn learned_counts_use_the_median_of_recent_runs() {
        let m = monitor("0 1 * * *", "UTC");
        assert_eq!(m.count_range(&[100, 100]), None, "too few runs yet");
        assert_eq!(
            m.count_range(&[100, 1000, 90, 110, 100, 5]),
            Some((90, 110))
        );
    }
}
