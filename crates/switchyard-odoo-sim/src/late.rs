//! The "late commit" fault (transcripts 04_09-04_12): a transaction writes at time T and
//! commits seconds later, so its rows carry `write_date = T` but become visible only after
//! rows written later. A poller that only looks forward from its cursor misses them.

use crate::exc::OResult;
use crate::orm::Id;
use crate::registry::Env;
use crate::{RowChange, Simulator, diff, timestamp};
use serde_json::{Map, Value};

/// Changes computed now, applied by [`PendingCommit::commit`].
#[must_use = "a pending transaction changes nothing until it commits"]
pub struct PendingCommit {
    sim: Simulator,
    changes: Vec<RowChange>,
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
        let changes = diff(&st.tables, &copy);
        Ok(PendingCommit {
            sim: self.clone(),
            changes,
        })
    }
}

impl PendingCommit {
    /// Make the held changes visible, keeping their original `write_date` (as any commit,
    /// it bumps the rows' versions, so a transaction that read them before conflicts).
    pub fn commit(self) {
        let mut state = self.sim.inner.state.lock().expect("state");
        state.apply(self.changes);
    }
}
