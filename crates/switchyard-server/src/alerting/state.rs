//! The alerting state machine, pure: alerts fire and resolve, are suppressed (silences,
//! maintenance windows, inhibition), are grouped per route, and groups flush notifications
//! on Alertmanager's timing (group wait, group interval, repeat interval). Incidents open
//! when a group first has an active alert and resolve when its last one clears.
//!
//! Time is passed in (business time), so tests drive it like a manual clock; the service
//! (`mod.rs`) does the I/O: findings and measures in, notification events and one fenced
//! commit out.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use switchyard_core::alerts::{
    Alerting, Cause, Labels, Notification, NotifiedAlert, Severity, all_match, fingerprint,
};
use switchyard_store::{
    AlertRecord, AlertState, AlertsCommit, GroupRow, IncidentRecord, IncidentStatus, Lease,
    NewIncidentEntry, SilenceRecord,
};

/// Something seen that makes an alert fire (a finding, a measure over its threshold, a
/// dead letter).
#[derive(Debug, Clone)]
pub struct Observation {
    pub rule: String,
    /// Without `alertname`, `severity` and `cause` (added here).
    pub labels: Labels,
    pub severity: Severity,
    pub cause: Cause,
    pub summary: String,
    /// Merged into the alert's evidence: `instances` and `events` (lists, capped),
    /// `open` (ids whose closing clears it, uncapped), `error`, `value`, `kinds`.
    pub evidence: Value,
    /// How many times it was seen (a finding is one; a dead-letter count is its number).
    pub count: i64,
}

impl Observation {
    /// The full label set and its fingerprint.
    pub fn labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert("alertname".into(), self.rule.clone());
        l.insert("severity".into(), self.severity.as_str().into());
        l.insert("cause".into(), self.cause.as_str().into());
        l
    }
}

/// The service's own state, saved as the `alerts` lease's state with every commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last finding id folded in.
    pub finding_after: i64,
    /// The id of the next incident.
    pub next_incident: i64,
    /// When measure and delivery rules were last evaluated.
    pub last_eval: Option<DateTime<Utc>>,
    /// When the active alerts were last pushed to Alertmanager receivers.
    pub last_push: Option<DateTime<Utc>>,
    pub push_seq: i64,
    /// Measure series whose condition holds but has not yet held long enough: fingerprint
    /// → (since, consecutive evaluations).
    #[serde(default)]
    pub pending: BTreeMap<String, (DateTime<Utc>, u32)>,
}

/// One notification group's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub route: String,
    pub receiver: String,
    pub labels: Labels,
    pub members: BTreeSet<String>,
    pub created_at: DateTime<Utc>,
    pub group_wait: i64,
    pub group_interval: i64,
    pub repeat_interval: i64,
    pub mute_during: Vec<String>,
    /// When the next flush is due (group wait, or the next group-interval tick).
    pub next_flush: Option<DateTime<Utc>>,
    pub last_flush: Option<DateTime<Utc>>,
    /// What the last notification said: fingerprint → firing/resolved.
    pub sent_firing: BTreeSet<String>,
    pub sent_resolved: BTreeSet<String>,
    pub seq: i64,
    pub incident: Option<i64>,
    /// A maintenance window of the route holds its notifications until then.
    #[serde(default)]
    pub muted_until: Option<DateTime<Utc>>,
}

/// A notification to send: one per notifier of the group's receiver (Alertmanager
/// notifiers are pushed separately).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Stable across a retried pass: `<group hash>-<seq>-<notifier>`.
    pub id: String,
    pub notification: Notification,
}

/// The alerting state between passes.
pub struct State {
    pub cfg: Arc<Alerting>,
    pub alerts: HashMap<String, AlertRecord>,
    pub groups: BTreeMap<String, Group>,
    pub cp: Checkpoint,
    /// Incidents this node opened or knows open, by id (status as last seen).
    pub incidents: HashMap<i64, IncidentRecord>,
    /// Firing alerts already placed in all their groups.
    routed: HashSet<String>,
    dirty_alerts: HashSet<String>,
    dirty_groups: HashSet<String>,
    deleted_groups: Vec<String>,
    open_incidents: Vec<IncidentRecord>,
    resolve_incidents: Vec<(i64, DateTime<Utc>)>,
    notified: Vec<(i64, DateTime<Utc>)>,
    entries: Vec<NewIncidentEntry>,
}

