//! Crash test: the real binary under concurrent load is killed with SIGKILL and restarted,
//! on both backends. Every acknowledged event must be stored, everything stored must have
//! been sent, nothing is stored twice, and senders' retries after the restart are absorbed
//! by deduplication.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Instance;

#[derive(Default)]
struct Ledger {
    sent: HashSet<String>,
    acked: HashSet<String>,
}

fn event(id: &str) -> String {
    json!({
        "specversion": "1.0", "id": id, "source": "/crash-test", "type": "load.event",
        "data": {"payload": "z".repeat(512)}
    })
    .to_string()
}

async fn load(base: String, token: String, worker: usize, ledger: Arc<Mutex<Ledger>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for n in 0.. {
        let id = format!("w{worker}-{n}");
        ledger.lock().unwrap().sent.insert(id.clone());
        let r = http
            .post(format!("{base}/v1/events"))
            .bearer_auth(&token)
            .header("content-type", "application/cloudevents+json")
            .body(event(&id))
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 202 || r.status().as_u16() == 200 => {
                ledger.lock().unwrap().acked.insert(id);
            }
            Ok(r) => panic!("unexpected status {} for {id}", r.status()),
            Err(_) => return, // the server died under us
        }
    }
}

async fn all_stored(base: &str, token: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut after = "0.0".to_string();
    loop {
        let page: Value = http
            .get(format!("{base}/v1/events?after={after}&limit=1000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            return ids;
        }
        for e in events {
            ids.push(e["event"]["id"].as_str().unwrap().to_string());
        }
        after = page["next"].as_str().unwrap().to_string();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, url) in support::store_urls(dir.path()) {
        let mut inst = Instance::new(dir.path(), backend, &url, "");
        let ingest = inst.create_token("ingest", "load");
        let viewer = inst.create_token("viewer", "checker");
        inst.start();

        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let workers: Vec<_> = (0..16)
            .map(|w| tokio::spawn(load(inst.base(), ingest.clone(), w, ledger.clone())))
            .collect();
        // Let load build up, then pull the plug mid-stream.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if ledger.lock().unwrap().acked.len() >= 1500 {
                break;
            }
        }
        let pid = inst.pid();
        inst.kill9();
        for w in workers {
            w.await.unwrap();
        }
        eprintln!("[{backend}] killed pid {pid} with SIGKILL");

        inst.start();
        let (sent, acked) = {
            let l = ledger.lock().unwrap();
            (l.sent.clone(), l.acked.clone())
        };
        let stored = all_stored(&inst.base(), &viewer).await;
        let stored_set: HashSet<String> = stored.iter().cloned().collect();
        assert_eq!(
            stored.len(),
            stored_set.len(),
            "[{backend}] an event is stored twice"
        );
        let lost: Vec<_> = acked.difference(&stored_set).collect();
        assert!(
            lost.is_empty(),
            "[{backend}] acknowledged but lost: {lost:?}"
        );
        assert!(
            stored_set.is_subset(&sent),
            "[{backend}] stored something never sent"
        );
        eprintln!(
            "[{backend}] sent {}, acknowledged {}, stored {} after restart",
            sent.len(),
            acked.len(),
            stored.len()
        );

        // Senders retry what they never saw acknowledged: each is stored exactly once.
        let http = reqwest::Client::new();
        for id in sent.difference(&acked) {
            let r = http
                .post(format!("{}/v1/events", inst.base()))
                .bearer_auth(&ingest)
                .header("content-type", "application/cloudevents+json")
                .body(event(id))
                .send()
                .await
                .unwrap();
            let expected = if stored_set.contains(id) { 200 } else { 202 };
            assert_eq!(r.status().as_u16(), expected, "[{backend}] retry of {id}");
        }
        let after_retry = all_stored(&inst.base(), &viewer).await;
        assert_eq!(
            after_retry.len(),
            sent.len(),
            "[{backend}] every sent event stored once"
        );
        assert_eq!(after_retry.iter().collect::<HashSet<_>>().len(), sent.len());

        // A graceful stop exits 0.
        let status = inst.sigterm();
        assert!(
            status.success(),
            "[{backend}] SIGTERM exit status {status:?}"
        );
    }
}
