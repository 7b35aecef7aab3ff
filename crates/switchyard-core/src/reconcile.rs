//! Reconciliations: on a schedule, compare Odoo's view of some data with another system's
//! (stock per product in Odoo and in the WMS, MES consumption and Odoo's stock moves),
//! matched on a key, within a tolerance. Each difference is a finding with both values.
//!
//! `[[reconciliations]]` is compiled here (the schedule, the jq programs that turn each
//! side's records into key → value) and the comparison is a pure function; reading both
//! systems is `switchyard-server`'s (`reconcile.rs`).

use crate::batch::parse_schedule;
use crate::jq::{Jq, as_text};
use crate::workflows::Criticality;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// Unique among reconciliations and batch monitors.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub criticality: Criticality,
    /// When it runs: a crontab expression in `timezone`.
    pub schedule: String,
    #[serde(default = "default_tz")]
    pub timezone: String,
    /// What the other system is called in messages ("WMS").
    #[serde(default = "default_other")]
    pub other_name: String,
    /// Values may differ by this much (absolute) and still match.
    #[serde(default)]
    pub tolerance: f64,
    pub odoo: OdooSide,
    pub other: HttpSide,
}

fn default_tz() -> String {
    "UTC".into()
}
fn default_other() -> String {
    "the other system".into()
}

/// Odoo's side: a `search_read`, then jq over each record.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OdooSide {
    /// The `[[odoo]]` connection.
    pub connection: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Value>,
    pub fields: Vec<String>,
    /// jq over one record → the key (`.default_code`, `.product_id[1]`).
    pub key: String,
    /// jq over one record → the number compared (`.quantity`). Records with the same key
    /// are summed (quants of one product in several locations).
    pub value: String,
}

/// The other system's side: a GET of a JSON document, jq to its records, then jq over each.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSide {
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// jq over the document → each record (default `.[]`).
    #[serde(default = "default_items")]
    pub items: String,
    pub key: String,
    pub value: String,
}

fn default_items() -> String {
    ".[]".into()
}

/// A compiled reconciliation.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    pub name: String,
    pub title: String,
    pub criticality: Criticality,
    pub expression: String,
    pub schedule: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub other_name: String,
    pub tolerance: f64,
    pub odoo: OdooSide,
    pub odoo_key: Jq,
    pub odoo_value: Jq,
    pub other: HttpSide,
    pub other_items: Jq,
    pub other_key: Jq,
    pub other_value: Jq,
}

/// What differs for one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    Mismatch { key: String, odoo: f64, other: f64 },
    MissingInOdoo { key: String, other: f64 },
    MissingInOther { key: String, odoo: f64 },
}

/// A run's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub compared: usize,
    pub matched: usize,
    pub mismatched: usize,
    pub missing_in_odoo: usize,
    pub missing_in_other: usize,
    /// Records whose key or value could not be read (left out of the comparison).
    pub unreadable: usize,
}

impl Reconciliation {
    /// key → summed value of one side's records; also how many were unreadable.
    pub fn side(&self, records: &[Value], key: &Jq, value: &Jq) -> (BTreeMap<String, f64>, usize) {
        let mut out = BTreeMap::new();
        let mut unreadable = 0;
        for r in records {
            let k = key.first(r, &[]).ok().flatten().and_then(|v| as_text(&v));
            let v = value.first(r, &[]).ok().flatten().and_then(|v| v.as_f64());
            match (k, v) {
                (Some(k), Some(v)) => *out.entry(k).or_insert(0.0) += v,
                _ => unreadable += 1,
            }
        }
        (out, unreadable)
    }

    /// The records of the other system's document.
    pub fn other_records(&self, document: &Value) -> Result<Vec<Value>, String> {
        self.other_items.run(document, &[])
    }

    /// Compares both sides: every key on either side, in key order.
    pub fn compare(
        &self,
        odoo: &BTreeMap<String, f64>,
        other: &BTreeMap<String, f64>,
    ) -> (Summary, Vec<Difference>) {
        let keys: BTreeSet<&String> = odoo.keys().chain(other.keys()).collect();
        let mut s = Summary {
            compared: keys.len(),
            ..Default::default()
        };
        let mut diffs = Vec::new();
        for k in keys {
            match (odoo.get(k), other.get(k)) {
                (Some(&a), Some(&b)) if (a - b).abs() <= self.tolerance + 1e-9 => s.matched += 1,
                (Some(&a), Some(&b)) => {
                    s.mismatched += 1;
                    diffs.push(Difference::Mismatch {
                        key: k.clone(),
                        odoo: a,
                        other: b,
                    });
                }
                (None, Some(&b)) => {
                    s.missing_in_odoo += 1;
                    diffs.push(Difference::MissingInOdoo {
                        key: k.clone(),
                        other: b,
                    });
                }
                (Some(&a), None) => {
                    s.missing_in_other += 1;
                    diffs.push(Difference::MissingInOther {
                        key: k.clone(),
                        odoo: a,
                    });
                }
                (None, None) => {}
            }
        }
        (s, diffs)
    }

