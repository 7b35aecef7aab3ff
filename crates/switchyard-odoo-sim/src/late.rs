//! The "late commit" fault (transcripts 04_09-04_12): a transaction writes at time T and
//! commits seconds later, so its rows carry `write_date = T` but become visible only after
//! rows written later. A poller that only looks forward from its cursor misses them.

use crate::exc::OResult;
use crate::orm::{Id, Record};
use crate::registry::Env;
use crate::{Simulator, timestamp};
use serde_json::{Map, Value};

/// Changes computed now, applied by [`PendingCommit::commit`].
#[must_use = "a pending transaction changes nothing until it commits"]
pub struct PendingCommit {
    sim: Simulator,
    changes: Vec<(String, Id, Record)>,
}

impl Simulator {
    /// Write `vals` to `model` `ids` in a transaction that starts now and commits only
    /// when the returned handle's `commit` is called.
    pub fn write_uncommitted(
        &self,
        uid: Id,
        model: &str,
        ids: &[Id],
        vals: Map<String, Value>,
    ) -> OResult<PendingCommit> {
        let now = timestamp(&self.inner.clock);
        let mut state = self.inner.state.lock().expect("state");
        let st = &mut *state;
        let mut copy = st.tables.clone();
        let mut env = Env {
            reg: &self.inner.reg,
            db: &mut copy,
            seq: &mut st.seq,
            uid,
            ctx: Map::new(),
            now,
            effects: vec![],
        };
        env.write(model, ids, vals)?;
        let changes = ids
            .iter()
            .filter_map(|id| {
                copy.get(model, *id)
                    .map(|r| (model.to_string(), *id, r.clone()))
            })
            .collect();
        Ok(PendingCommit {
            sim: self.clone(),
            changes,
        })
    }
}

impl PendingCommit {
    /// Make the held changes visible, keeping their original `write_date`.
    pub fn commit(self) {
        let mut state = self.sim.inner.state.lock().expect("state");
        for (model, id, rec) in self.changes {
            state.tables.table_mut(&model).rows.insert(id, rec);
        }
        state.version += 1;
    }
}