const LIST_FIELDS: [&str; 2] = ["instances", "events"];

impl State {
    pub fn new(cfg: Arc<Alerting>) -> State {
        State {
            cfg,
            alerts: HashMap::new(),
            groups: BTreeMap::new(),
            cp: Checkpoint {
                next_incident: 1,
                ..Default::default()
            },
            incidents: HashMap::new(),
            routed: HashSet::new(),
            dirty_alerts: HashSet::new(),
            dirty_groups: HashSet::new(),
            deleted_groups: Vec::new(),
            open_incidents: Vec::new(),
            resolve_incidents: Vec::new(),
            notified: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Restores a state from what the store holds.
    pub fn restore(
        cfg: Arc<Alerting>,
        cp: Option<Checkpoint>,
        alerts: Vec<AlertRecord>,
        groups: Vec<GroupRow>,
        incidents: Vec<IncidentRecord>,
    ) -> State {
        let mut s = State::new(cfg);
        if let Some(cp) = cp {
            s.cp = cp;
        }
        s.cp.next_incident = s.cp.next_incident.max(1);
        for a in alerts {
            s.alerts.insert(a.fingerprint.clone(), a);
        }
        for g in groups {
            if let Ok(g) = serde_json::from_value::<Group>(g.body) {
                s.routed.extend(g.members.iter().cloned());
                s.groups.insert(g.key.clone(), g);
            }
        }
        for i in incidents {
            s.incidents.insert(i.id, i);
        }
        s
    }

    fn entry(&mut self, incident: i64, at: DateTime<Utc>, kind: &str, text: String) {
        self.entries.push(NewIncidentEntry {
            incident_id: incident,
            at,
            kind: kind.into(),
            actor: None,
            text,
        });
    }

    /// Fires (or counts again) the alert of an observation.
    pub fn fire(&mut self, o: Observation, now: DateTime<Utc>) -> String {
        let labels = o.labels();
        let fp = fingerprint(&labels);
        let limit = self.cfg.settings.evidence_limit.max(1);
        let a = self
            .alerts
            .entry(fp.clone())
            .or_insert_with(|| AlertRecord {
                fingerprint: fp.clone(),
                rule: o.rule.clone(),
                labels: labels.clone(),
                state: AlertState::Firing,
                severity: o.severity,
                cause: o.cause,
                summary: String::new(),
                count: 0,
                evidence: json!({}),
                suppressed: None,
                starts_at: now,
                updated_at: now,
                ends_at: None,
                incident_id: None,
                acknowledged_at: None,
                acknowledged_by: None,
            });
        if a.state == AlertState::Resolved {
            // It fires again: a new episode of the same alert.
            a.state = AlertState::Firing;
            a.starts_at = now;
            a.ends_at = None;
            a.count = 0;
            a.evidence = json!({});
            a.incident_id = None;
            a.acknowledged_at = None;
            a.acknowledged_by = None;
        }
        a.count += o.count.max(1);
        a.summary = o.summary;
        a.updated_at = now;
        merge_evidence(&mut a.evidence, &o.evidence, limit);
        a.evidence["last_seen"] = json!(now);
        self.dirty_alerts.insert(fp.clone());
        fp
    }

    /// Sets a measure alert's current state (its value and summary) without counting it
    /// again unless it newly fires.
    pub fn hold(&mut self, o: Observation, now: DateTime<Utc>) -> String {
        let fp = fingerprint(&o.labels());
        match self.alerts.get_mut(&fp) {
            Some(a) if a.state == AlertState::Firing => {
                if a.summary != o.summary || a.evidence.get("value") != o.evidence.get("value") {
                    a.summary = o.summary;
                    merge_evidence(
                        &mut a.evidence,
                        &o.evidence,
                        self.cfg.settings.evidence_limit.max(1),
                    );
                    a.updated_at = now;
                    self.dirty_alerts.insert(fp.clone());
                }
                fp
            }
            _ => self.fire(o, now),
        }
    }

    /// Resolves an alert (its condition no longer holds).
    pub fn resolve(&mut self, fp: &str, now: DateTime<Utc>, why: &str) {
        if let Some(a) = self.alerts.get_mut(fp)
            && a.state == AlertState::Firing
        {
            a.state = AlertState::Resolved;
            self.routed.remove(fp);
            a.ends_at = Some(now);
            a.updated_at = now;
            a.evidence["cleared"] = json!(why);
            self.dirty_alerts.insert(fp.to_string());
        }
    }

    /// Removes ids from a firing alert's `open` list; resolves it when none are left.
    pub fn close_refs(&mut self, fp: &str, closed: &HashSet<i64>, now: DateTime<Utc>, why: &str) {
        let Some(a) = self.alerts.get_mut(fp) else {
            return;
        };
        let Some(open) = a.evidence.get_mut("open").and_then(Value::as_array_mut) else {
            return;
        };
        let before = open.len();
        open.retain(|v| v.as_i64().is_none_or(|id| !closed.contains(&id)));
        let empty = open.is_empty();
        if open.len() != before {
            self.dirty_alerts.insert(fp.to_string());
        }
        if empty {
            self.resolve(fp, now, why);
        }
    }

    /// Marks which alerts are silenced, in a maintenance window or inhibited.
    pub fn suppress(&mut self, silences: &[SilenceRecord], now: DateTime<Utc>) {
        let silences: Vec<(i64, Vec<switchyard_core::alerts::Matcher>)> = silences
            .iter()
            .filter(|s| s.starts_at <= now && now < s.ends_at && s.expired_at.is_none())
            .map(|s| {
                (
                    s.id,
                    s.matchers
                        .iter()
                        .filter_map(|m| switchyard_core::alerts::Matcher::parse(m).ok())
                        .collect(),
                )
            })
            .collect();
        let windows: Vec<&switchyard_core::alerts::MaintenanceWindow> = self
            .cfg
            .windows
            .iter()
            .filter(|w| w.active_at(now).is_some())
            .collect();
        // Inhibition sources: every firing alert (silenced ones too, as in Alertmanager).
        // Each rule's sources, found once (usually a handful), so a pass does not compare
        // every alert with every other.
        let cfg = self.cfg.clone();
        let sources: Vec<Vec<Labels>> = cfg
            .inhibit
            .iter()
            .map(|r| {
                self.alerts
                    .values()
                    .filter(|a| a.state == AlertState::Firing && all_match(&r.source, &a.labels))
                    .map(|a| a.labels.clone())
                    .collect()
            })
            .collect();
        for (fp, a) in self.alerts.iter_mut() {
            let why = if a.state != AlertState::Firing {
                None
            } else if let Some((id, _)) = silences.iter().find(|(_, m)| all_match(m, &a.labels)) {
                Some(format!("silenced:{id}"))
            } else if let Some(w) = windows
                .iter()
                .find(|w| !w.matchers.is_empty() && all_match(&w.matchers, &a.labels))
            {
                Some(format!("maintenance:{}", w.name))
            } else if cfg
                .inhibit
                .iter()
                .zip(&sources)
                .any(|(r, srcs)| srcs.iter().any(|src| r.inhibits(src, &a.labels)))
            {
                Some("inhibited".into())
            } else {
                None
            };
            if a.suppressed != why {
                a.suppressed = why;
                self.dirty_alerts.insert(fp.clone());
            }
        }
    }

    /// Puts every alert in its groups, opens incidents for groups with an active alert,
    /// and resolves the incidents of groups whose alerts all cleared.
    pub fn group(&mut self, now: DateTime<Utc>) {
        let cfg = self.cfg.clone();
        let Some(root) = cfg.route.as_ref() else {
            return;
        };
        // Only alerts not yet placed are routed: an alert's labels, and so its groups,
        // never change while it fires.
        let mut fps: Vec<&String> = self
            .alerts
            .iter()
            .filter(|(fp, a)| a.state == AlertState::Firing && !self.routed.contains(*fp))
            .map(|(fp, _)| fp)
            .collect();
        fps.sort();
        let mut joins: Vec<(String, String, switchyard_core::alerts::Route, Labels)> = Vec::new();
        let mut placed = Vec::with_capacity(fps.len());
        for fp in fps {
            let a = &self.alerts[fp];
            placed.push(fp.clone());
            for r in root.matches(&a.labels) {
                let (key, labels) = r.group_of(&a.labels);
                let known = self
                    .groups
                    .get(&key)
                    .is_some_and(|g| g.members.contains(fp));
                if !known {
                    joins.push((fp.clone(), key, r.clone(), labels));
                }
            }
        }
        self.routed.extend(placed);
        for (fp, key, r, labels) in joins {
            let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                key: key.clone(),
                route: r.id.clone(),
                receiver: r.receiver.clone(),
                labels,
                members: BTreeSet::new(),
                created_at: now,
                group_wait: r.group_wait as i64,
                group_interval: r.group_interval as i64,
                repeat_interval: r.repeat_interval as i64,
                mute_during: r.mute_during.clone(),
                next_flush: None,
                last_flush: None,
                sent_firing: BTreeSet::new(),
                sent_resolved: BTreeSet::new(),
                seq: 0,
                incident: None,
                muted_until: None,
            });
            g.members.insert(fp);
            self.dirty_groups.insert(key);
        }

        // Incidents and flush times.
        let keys: Vec<String> = self.groups.keys().cloned().collect();
        for key in keys {
            let (active, firing): (Vec<String>, Vec<String>) = {
                let g = &self.groups[&key];
                let firing: Vec<String> = g
                    .members
                    .iter()
                    .filter(|fp| {
                        self.alerts
                            .get(*fp)
                            .is_some_and(|a| a.state == AlertState::Firing)
                    })
                    .cloned()
                    .collect();
                let active = firing
                    .iter()
                    .filter(|fp| self.alerts[*fp].suppressed.is_none())
                    .cloned()
                    .collect();
                (active, firing)
            };
            let incident = self.groups[&key].incident;
            // A hand-resolved incident leaves the group: the next alert opens a new one.
            let incident = incident.filter(|id| {
                self.incidents.get(id).is_none_or(|i| {
                    i.status != IncidentStatus::Resolved
                        || i.resolved_by.as_deref() == Some("switchyard")
                })
            });
            match incident {
                None if !active.is_empty() => {
                    let id = self.cp.next_incident;
                    self.cp.next_incident += 1;
                    let rec = self.open_incident(id, &key, &active, now);
                    self.incidents.insert(id, rec.clone());
                    self.open_incidents.push(rec);
                    let g = self.groups.get_mut(&key).expect("group");
                    g.incident = Some(id);
                    self.dirty_groups.insert(key.clone());
                }
                Some(id) if firing.is_empty() => {
                    let open = self
                        .incidents
                        .get(&id)
                        .is_none_or(|i| i.status != IncidentStatus::Resolved);
                    if open {
                        self.resolve_incidents.push((id, now));
                        if let Some(i) = self.incidents.get_mut(&id) {
                            i.status = IncidentStatus::Resolved;
                            i.resolved_at = Some(now);
                            i.resolved_by = Some("switchyard".into());
                        }
                        self.entry(
                            id,
                            now,
                            "resolved",
                            "every alert of the group cleared".into(),
                        );
                    }
                }
                _ => {}
            }
            // Alerts that joined a group with an incident belong to it.
            if let Some(id) = self.groups[&key].incident {
                for fp in &active {
                    let a = self.alerts.get_mut(fp).expect("member");
                    if a.incident_id.is_none() {
                        a.incident_id = Some(id);
                        self.dirty_alerts.insert(fp.clone());
                        let text = a.summary.clone();
                        self.entry(id, now, "alert_fired", text);
                    }
                }
            }
            let alerts = &self.alerts;
            let g = self.groups.get_mut(&key).expect("group");
            let due = match g.last_flush {
                // The first notification waits for the group to fill (group wait).
                None => Some(g.created_at + Duration::seconds(g.group_wait)),
                Some(last) => {
                    // Changes go out at the next group-interval tick; an unchanged group
                    // repeats after the repeat interval; a group with nothing left to say
                    // is cleaned up at once.
                    let changed = active.iter().any(|fp| !g.sent_firing.contains(fp))
                        || g.sent_firing.iter().any(|fp| {
                            !active.contains(fp)
                                && !g.sent_resolved.contains(fp)
                                && alerts
                                    .get(fp)
                                    .is_none_or(|a| a.state == AlertState::Resolved)
                        });
                    if changed {
                        Some(last + Duration::seconds(g.group_interval))
                    } else if !active.is_empty() {
                        Some(last + Duration::seconds(g.repeat_interval))
                    } else if firing.iter().any(|fp| g.members.contains(fp)) {
                        // Only suppressed alerts: nothing to say until that changes.
                        None
                    } else {
                        Some(now)
                    }
                }
            };
            let due = match (due, g.muted_until) {
                (Some(d), Some(m)) if m > d => Some(m),
                (d, _) => d,
            };
            if due != g.next_flush {
                g.next_flush = due;
                self.dirty_groups.insert(key.clone());
            }
        }
    }