    /// The scheduled instants after `after`, up to `until`.
    pub fn slots(
        &self,
        after: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Vec<chrono::DateTime<chrono::Utc>> {
        crate::batch::slots(&self.schedule, self.timezone, after, until)
    }

    /// The first scheduled instant after `t`.
    pub fn next_slot(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        crate::batch::next_slot(&self.schedule, self.timezone, t)
    }
}

/// Every `[[reconciliations]]`, compiled.
#[derive(Debug, Clone, Default)]
pub struct Reconciliations {
    pub list: Vec<Reconciliation>,
}

impl Reconciliations {
    /// `odoo_connections`: the names of the `[[odoo]]` connections; `taken`: names batch
    /// monitors use (runs of both share a table).
    pub fn compile(
        configs: &[ReconciliationConfig],
        odoo_connections: &[String],
        taken: &[String],
    ) -> Result<Reconciliations, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut names: HashSet<String> = taken.iter().cloned().collect();
        let mut list = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let at = |k: &str| format!("reconciliations[{i}].{k}");
            let before = problems.len();
            if !crate::workflows::is_name(&c.name) {
                problems.push((
                    at("name"),
                    "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
                ));
            } else if !names.insert(c.name.clone()) {
                problems.push((
                    at("name"),
                    format!(
                        "\"{}\" is already a batch monitor or reconciliation",
                        c.name
                    ),
                ));
            }
            let schedule =
                parse_schedule(&c.schedule).map_err(|e| problems.push((at("schedule"), e)));
            let timezone = crate::batch::parse_timezone(&c.timezone)
                .map_err(|e| problems.push((at("timezone"), e)));
            if !odoo_connections.contains(&c.odoo.connection) {
                problems.push((
                    at("odoo.connection"),
                    format!("no [[odoo]] connection is named \"{}\"", c.odoo.connection),
                ));
            }
            if !(c.other.url.starts_with("http://") || c.other.url.starts_with("https://")) {
                problems.push((at("other.url"), "must be an http:// or https:// URL".into()));
            }
            if !(c.tolerance >= 0.0 && c.tolerance.is_finite()) {
                problems.push((at("tolerance"), "must be 0 or more".into()));
            }
            let mut jq = |k: &str, code: &str| {
                Jq::compile(code, &[])
                    .map_err(|e| problems.push((at(k), e)))
                    .ok()
            };
            let compiled = (
                jq("odoo.key", &c.odoo.key),
                jq("odoo.value", &c.odoo.value),
                jq("other.items", &c.other.items),
                jq("other.key", &c.other.key),
                jq("other.value", &c.other.value),
            );
            if problems.len() > before {
                continue;
            }
            let (Some(ok), Some(ov), Some(ti), Some(tk), Some(tv)) = compiled else {
                continue;
            };
            let (Ok(schedule), Ok(timezone)) = (schedule, timezone) else {
                continue;
            };
            list.push(Reconciliation {
                name: c.name.clone(),
                title: c.title.clone().unwrap_or_else(|| c.name.clone()),
                criticality: c.criticality,
                expression: c.schedule.clone(),
                schedule,
                timezone,
                other_name: c.other_name.clone(),
                tolerance: c.tolerance,
                odoo: c.odoo.clone(),
                odoo_key: ok,
                odoo_value: ov,
                other: c.other.clone(),
                other_items: ti,
                other_key: tk,
                other_value: tv,
            });
        }
        if problems.is_empty() {
            Ok(Reconciliations { list })
        } else {
            Err(problems)
        }
    }

    pub fn get(&self, name: &str) -> Option<&Reconciliation> {
        self.list.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec() -> Reconciliation {
        Reconciliations::compile(
            &[ReconciliationConfig {
                name: "stock".into(),
                title: None,
                criticality: Criticality::P2,
                schedule: "*/30 * * * *".into(),
                timezone: "UTC".into(),
                other_name: "WMS".into(),
                tolerance: 0.5,
                odoo: OdooSide {
                    connection: "erp".into(),
                    model: "stock.quant".into(),
                    domain: None,
                    fields: vec!["product_id".into(), "quantity".into()],
                    key: ".product_id[1]".into(),
                    value: ".quantity".into(),
                },
                other: HttpSide {
                    url: "http://wms/stock".into(),
                    headers: BTreeMap::new(),
                    items: ".items[]".into(),
                    key: ".sku".into(),
                    value: ".qty".into(),
                },
            }],
            &["erp".into()],
            &[],
        )
        .unwrap()
        .list
        .remove(0)
    }

    #[test]
    fn both_sides_are_summed_by_key_and_compared_within_the_tolerance() {
        let r = rec();
        let (odoo, bad) = r.side(
            &[
                json!({"product_id": [1, "DESK"], "quantity": 3.0}),
                json!({"product_id": [1, "DESK"], "quantity": 2.0}),
                json!({"product_id": [2, "CHAIR"], "quantity": 10.0}),
                json!({"product_id": [3, "LAMP"], "quantity": 1.0}),
                json!({"product_id": false, "quantity": 1.0}),
            ],
            &r.odoo_key,
            &r.odoo_value,
        );
        assert_eq!(bad, 1);
        let doc = json!({"items": [
            {"sku": "DESK", "qty": 5.4}, {"sku": "CHAIR", "qty": 7}, {"sku": "SOFA", "qty": 2}
        ]});
        let (other, _) = r.side(
            &r.other_records(&doc).unwrap(),
            &r.other_key,
            &r.other_value,
        );
        let (s, d) = r.compare(&odoo, &other);
        assert_eq!(
            (
                s.compared,
                s.matched,
                s.mismatched,
                s.missing_in_odoo,
                s.missing_in_other
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(
            d,
            [
                Difference::Mismatch {
                    key: "CHAIR".into(),
                    odoo: 10.0,
                    other: 7.0
                },
                Difference::MissingInOther {
                    key: "LAMP".into(),
                    odoo: 1.0
                },
                Difference::MissingInOdoo {
                    key: "SOFA".into(),
                    other: 2.0
                },
            ]
        );
    }
}
