//! Automatic batching of upsert, create and write. Odoo is the bottleneck: one record per
//! call costs about 30 ms of server time, a hundred per call barely more per record. So
//! the deliveries of one flow that are ready while a call of that flow is in flight wait
//! for the next call and go together, up to the flow's `batch_size`; nothing waits for a
//! batch to fill (an idle destination sends a lone delivery at once).
//!
//! Each flow has a queue and up to `concurrency` runners; every runner takes a call slot of
//! the destination (shared by its flows), then everything waiting (up to `batch_size`),
//! sends it through [`Inner::records`], and hands every delivery its own answer. Two
//! deliveries for the same record (same external id or key) never share a call: the later
//! one waits for the next, so the order of their effects is the order they arrived in.

use super::records::{Answer, Job};
use super::{Inner, Stop};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use switchyard_core::odoo_ops::OdooOperation;
use tokio::sync::{Semaphore, oneshot};

pub(super) struct Batches {
    /// Calls in flight at this destination (its `concurrency`).
    calls: Arc<Semaphore>,
    concurrency: usize,
    queues: std::sync::Mutex<HashMap<String, Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    runners: usize,
}

struct Waiting {
    job: Job,
    reply: oneshot::Sender<Answer>,
}

impl Batches {
    pub(super) fn new(concurrency: usize) -> Batches {
        let concurrency = concurrency.max(1);
        Batches {
            calls: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            queues: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

/// Queues `job` for `flow`'s next call and waits for its answer.
pub(super) async fn submit(
    inner: &Arc<Inner>,
    flow: &str,
    op: Arc<OdooOperation>,
    job: Job,
) -> Answer {
    let (reply, answer) = oneshot::channel();
    let start_runner = {
        let mut queues = inner.batches.queues.lock().expect("batch queues");
        let queue = queues.entry(flow.to_owned()).or_default();
        queue.waiting.push_back(Waiting { job, reply });
        let start = queue.runners < inner.batches.concurrency;
        if start {
            queue.runners += 1;
        }
        start
    };
    if start_runner {
        let runner = Runner {
            inner: inner.clone(),
            flow: flow.to_owned(),
            finished: false,
        };
        tokio::spawn(runner.run(op));
    }
    answer.await.unwrap_or_else(|_| {
        Err(Stop::Retry(
            "the call carrying this delivery was interrupted; it is sent again".into(),
        ))
    })
}

struct Runner {
    inner: Arc<Inner>,
    flow: String,
    /// Left its queue in order (else, on a panic, `Drop` gives the runner back).
    finished: bool,
}

impl Runner {
    async fn run(mut self, op: Arc<OdooOperation>) {
        loop {
            let Ok(_call) = self.inner.batches.calls.clone().acquire_owned().await else {
                return;
            };
            let batch = {
                let mut queues = self.inner.batches.queues.lock().expect("batch queues");
                let queue = queues.get_mut(&self.flow).expect("a runner's queue");
                if queue.waiting.is_empty() {
                    queue.runners -= 1;
                    self.finished = true;
                    return;
                }
                take(&mut queue.waiting, op.batch_size)
            };
            let (jobs, replies): (Vec<Job>, Vec<_>) =
                batch.into_iter().map(|w| (w.job, w.reply)).unzip();
            metrics::histogram!("switchyard_odoo_batch_records", "destination" => self.inner.name.clone(), "flow" => self.flow.clone())
                .record(jobs.len() as f64);
            let answers = self.inner.records(&op, &jobs).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                // the delivery's attempt may have been abandoned (shutdown): nobody to tell
                let _ = reply.send(answer);
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if !self.finished
            && let Ok(mut queues) = self.inner.batches.queues.lock()
            && let Some(queue) = queues.get_mut(&self.flow)
        {
            queue.runners = queue.runners.saturating_sub(1);
        }
    }
}

/// The next call's deliveries: the oldest waiting, at most `max`, one per record; the rest
/// keep their places.
fn take(waiting: &mut VecDeque<Waiting>, max: usize) -> Vec<Waiting> {
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    let mut records = HashSet::new();
    while batch.len() < max {
        let Some(w) = waiting.pop_front() else { break };
        match &w.job.identity {
            Some(id) if !records.insert(id.clone()) => later.push_back(w),
            _ => batch.push(w),
        }
    }
    later.append(waiting);
    *waiting = later;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn waiting(identity: Option<&str>, n: u64) -> Waiting {
        Waiting {
            job: Job {
                payload: json!(n),
                traceparent: String::new(),
                identity: identity.map(str::to_owned),
            },
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_holds_one_delivery_per_record_and_keeps_the_order() {
        let mut q: VecDeque<Waiting> = [
            waiting(Some("a"), 1),
            waiting(Some("b"), 2),
            waiting(Some("a"), 3),
            waiting(None, 4),
            waiting(Some("c"), 5),
            waiting(Some("a"), 6),
        ]
        .into();
        let first: Vec<u64> = take(&mut q, 3)
            .iter()
            .map(|w| w.job.payload.as_u64().unwrap())
            .collect();
        assert_eq!(first, vec![1, 2, 4]);
        let left: Vec<u64> = q.iter().map(|w| w.job.payload.as_u64().unwrap()).collect();
        assert_eq!(left, vec![3, 5, 6]);
        let second: Vec<u64> = take(&mut q, 100)
            .iter()
            .map(|w| w.job.payload.as_u64().unwrap())
            .collect();
        assert_eq!(second, vec![3, 5]);
        assert_eq!(q.len(), 1, "the second update of a waits for a third call");
    }
}