    fn open_incident(
        &mut self,
        id: i64,
        key: &str,
        active: &[String],
        now: DateTime<Utc>,
    ) -> IncidentRecord {
        let g = &self.groups[key];
        let alerts: Vec<&AlertRecord> = active.iter().map(|fp| &self.alerts[fp]).collect();
        let severity = alerts
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Warning);
        let cause = alerts
            .first()
            .map(|a| a.cause)
            .unwrap_or(Cause::BusinessProcess);
        let team = self
            .cfg
            .receiver(&g.receiver)
            .map(|r| r.team.clone())
            .unwrap_or_else(|| g.receiver.clone());
        let title = title(&g.labels, &alerts);
        let mut instances = Vec::new();
        let mut events = Vec::new();
        for a in &alerts {
            for (field, out) in [("instances", &mut instances), ("events", &mut events)] {
                if let Some(list) = a.evidence.get(field).and_then(Value::as_array) {
                    out.extend(list.iter().cloned());
                }
            }
        }
        let rec = IncidentRecord {
            id,
            group_key: key.to_string(),
            group_labels: g.labels.clone(),
            receiver: g.receiver.clone(),
            team,
            title: title.clone(),
            severity,
            cause,
            status: IncidentStatus::Open,
            opened_at: now,
            notified_at: None,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            links: json!({"instances": instances, "events": events}),
        };
        self.entry(id, now, "opened", title);
        rec
    }

    /// An incident changed by hand (seen in the store): acknowledgements reach its alerts;
    /// alerts that clear when acknowledged clear.
    pub fn incident_changed(
        &mut self,
        i: IncidentRecord,
        now: DateTime<Utc>,
        clears_on_ack: impl Fn(&AlertRecord) -> bool,
    ) {
        let acked = i.acknowledged_at.is_some();
        let id = i.id;
        let who = i.acknowledged_by.clone();
        let at = i.acknowledged_at;
        self.incidents.insert(id, i);
        if !acked {
            return;
        }
        let fps: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.incident_id == Some(id) && a.state == AlertState::Firing)
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in fps {
            let a = self.alerts.get_mut(&fp).expect("listed");
            if a.acknowledged_at.is_none() {
                a.acknowledged_at = at;
                a.acknowledged_by = who.clone();
                self.dirty_alerts.insert(fp.clone());
            }
            if clears_on_ack(a) {
                self.resolve(&fp, now, "acknowledged");
            }
        }
    }

    /// The next instant a group must flush (for the service's sleep).
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.groups.values().filter_map(|g| g.next_flush).min()
    }

    /// Flushes every group that is due: the notifications to send, in group order.
    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let keys: Vec<String> = self
            .groups
            .values()
            .filter(|g| g.next_flush.is_some_and(|t| t <= now))
            .map(|g| g.key.clone())
            .collect();
        for key in keys {
            let g = self.groups.get(&key).expect("group").clone();
            let muted_until = g
                .mute_during
                .iter()
                .filter_map(|w| {
                    let mw = self.cfg.windows.iter().find(|mw| &mw.name == w)?;
                    mw.active_at(now).map(|start| start + mw.duration)
                })
                .max();
            let muted = muted_until.is_some();
            let active: Vec<String> = g
                .members
                .iter()
                .filter(|fp| {
                    self.alerts
                        .get(*fp)
                        .is_some_and(|a| a.state == AlertState::Firing && a.suppressed.is_none())
                })
                .cloned()
                .collect();
            let resolved: Vec<String> = g
                .members
                .iter()
                .filter(|fp| {
                    self.alerts
                        .get(*fp)
                        .is_none_or(|a| a.state == AlertState::Resolved)
                        && g.sent_firing.contains(*fp)
                })
                .cloned()
                .collect();
            let firing_set: BTreeSet<String> = active.iter().cloned().collect();
            let resolved_set: BTreeSet<String> = resolved.iter().cloned().collect();
            let repeat_due = g
                .last_flush
                .is_some_and(|l| now >= l + Duration::seconds(g.repeat_interval));
            let needs = !firing_set.is_subset(&g.sent_firing)
                || !resolved_set.is_subset(&g.sent_resolved)
                || (repeat_due && !firing_set.is_empty());
            let gm = self.groups.get_mut(&key).expect("group");
            gm.next_flush = None;
            gm.muted_until = muted_until;
            self.dirty_groups.insert(key.clone());
            if needs && !muted && (!firing_set.is_empty() || !resolved_set.is_empty()) {
                gm.seq += 1;
                gm.last_flush = Some(now);
                gm.sent_firing = firing_set.clone();
                gm.sent_resolved = resolved_set.clone();
                let seq = gm.seq;
                let incident = gm.incident;
                if let Some(id) = incident
                    && self
                        .incidents
                        .get(&id)
                        .is_some_and(|i| i.notified_at.is_none())
                {
                    self.notified.push((id, now));
                    if let Some(i) = self.incidents.get_mut(&id) {
                        i.notified_at = Some(now);
                    }
                    self.entry(id, now, "notified", format!("sent to {}", g.receiver));
                }
                out.extend(self.notifications(&g, seq, incident, &active, &resolved, now));
            } else if muted || !needs {
                // Nothing new to say (or muted): keep the group's clock.
                if gm.last_flush.is_none() && !muted {
                    gm.last_flush = Some(now);
                }
            }
            // Resolved alerts that were told (or never told) leave the group; a group left
            // with nothing is forgotten.
            let gm = self.groups.get_mut(&key).expect("group");
            let alerts = &self.alerts;
            gm.members.retain(|fp| {
                alerts
                    .get(fp)
                    .is_some_and(|a| a.state == AlertState::Firing)
            });
            if gm.members.is_empty() {
                self.groups.remove(&key);
                self.dirty_groups.remove(&key);
                self.deleted_groups.push(key.clone());
            }
        }
        out
    }

    fn notifications(
        &self,
        g: &Group,
        seq: i64,
        incident: Option<i64>,
        active: &[String],
        resolved: &[String],
        now: DateTime<Utc>,
    ) -> Vec<Outgoing> {
        let Some(receiver) = self.cfg.receiver(&g.receiver) else {
            return Vec::new();
        };
        let base = self
            .cfg
            .settings
            .external_url
            .trim_end_matches('/')
            .to_string();
        let alerts: Vec<NotifiedAlert> = active
            .iter()
            .chain(resolved)
            .filter_map(|fp| self.alerts.get(fp))
            .map(|a| notified(a, &base))
            .collect();
        let firing: Vec<&AlertRecord> =
            active.iter().filter_map(|fp| self.alerts.get(fp)).collect();
        let title = if firing.is_empty() {
            format!(
                "resolved: {}",
                title(
                    &g.labels,
                    &resolved
                        .iter()
                        .filter_map(|fp| self.alerts.get(fp))
                        .collect::<Vec<_>>()
                )
            )
        } else {
            title(&g.labels, &firing)
        };
        let hash = &fingerprint(&[("group".to_string(), g.key.clone())].into_iter().collect());
        receiver
            .notify
            .iter()
            .enumerate()
            .filter(|(_, n)| n.kind != switchyard_core::alerts::NotifierKind::Alertmanager)
            .map(|(i, _)| Outgoing {
                id: format!("{hash}-{seq}-{i}"),
                notification: Notification {
                    receiver: receiver.name.clone(),
                    team: receiver.team.clone(),
                    notifier: i,
                    status: if active.is_empty() {
                        "resolved"
                    } else {
                        "firing"
                    }
                    .into(),
                    group_key: g.key.clone(),
                    group_labels: g.labels.clone(),
                    sequence: seq,
                    incident,
                    incident_url: incident.map(|id| format!("{base}/#/incidents/{id}")),
                    title: title.clone(),
                    alerts: alerts.clone(),
                    sent_at: now,
                },
            })
            .collect()
    }

    /// Forgets resolved alerts that no group holds any more, `keep` after they ended.
    pub fn prune(&mut self, now: DateTime<Utc>, keep: Duration) {
        let held: HashSet<&String> = self
            .groups
            .values()
            .flat_map(|g| g.members.iter())
            .collect();
        let old: Vec<String> = self
            .alerts
            .values()
            .filter(|a| {
                a.state == AlertState::Resolved
                    && a.ends_at.is_some_and(|e| e + keep < now)
                    && !held.contains(&a.fingerprint)
            })
            .map(|a| a.fingerprint.clone())
            .collect();
        for fp in old {
            // The row stays in the store as history; only memory forgets it.
            self.alerts.remove(&fp);
            self.dirty_alerts.remove(&fp);
        }
    }

    /// Everything changed since the last commit, as one commit (and clears the journal).
    pub fn take_commit(&mut self, lease: Lease) -> AlertsCommit {
        let mut c = AlertsCommit::new(lease);
        let mut fps: Vec<String> = self.dirty_alerts.drain().collect();
        fps.sort();
        c.alerts = fps
            .iter()
            .filter_map(|fp| self.alerts.get(fp).cloned())
            .collect();
        let mut keys: Vec<String> = self.dirty_groups.drain().collect();
        keys.sort();
        c.groups = keys
            .iter()
            .filter_map(|k| self.groups.get(k))
            .map(|g| GroupRow {
                key: g.key.clone(),
                body: serde_json::to_value(g).expect("serialisable"),
            })
            .collect();
        c.delete_groups = std::mem::take(&mut self.deleted_groups);
        c.open_incidents = std::mem::take(&mut self.open_incidents);
        c.resolve_incidents = std::mem::take(&mut self.resolve_incidents);
        c.notified_incidents = std::mem::take(&mut self.notified);
        c.entries = std::mem::take(&mut self.entries);
        c.checkpoint = Some(serde_json::to_value(&self.cp).expect("serialisable"));
        c
    }
}

/// One alert as a notification shows it.
pub fn notified(a: &AlertRecord, base: &str) -> NotifiedAlert {
    NotifiedAlert {
        fingerprint: a.fingerprint.clone(),
        status: a.state.as_str().into(),
        labels: a.labels.clone(),
        summary: a.summary.clone(),
        severity: a.severity,
        cause: a.cause,
        count: a.count,
        starts_at: a.starts_at,
        ends_at: a.ends_at,
        evidence: public_evidence(&a.evidence),
        url: format!("{base}/#/alerts/{}", a.fingerprint),
    }
}

/// The evidence people see (without the service's bookkeeping).
pub fn public_evidence(e: &Value) -> Value {
    let mut e = e.clone();
    if let Some(o) = e.as_object_mut() {
        o.remove("open");
        o.remove("last_seen");
    }
    e
}

/// A group's one-line title: the cause and what it is about, in business terms.
fn title(labels: &Labels, alerts: &[&AlertRecord]) -> String {
    let n = alerts.len();
    let first = alerts.first();
    let cause = first.map(|a| a.cause.describe()).unwrap_or("alerts");
    let about: Vec<String> = [
        "workflow",
        "step",
        "flow",
        "destination",
        "source",
        "monitor",
        "reconciliation",
    ]
    .iter()
    .filter_map(|k| {
        labels
            .get(*k)
            .or_else(|| first.and_then(|a| a.labels.get(*k)))
            .map(|v| format!("{k} {v}"))
    })
    .collect();
    let head = first.map(|a| a.summary.clone()).unwrap_or_default();
    let mut t = format!(
        "{}{}",
        capitalise(cause),
        if about.is_empty() {
            String::new()
        } else {
            format!(" — {}", about.join(", "))
        }
    );
    if n == 1 {
        t.push_str(&format!(": {head}"));
    } else if n > 1 {
        t.push_str(&format!(": {n} alerts, e.g. {head}"));
    }
    t
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Merges new evidence into an alert's: lists are appended without repeats (capped at
/// `limit`, except `open`), other fields replaced.
pub fn merge_evidence(into: &mut Value, add: &Value, limit: usize) {
    if !into.is_object() {
        *into = json!({});
    }
    let Some(add) = add.as_object() else {
        return;
    };
    for (k, v) in add {
        match (k.as_str(), v) {
            ("open" | "kinds", Value::Array(items)) => {
                let list = into[k.as_str()].as_array().cloned().unwrap_or_default();
                let mut list = list;
                for i in items {
                    if !list.contains(i) {
                        list.push(i.clone());
                    }
                }
                into[k.as_str()] = Value::Array(list);
            }
            (f, Value::Array(items)) if LIST_FIELDS.contains(&f) => {
                let mut list = into[f].as_array().cloned().unwrap_or_default();
                for i in items {
                    if list.len() >= limit {
                        into["truncated"] = json!(true);
                        break;
                    }
                    if !list.contains(i) {
                        list.push(i.clone());
                    }
                }
                into[f] = Value::Array(list);
            }
            _ => into[k.as_str()] = v.clone(),
        }
    }
}
