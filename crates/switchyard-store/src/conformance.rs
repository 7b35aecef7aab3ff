//! The one conformance suite every [`Store`] backend must pass. Each check is a plain async
//! function; [`store_conformance_suite!`](crate::store_conformance_suite) turns them into
//! `#[tokio::test]`s for a backend given a factory that opens a fresh, empty store.
//!
//! Every later change that adds a store operation adds its checks here, never to one backend.

use crate::*;
use chrono::{Duration, TimeZone};
use std::collections::HashSet;
use switchyard_core::cloudevent::{CloudEvent, Data, RawAttributes};
use switchyard_core::token::{Role, hash_token};
use tokio::sync::oneshot;

/// Instantiates the suite. `$factory` is an `async fn() -> Option<SharedStore>` returning a
/// fresh store, or `None` to skip (with a notice) when the backend is not available.
#[macro_export]
macro_rules! store_conformance_suite {
    ($factory:path) => {
        $crate::store_conformance_suite!(@tests $factory;
            append_stores_and_dedupes,
            concurrent_duplicates_are_stored_once,
            read_log_pages_in_order_with_filters,
            held_transaction_does_not_let_readers_skip,
            concurrent_writers_are_followed_without_gaps,
            tokens_are_created_found_and_revoked,
            audit_is_append_only_and_paged,
            meta_is_overwritten,
            nodes_heartbeat,
            lease_is_exclusive_and_taken_over_after_expiry,
            jobs_are_claimed_once,
            orphaned_jobs_are_requeued,
            events_are_purged_in_batches,
            business_keys_find_events_across_sources,
            retention_drops_payloads_but_still_recognises_duplicates,
            source_activity_reports_counts_and_lag,
            queue_routes_in_the_event_transaction,
            queue_claims_each_delivery_once,
            queue_retries_then_dead_letters_with_history,
            queue_expired_leases_are_claimed_again,
            queue_ordering_key_holds_only_its_own_key,
            queue_lanes_and_destination_filters,
            queue_replay_and_discard_are_audited,
            queue_credential_failure_pauses_the_destination,
            queue_stats_and_backfill,
            queue_cursor_is_saved_with_attempts,
            purging_events_takes_their_finished_deliveries,
            monitor_commit_writes_instances_aliases_and_findings_once,
            monitor_commit_is_fenced_by_the_lease_epoch,
            alerts_commit_upserts_and_is_fenced,
            incident_actions_ack_comment_resolve,
            silences_are_created_listed_and_expired,
            attempt_stats_per_destination,
            monitor_commit_writes_nothing_when_a_write_fails,
            monitor_merge_moves_findings_and_aliases,
            monitor_archive_removes_closed_instances_only,
            monitor_closed_counts_per_bucket_state_and_cycle_time,
            monitor_timer_commits_findings_first_and_keeps_aliases,
            monitor_runs_are_written_with_their_findings,
            closed_store_refuses_writes
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some(store) = $factory().await else { return };
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

/// Reads the log after `after` until at least `n` events are visible. On PostgreSQL a
/// committed event becomes visible to log readers only once every older writing
/// transaction on the server has ended, so other tests' open transactions may delay it.
pub async fn wait_visible(store: &SharedStore, after: LogPosition, n: usize) -> Vec<StoredEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = store
            .read_log(after, 10_000, &EventFilter::default())
            .await
            .unwrap();
        if page.events.len() >= n {
            return page.events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} committed events became visible",
            page.events.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A valid event with JSON data.
pub fn event(source: &str, id: &str, ty: &str) -> NewEvent {
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("specversion".into(), "1.0".into());
    attrs.insert("id".into(), id.into());
    attrs.insert("source".into(), source.into());
    attrs.insert("type".into(), ty.into());
    attrs.insert("subject".into(), format!("subj-{id}").into());
    attrs.insert("time".into(), "2026-11-23T08:00:00Z".into());
    attrs.insert(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    );
    let data = Data::Json(serde_json::json!({"order": id, "lines": [1, 2, 3]}));
    NewEvent {
        event: CloudEvent::from_parts(RawAttributes { attrs }, Some(data))
            .expect("valid test event")
            .event,
        received_at: t0(),
        keys: Vec::new(),
        deliveries: Vec::new(),
    }
}

pub async fn append_stores_and_dedupes(store: SharedStore) {
    let batch = vec![
        event("/shop", "1", "order.created"),
        event("/shop", "2", "order.created"),
        event("/wms", "1", "picking.done"), // same id, other source: a different event
        event("/shop", "1", "order.created"), // repeat inside the batch
    ];
    let out = store.append_events(batch.clone()).await.unwrap();
    assert_eq!(out.len(), 4);
    assert!(matches!(out[0], Appended::Stored { .. }));
    assert!(matches!(out[1], Appended::Stored { .. }));
    assert!(matches!(out[2], Appended::Stored { .. }));
    assert_eq!(out[3], Appended::Duplicate { seq: out[0].seq() });
    assert!(out[0].seq() < out[1].seq() && out[1].seq() < out[2].seq());

    let again = store.append_events(batch.clone()).await.unwrap();
    assert!(
        again
            .iter()
            .all(|a| matches!(a, Appended::Duplicate { .. }))
    );
    assert_eq!(
        again.iter().map(|a| a.seq()).collect::<Vec<_>>(),
        out.iter().map(|a| a.seq()).collect::<Vec<_>>()
    );
    assert_eq!(store.count_events().await.unwrap(), 3);

    let got = store.get_event(out[1].seq()).await.unwrap().unwrap();
    assert_eq!(got.event, batch[1].event, "event round-trips exactly");
    assert_eq!(got.received_at, t0());
    assert_eq!(got.seq, out[1].seq());
    let found = store.find_event("/wms", "1").await.unwrap().unwrap();
    assert_eq!(found.event.ty, "picking.done");
    assert!(store.find_event("/nope", "1").await.unwrap().is_none());
    assert!(store.get_event(999_999).await.unwrap().is_none());
    assert!(store.append_events(vec![]).await.unwrap().is_empty());
}

pub async fn concurrent_duplicates_are_stored_once(store: SharedStore) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.append_events(vec![event("/shop", "race", "order.created")])
                .await
        }));
    }
    let mut stored = 0;
    let mut seqs = HashSet::new();
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        if matches!(out[0], Appended::Stored { .. }) {
            stored += 1;
        }
        seqs.insert(out[0].seq());
    }
    assert_eq!(
        stored, 1,
        "exactly one of the racing appends stores the event"
    );
    assert_eq!(seqs.len(), 1, "every duplicate names the stored copy");
    assert_eq!(store.count_events().await.unwrap(), 1);
}

pub async fn read_log_pages_in_order_with_filters(store: SharedStore) {
    for i in 0..25 {
        let ty = if i % 5 == 0 {
            "picking.done"
        } else {
            "order.created"
        };
        store
            .append_events(vec![event("/shop", &format!("e{i}"), ty)])
            .await
            .unwrap();
    }
    wait_visible(&store, LogPosition::START, 25).await;
    let mut after = LogPosition::START;
    let mut ids = Vec::new();
    loop {
        let page = store
            .read_log(after, 7, &EventFilter::default())
            .await
            .unwrap();
        if page.events.is_empty() {
            assert_eq!(page.next, after);
            break;
        }
        assert!(page.events.len() <= 7);
        for e in &page.events {
            assert!(e.position > after, "positions strictly increase");
            after = e.position;
            ids.push(e.event.id.clone());
        }
        assert_eq!(page.next, after);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("e{i}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        store.log_head().await.unwrap(),
        after,
        "the head is the last event"
    );
    store
        .append_events(vec![event("/shop", "late", "order.created")])
        .await
        .unwrap();
    let tail = wait_visible(&store, after, 1).await;
    assert_eq!(
        tail.len(),
        1,
        "a tail from the head sees only what came later"
    );
    assert_eq!(tail[0].event.id, "late");

    let f = EventFilter {
        ty: Some("picking.done".into()),
        ..Default::default()
    };
    let page = store.read_log(LogPosition::START, 100, &f).await.unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        vec!["e0", "e5", "e10", "e15", "e20"]
    );
    let f = EventFilter {
        subject: Some("subj-e7".into()),
        source: Some("/shop".into()),
        ..Default::default()
    };
    let page = store.read_log(LogPosition::START, 100, &f).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].event.id, "e7");
    let f = EventFilter {
        source: Some("/other".into()),
        ..Default::default()
    };
    assert!(
        store
            .read_log(LogPosition::START, 100, &f)
            .await
            .unwrap()
            .events
            .is_empty()
    );
    // cursors survive a round trip through text
    let p: LogPosition = after.to_string().parse().unwrap();
    assert_eq!(p, after);
}

/// Writer A inserts first but commits last; writer B commits in between. A reader must
/// not return B and then later find A behind its cursor.
pub async fn held_transaction_does_not_let_readers_skip(store: SharedStore) {
    let (inserted_tx, inserted_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let s = store.clone();
    let a = tokio::spawn(async move {
        s.append_events_held(vec![event("/a", "A", "t")], inserted_tx, release_rx)
            .await
    });
    inserted_rx.await.expect("A inserted");
    let s = store.clone();
    let b = tokio::spawn(async move { s.append_events(vec![event("/b", "B", "t")]).await });
    // Give B every chance to commit (it may, on a multi-writer backend).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let page = store
        .read_log(LogPosition::START, 100, &EventFilter::default())
        .await
        .unwrap();
    assert!(
        page.events.is_empty(),
        "nothing may be readable while an earlier writer is still open, got {:?}",
        page.events.iter().map(|e| &e.event.id).collect::<Vec<_>>()
    );
    let cursor = page.next;

    release_tx.send(()).unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let page = wait_visible(&store, cursor, 2).await;
    let ids: Vec<&str> = page.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids, vec!["A", "B"], "both appear after the cursor, A first");
}

/// Two writers append as fast as they can while a follower tails the log: the follower
/// sees every event exactly once.
pub async fn concurrent_writers_are_followed_without_gaps(store: SharedStore) {
    const PER_WRITER: usize = 150;
    let mut writers = Vec::new();
    for w in 0..2 {
        let s = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let batch = vec![event(&format!("/w{w}"), &format!("{i}"), "t")];
                loop {
                    match s.append_events(batch.clone()).await {
                        Ok(_) => break,
                        Err(Error::Saturated) => tokio::task::yield_now().await,
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut after = LogPosition::START;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < 2 * PER_WRITER {
        assert!(
            std::time::Instant::now() < deadline,
            "follower stalled at {}",
            seen.len()
        );
        let page = store
            .read_log(after, 50, &EventFilter::default())
            .await
            .unwrap();
        for e in page.events {
            assert!(e.position > after);
            after = e.position;
            assert!(
                seen.insert((e.event.source.clone(), e.event.id.clone())),
                "event seen twice"
            );
        }
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let rest = store
        .read_log(after, 50, &EventFilter::default())
        .await
        .unwrap();
    assert!(rest.events.is_empty());
    assert_eq!(store.count_events().await.unwrap() as usize, 2 * PER_WRITER);
}

pub async fn tokens_are_created_found_and_revoked(store: SharedStore) {
    let new = |name: &str, role, secret: &str| NewToken {
        name: name.into(),
        role,
        hash: hash_token(secret),
        created_at: t0(),
    };
    let a = store
        .create_token(new("ops", Role::Admin, "s1"), "cli")
        .await
        .unwrap();
    assert_eq!(a.created_by, "cli");
    assert_eq!(a.role, Role::Admin);
    let b = store
        .create_token(new("shop", Role::Ingest, "s2"), "ops")
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_token(new("ops", Role::Viewer, "s3"), "ops")
            .await,
        Err(Error::Conflict(_))
    ));
    let found = store
        .token_by_hash(&hash_token("s2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, b);
    assert!(
        store
            .token_by_hash(&hash_token("nope"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.list_tokens().await.unwrap().len(), 2);

    let later = t0() + Duration::minutes(5);
    let r = store.revoke_token(b.id, "ops", later).await.unwrap();
    assert_eq!(r.revoked_at, Some(later));
    let found = store
        .token_by_hash(&hash_token("s2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.revoked_at, Some(later));
    assert!(matches!(
        store.revoke_token(b.id, "ops", later).await,
        Err(Error::NotFound(_))
    ));
    // the name is free again once revoked
    store
        .create_token(new("shop", Role::Ingest, "s4"), "ops")
        .await
        .unwrap();

    let audit = store.list_audit(0, None, 100).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("cli", "token.create"),
            ("ops", "token.create"),
            ("ops", "token.revoke"),
            ("ops", "token.create")
        ],
        "the failed create left no audit record"
    );
    assert_eq!(audit[2].target, format!("token:{}", b.id));
}

pub async fn audit_is_append_only_and_paged(store: SharedStore) {
    for i in 0..5 {
        store
            .append_audit(NewAudit {
                at: t0() + Duration::seconds(i),
                actor: "ops".into(),
                action: "dlq.replay".into(),
                target: format!("delivery:{i}"),
                detail: serde_json::json!({"i": i}),
            })
            .await
            .unwrap();
    }
    let first = store.list_audit(0, None, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.list_audit(first[1].id, None, 10).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[2].detail, serde_json::json!({"i": 4}));
    assert_eq!(rest[2].at, t0() + Duration::seconds(4));
    // One object's history.
    let one = store.list_audit(0, Some("delivery:3"), 10).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].detail, serde_json::json!({"i": 3}));
    assert!(
        store
            .list_audit(one[0].id, Some("delivery:3"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn meta_is_overwritten(store: SharedStore) {
    assert_eq!(store.log_head().await.unwrap(), LogPosition::START);
    assert_eq!(store.get_meta("clock.origin").await.unwrap(), None);
    store.set_meta("clock.origin", "a").await.unwrap();
    store.set_meta("clock.origin", "b").await.unwrap();
    assert_eq!(
        store.get_meta("clock.origin").await.unwrap().as_deref(),
        Some("b")
    );
    store.check_writable().await.unwrap();
}

pub async fn nodes_heartbeat(store: SharedStore) {
    store
        .heartbeat_node("n1", serde_json::json!({"version": "1"}), t0())
        .await
        .unwrap();
    store
        .heartbeat_node("n2", serde_json::json!({}), t0())
        .await
        .unwrap();
    store
        .heartbeat_node(
            "n1",
            serde_json::json!({"version": "2"}),
            t0() + Duration::seconds(10),
        )
        .await
        .unwrap();
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].id, "n1");
    assert_eq!(nodes[0].started_at, t0());
    assert_eq!(nodes[0].heartbeat_at, t0() + Duration::seconds(10));
    assert_eq!(nodes[0].info, serde_json::json!({"version": "2"}));
    let gone = store
        .forget_nodes(t0() + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(gone, 1, "n2 has not been seen since t0");
    let ids: Vec<String> = store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, vec!["n1".to_string()]);
}

pub async fn lease_is_exclusive_and_taken_over_after_expiry(store: SharedStore) {
    let ttl = Duration::seconds(30);
    let a = store
        .acquire_lease("timers", "node-a", t0(), ttl)
        .await
        .unwrap()
        .expect("free lease is taken");
    assert_eq!(a.epoch, 1);
    assert!(
        store
            .acquire_lease("timers", "node-b", t0() + Duration::seconds(10), ttl)
            .await
            .unwrap()
            .is_none(),
        "a held lease is exclusive"
    );
    // the owner re-acquiring keeps its epoch; renewing extends it
    let a = store
        .acquire_lease("timers", "node-a", t0() + Duration::seconds(5), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.epoch, 1);
    let a = store
        .renew_lease(&a, t0() + Duration::seconds(20), ttl)
        .await
        .unwrap();
    assert_eq!(a.expires_at, t0() + Duration::seconds(50));
    store
        .save_lease_state(&a, serde_json::json!({"cursor": 1}))
        .await
        .unwrap();

    // node-a dies: after expiry node-b takes over with a new epoch
    let takeover = t0() + Duration::seconds(51);
    assert!(
        store
            .acquire_lease("timers", "node-b", t0() + Duration::seconds(49), ttl)
            .await
            .unwrap()
            .is_none()
    );
    let b = store
        .acquire_lease("timers", "node-b", takeover, ttl)
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert_eq!(b.epoch, 2);
    assert_eq!(b.owner, "node-b");
    assert_eq!(
        store.lease_state("timers").await.unwrap(),
        Some(serde_json::json!({"cursor": 1})),
        "the new owner resumes from the last checkpoint"
    );

    // node-a wakes up: its writes are fenced
    assert!(matches!(
        store.renew_lease(&a, takeover, ttl).await,
        Err(Error::Fenced { epoch: 1, .. })
    ));
    assert!(matches!(
        store
            .save_lease_state(&a, serde_json::json!({"cursor": 99}))
            .await,
        Err(Error::Fenced { .. })
    ));
    store
        .save_lease_state(&b, serde_json::json!({"cursor": 2}))
        .await
        .unwrap();
    assert_eq!(
        store.lease_state("timers").await.unwrap(),
        Some(serde_json::json!({"cursor": 2}))
    );

    // released: taken at once by another node
    store.release_lease(&b).await.unwrap();
    let a2 = store
        .acquire_lease("timers", "node-a", takeover + Duration::seconds(1), ttl)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a2.epoch, 3);
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases, vec![a2]);
    assert_eq!(store.lease_state("nope").await.unwrap(), None);
}

pub async fn jobs_are_claimed_once(store: SharedStore) {
    for i in 0..6 {
        store
            .create_job(NewJob {
                kind: "backfill".into(),
                params: serde_json::json!({"i": i}),
                created_by: "ops".into(),
                created_at: t0(),
            })
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for n in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(j) = s.claim_job(&format!("node-{n}"), t0()).await.unwrap() {
                assert_eq!(j.state, JobState::Running);
                assert_eq!(j.owner.as_deref(), Some(format!("node-{n}").as_str()));
                mine.push(j.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, 6, "every job claimed");
    assert_eq!(all.len(), 6, "no job claimed twice");

    let id = all[0];
    store.update_job_progress(id, 40, Some(100)).await.unwrap();
    store.update_job_progress(id, 100, None).await.unwrap();
    store
        .finish_job(
            id,
            JobState::Succeeded,
            Some("100 events".into()),
            t0() + Duration::seconds(3),
        )
        .await
        .unwrap();
    let j = store.get_job(id).await.unwrap().unwrap();
    assert_eq!((j.done, j.total), (100, Some(100)));
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.finished_at, Some(t0() + Duration::seconds(3)));
    assert_eq!(j.params, serde_json::json!({"i": 0}));
    let list = store.list_jobs(10).await.unwrap();
    assert_eq!(list.len(), 6);
    let audit = store.list_audit(0, None, 100).await.unwrap();
    assert_eq!(audit.len(), 6, "every job's creation is audited with it");
    assert!(
        audit
            .iter()
            .all(|a| a.action == "job.create" && a.actor == "ops")
    );
    assert_eq!(audit[0].detail["params"], serde_json::json!({"i": 0}));
    assert!(list[0].id > list[5].id, "newest first");
    assert!(store.get_job(12345).await.unwrap().is_none());
    assert!(matches!(
        store.finish_job(12345, JobState::Failed, None, t0()).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn orphaned_jobs_are_requeued(store: SharedStore) {
    let job = |i: i64| NewJob {
        kind: "events.purge".into(),
        params: serde_json::json!({"i": i}),
        created_by: "ops".into(),
        created_at: t0(),
    };
    store.create_job(job(1)).await.unwrap();
    store.create_job(job(2)).await.unwrap();
    store
        .heartbeat_node("alive", serde_json::json!({}), t0() + Duration::seconds(60))
        .await
        .unwrap();
    store
        .heartbeat_node("dead", serde_json::json!({}), t0())
        .await
        .unwrap();
    let a = store.claim_job("alive", t0()).await.unwrap().unwrap();
    let d = store.claim_job("dead", t0()).await.unwrap().unwrap();
    let n = store
        .requeue_orphaned_jobs(t0() + Duration::seconds(30), None)
        .await
        .unwrap();
    assert_eq!(n, 1, "only the dead node's job goes back");
    let again = store.claim_job("alive", t0()).await.unwrap().unwrap();
    assert_eq!(again.id, d.id);
    assert_eq!(
        store.get_job(a.id).await.unwrap().unwrap().owner.as_deref(),
        Some("alive")
    );
    // "alive" restarts under the same id: both its running jobs go back
    let n = store
        .requeue_orphaned_jobs(t0() + Duration::seconds(30), Some("alive"))
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        store.get_job(a.id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

pub async fn events_are_purged_in_batches(store: SharedStore) {
    for i in 0..10 {
        let mut e = event(
            if i % 2 == 0 { "/old" } else { "/other" },
            &format!("p{i}"),
            "t",
        );
        e.received_at = t0() + Duration::minutes(i);
        store.append_events(vec![e]).await.unwrap();
    }
    let cut = t0() + Duration::minutes(6); // events 0..=5 are older
    assert_eq!(
        store
            .count_events_before(cut, &SourceScope::all())
            .await
            .unwrap(),
        6
    );
    assert_eq!(
        store
            .count_events_before(cut, &SourceScope::only("/old"))
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        store
            .purge_events(cut, &SourceScope::only("/old"), 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .purge_events(cut, &SourceScope::only("/old"), 2)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .purge_events(cut, &SourceScope::only("/old"), 2)
            .await
            .unwrap(),
        0
    );
    assert!(store.find_event("/old", "p0").await.unwrap().is_none());
    assert!(
        store.find_event("/old", "p6").await.unwrap().is_some(),
        "newer kept"
    );
    assert!(
        store.find_event("/other", "p1").await.unwrap().is_some(),
        "other source kept"
    );
    assert_eq!(
        store
            .purge_events(cut, &SourceScope::all(), 100)
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.count_events().await.unwrap(), 4);
    // the log keeps its order and a purged id may be ingested again as a new event
    let head = store.log_head().await.unwrap();
    let out = store
        .append_events(vec![event("/old", "p0", "t")])
        .await
        .unwrap();
    assert!(
        matches!(out[0], Appended::Stored { seq } if seq > head.seq),
        "seqs are never reused"
    );
}

pub async fn business_keys_find_events_across_sources(store: SharedStore) {
    let with = |source: &str, id: &str, keys: &[(&str, &str)], minute: i64| {
        let mut e = event(source, id, "t");
        e.keys = keys.iter().map(|(n, v)| BusinessKey::new(*n, *v)).collect();
        e.received_at = t0() + Duration::minutes(minute);
        e
    };
    let batch = vec![
        with(
            "https://shop.example.com",
            "o-1042",
            &[("shop_order", "#1042")],
            0,
        ),
        // Odoo's sale order carries both names of the order: it links them
        with(
            "https://odoo.example.com/sale.order",
            "so-42",
            &[("sale_order", "S00042"), ("shop_order", "#1042")],
            1,
        ),
        with(
            "https://wms.example.com/wh1",
            "p-17",
            &[("picking", "WH/OUT/00017"), ("sale_order", "S00042")],
            2,
        ),
        with(
            "https://wms.example.com/wh1",
            "p-18",
            &[("picking", "WH/OUT/00018")],
            3,
        ),
        with(
            "https://mes.example.com/zurich",
            "mo-1",
            &[("production", "Zürich/MO/Ω-7")],
            4,
        ),
        // a duplicate's keys are not added again
        with(
            "https://shop.example.com",
            "o-1042",
            &[("shop_order", "#9999")],
            5,
        ),
    ];
    store.append_events(batch).await.unwrap();
    wait_visible(&store, LogPosition::START, 5).await;
    let by = |key: &str, name: Option<&str>| EventFilter {
        key: Some(key.into()),
        key_name: name.map(str::to_string),
        ..Default::default()
    };
    let ids =
        |page: LogPage| -> Vec<String> { page.events.into_iter().map(|e| e.event.id).collect() };
    let order = ids(store
        .read_log(LogPosition::START, 100, &by("#1042", None))
        .await
        .unwrap());
    assert_eq!(order, vec!["o-1042", "so-42"]);
    let so = ids(store
        .read_log(LogPosition::START, 100, &by("S00042", Some("sale_order")))
        .await
        .unwrap());
    assert_eq!(so, vec!["so-42", "p-17"]);
    assert!(
        ids(store
            .read_log(LogPosition::START, 100, &by("S00042", Some("picking")))
            .await
            .unwrap())
        .is_empty()
    );
    let slash = ids(store
        .read_log(LogPosition::START, 100, &by("WH/OUT/00017", None))
        .await
        .unwrap());
    assert_eq!(slash, vec!["p-17"], "keys with / match exactly");
    let uni = store
        .read_log(LogPosition::START, 100, &by("Zürich/MO/Ω-7", None))
        .await
        .unwrap();
    assert_eq!(
        uni.events[0].keys,
        vec![BusinessKey::new("production", "Zürich/MO/Ω-7")]
    );
    assert!(
        ids(store
            .read_log(LogPosition::START, 100, &by("#9999", None))
            .await
            .unwrap())
        .is_empty()
    );

    let so42 = store
        .find_event("https://odoo.example.com/sale.order", "so-42")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        so42.keys,
        vec![
            BusinessKey::new("sale_order", "S00042"),
            BusinessKey::new("shop_order", "#1042")
        ],
        "keys come back sorted by name"
    );
    assert_eq!(
        store.get_event(so42.seq).await.unwrap().unwrap().keys,
        so42.keys
    );

    // time range on received_at
    let range = EventFilter {
        since: Some(t0() + Duration::minutes(1)),
        until: Some(t0() + Duration::minutes(3)),
        ..Default::default()
    };
    assert_eq!(
        ids(store
            .read_log(LogPosition::START, 100, &range)
            .await
            .unwrap()),
        vec!["so-42", "p-17"]
    );

    // purging an event removes its keys with it
    store
        .purge_events(t0() + Duration::minutes(1), &SourceScope::all(), 100)
        .await
        .unwrap();
    assert_eq!(
        ids(store
            .read_log(LogPosition::START, 100, &by("#1042", None))
            .await
            .unwrap()),
        vec!["so-42"]
    );
}

pub async fn retention_drops_payloads_but_still_recognises_duplicates(store: SharedStore) {
    let at = |source: &str, id: &str, minute: i64| {
        let mut e = event(source, id, "t");
        e.received_at = t0() + Duration::minutes(minute);
        e.keys = vec![BusinessKey::new("order", id)];
        e
    };
    let first = store
        .append_events(vec![
            at("https://shop.example.com", "old-1", 0),
            at("https://shop.example.com", "old-2", 1),
            at("https://shop.example.com", "new-1", 10),
            at("https://wms.example.com/wh1", "w-old", 0),
            at("https://wms.example.com/wh2", "w2-old", 0),
        ])
        .await
        .unwrap();
    let cut = t0() + Duration::minutes(5);
    // only the shop's old payloads go
    let shop = SourceScope::only("https://shop.example.com");
    assert_eq!(
        store.purge_payloads(cut, &shop, 1).await.unwrap(),
        1,
        "batches are bounded"
    );
    assert_eq!(store.purge_payloads(cut, &shop, 100).await.unwrap(), 1);
    assert_eq!(
        store.purge_payloads(cut, &shop, 100).await.unwrap(),
        0,
        "already purged"
    );
    let old = store
        .find_event("https://shop.example.com", "old-1")
        .await
        .unwrap()
        .unwrap();
    assert!(old.payload_purged);
    assert_eq!(old.event.data, None, "the payload is gone");
    assert_eq!(old.event.ty, "t", "the slim row keeps the attributes");
    assert_eq!(old.event.extensions.len(), 1, "and the extensions");
    assert_eq!(
        old.keys,
        vec![BusinessKey::new("order", "old-1")],
        "and the keys"
    );
    let new = store
        .find_event("https://shop.example.com", "new-1")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !new.payload_purged && new.event.data.is_some(),
        "newer events untouched"
    );
    let wms = store
        .find_event("https://wms.example.com/wh1", "w-old")
        .await
        .unwrap()
        .unwrap();
    assert!(
        !wms.payload_purged && wms.event.data.is_some(),
        "other sources untouched"
    );

    // a late retry of a purged event is still a duplicate of the first copy
    let again = store
        .append_events(vec![at("https://shop.example.com", "old-1", 20)])
        .await
        .unwrap();
    assert_eq!(
        again[0],
        Appended::Duplicate {
            seq: first[0].seq()
        }
    );

    // prefix and inverted scopes
    let wh = SourceScope {
        prefixes: vec!["https://wms.example.com/".into()],
        ..Default::default()
    };
    assert_eq!(store.count_events_before(cut, &wh).await.unwrap(), 2);
    let not_wms = SourceScope {
        invert: true,
        ..wh.clone()
    };
    assert_eq!(store.count_events_before(cut, &not_wms).await.unwrap(), 2);
    assert_eq!(store.purge_payloads(cut, &wh, 100).await.unwrap(), 2);

    let usage = store.usage_by_source().await.unwrap();
    let shop_usage = usage
        .iter()
        .find(|u| u.source == "https://shop.example.com")
        .unwrap();
    assert_eq!((shop_usage.events, shop_usage.payloads_purged), (3, 2));
    assert!(shop_usage.bytes > 0);
    assert_eq!(usage.len(), 3);

    // the dedupe horizon: forgetting the rows frees the ids
    assert_eq!(store.purge_events(cut, &shop, 100).await.unwrap(), 2);
    let after = store
        .append_events(vec![at("https://shop.example.com", "old-1", 30)])
        .await
        .unwrap();
    assert!(matches!(after[0], Appended::Stored { .. }));
}

pub async fn source_activity_reports_counts_and_lag(store: SharedStore) {
    // the test events' own time is t0; received 1, 3 and 20 minutes later
    let at = |source: &str, id: &str, minute: i64| {
        let mut e = event(source, id, "t");
        e.received_at = t0() + Duration::minutes(minute);
        e
    };
    let mut untimed = at("/wms", "no-time", 21);
    untimed.event.time = None;
    store
        .append_events(vec![
            at("/wms", "a", 1),
            at("/wms", "b", 3),
            at("/shop", "c", 20),
            untimed,
        ])
        .await
        .unwrap();
    let act = store
        .source_activity(t0() + Duration::minutes(2))
        .await
        .unwrap();
    assert_eq!(act.len(), 2, "only what arrived in the window: {act:?}");
    let wms = act.iter().find(|a| a.source == "/wms").unwrap();
    assert_eq!(wms.events, 2, "b and the untimed one");
    assert_eq!(wms.max_lag_ms, Some(180_000));
    assert_eq!(
        wms.avg_lag_ms,
        Some(180_000.0),
        "events without a time do not count for lag"
    );
    let shop = act.iter().find(|a| a.source == "/shop").unwrap();
    assert_eq!(shop.max_lag_ms, Some(1_200_000));
    let usage = store.usage_by_source().await.unwrap();
    let wms = usage.iter().find(|u| u.source == "/wms").unwrap();
    assert_eq!(wms.last_received_at, Some(t0() + Duration::minutes(21)));
}

pub async fn closed_store_refuses_writes(store: SharedStore) {
    store
        .append_events(vec![event("/shop", "before-close", "t")])
        .await
        .unwrap();
    store.close().await;
    assert!(matches!(
        store
            .append_events(vec![event("/shop", "after-close", "t")])
            .await,
        Err(Error::Closed)
    ));
}

// ---- the delivery queue ----

/// A delivery of `flow` to `destination`, scheduled, with a payload.
pub fn delivery(flow: &str, destination: &str, lane: Lane) -> NewDelivery {
    NewDelivery {
        flow: flow.into(),
        flow_version: "1".into(),
        destination: destination.into(),
        lane,
        ordering_key: None,
        hold_on_dead: false,
        state: DeliveryState::Scheduled,
        payload: Some(serde_json::json!({"flow": flow})),
        error: None,
        error_detail: None,
        traceparent: None,
        lease: None,
    }
}

use switchyard_core::delivery::{ErrorClass, Lane};

fn claim_req(owner: &str, lane: Lane, limit: usize, now: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        owner: owner.into(),
        lane,
        limit,
        now,
        real_now: now,
        lease_until: now + Duration::seconds(60),
        exclude: Vec::new(),
        only: None,
    }
}

fn result(d: &DeliveryRecord, owner: &str, next: AttemptNext, now: DateTime<Utc>) -> AttemptResult {
    let (class, status) = match &next {
        AttemptNext::Delivered => (None, Some(200)),
        AttemptNext::RetryAt(_) => (Some(ErrorClass::Transient), Some(503)),
        AttemptNext::Dead(_) => (Some(ErrorClass::Permanent), Some(422)),
        AttemptNext::Pause { .. } => (Some(ErrorClass::Credential), Some(401)),
    };
    AttemptResult {
        delivery_id: d.id,
        owner: owner.into(),
        node: owner.into(),
        generation: d.generation,
        started_at: now,
        duration_ms: 1.5,
        status,
        response_excerpt: Some("body".into()),
        class,
        error: class.map(|c| format!("{} failure", c.as_str())),
        next,
        now,
        cursor: None,
    }
}

/// Appends one event per delivery and returns the created delivery ids, in order.
async fn enqueue(store: &SharedStore, prefix: &str, ds: Vec<NewDelivery>) -> Vec<i64> {
    let events: Vec<NewEvent> = ds
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let mut e = event("urn:queue", &format!("{prefix}-{i}"), "order.created");
            e.deliveries = vec![d];
            e
        })
        .collect();
    let out = store.append_routed(events).await.unwrap();
    out.into_iter()
        .map(|(_, created)| {
            assert_eq!(created.len(), 1);
            created[0].id
        })
        .collect()
}

pub async fn queue_routes_in_the_event_transaction(store: SharedStore) {
    let mut e = event("urn:shop", "r-1", "order.created");
    let mut leased = delivery("to-wms", "wms", Lane::Critical);
    leased.lease = Some(LeaseRequest {
        owner: "node-a".into(),
        until: t0() + Duration::seconds(60),
    });
    let mut filtered = delivery("to-erp", "erp", Lane::Standard);
    filtered.state = DeliveryState::Filtered;
    filtered.payload = None;
    let mut invalid = delivery("to-bi", "bi", Lane::Bulk);
    invalid.state = DeliveryState::Invalid;
    invalid.error = Some("/order: 7 is not of type string".into());
    invalid.error_detail =
        Some(serde_json::json!([{"pointer": "/order", "message": "7 is not of type string"}]));
    e.deliveries = vec![leased, filtered, invalid];
    let out = store.append_routed(vec![e.clone()]).await.unwrap();
    assert!(matches!(out[0].0, Appended::Stored { .. }));
    let created = &out[0].1;
    assert_eq!(created.len(), 3);
    assert!(created[0].leased);
    assert!(!created[1].leased && !created[2].leased);

    let d = store.get_delivery(created[0].id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Delivering);
    assert_eq!(d.lease_owner.as_deref(), Some("node-a"));
    assert_eq!(
        (d.event_source.as_str(), d.event_id.as_str()),
        ("urn:shop", "r-1")
    );
    assert_eq!(d.event_type, "order.created");
    assert_eq!(d.event_seq, out[0].0.seq());
    assert_eq!(d.received_at, t0());
    assert_eq!(d.lane, Lane::Critical);
    assert_eq!(d.payload, Some(serde_json::json!({"flow": "to-wms"})));
    let f = store.get_delivery(created[1].id).await.unwrap().unwrap();
    assert_eq!(f.state, DeliveryState::Filtered);
    let i = store.get_delivery(created[2].id).await.unwrap().unwrap();
    assert_eq!(i.state, DeliveryState::Invalid);
    assert_eq!(i.error_class, Some(ErrorClass::Invalid));
    assert_eq!(i.error_detail.unwrap()[0]["pointer"], "/order");

    // A duplicate event creates no deliveries.
    let again = store.append_routed(vec![e]).await.unwrap();
    assert!(matches!(again[0].0, Appended::Duplicate { .. }));
    assert!(again[0].1.is_empty());
    let all = store
        .list_deliveries(&DeliveryFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let dlq = store
        .list_deliveries(&DeliveryFilter {
            states: DeliveryState::DEAD_LETTERS.to_vec(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        dlq.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![created[2].id]
    );
    let by_flow = store
        .list_deliveries(&DeliveryFilter {
            flow: Some("to-erp".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_flow.len(), 1);
    assert_eq!(by_flow[0].state, DeliveryState::Filtered);
}

pub async fn queue_claims_each_delivery_once(store: SharedStore) {
    let ids = enqueue(
        &store,
        "c",
        (0..40)
            .map(|_| delivery("f", "d", Lane::Standard))
            .collect(),
    )
    .await;
    let mut tasks = Vec::new();
    for n in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim_deliveries(claim_req(&format!("node-{n}"), Lane::Standard, 3, t0()))
                    .await
                    .unwrap();
                if got.is_empty() {
                    return mine;
                }
                for d in got {
                    assert_eq!(d.state, DeliveryState::Delivering);
                    assert_eq!(d.lease_owner.as_deref(), Some(format!("node-{n}").as_str()));
                    mine.push(d.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(all, expected, "every delivery claimed exactly once");
}

pub async fn queue_retries_then_dead_letters_with_history(store: SharedStore) {
    let id = enqueue(&store, "r", vec![delivery("f", "d", Lane::Standard)]).await[0];
    let t = t0();
    let d = store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, t))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(d.id, id);
    // A stranger's result changes nothing (but is recorded).
    assert!(
        !store
            .complete_attempt(result(&d, "b", AttemptNext::Delivered, t))
            .await
            .unwrap()
    );
    let retry_at = t + Duration::seconds(10);
    assert!(
        store
            .complete_attempt(result(&d, "a", AttemptNext::RetryAt(retry_at), t))
            .await
            .unwrap()
    );
    let d = store.get_delivery(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::RetryWait);
    assert_eq!(d.next_attempt_at, Some(retry_at));
    assert_eq!(d.attempts, 1);
    assert_eq!(d.error_class, Some(ErrorClass::Transient));
    assert_eq!(d.last_status, Some(503));
    assert!(d.lease_owner.is_none());
    // Not due before its time.
    assert!(
        store
            .claim_deliveries(claim_req("a", Lane::Standard, 10, t + Duration::seconds(9)))
            .await
            .unwrap()
            .is_empty()
    );
    let d = store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, retry_at))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        store
            .complete_attempt(result(
                &d,
                "a",
                AttemptNext::Dead("422 refused".into()),
                retry_at
            ))
            .await
            .unwrap()
    );
    let d = store.get_delivery(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Dead);
    assert_eq!(d.attempts, 2);
    assert_eq!(d.last_error.as_deref(), Some("422 refused"));
    // Dead letters by when they changed (the workflow monitor follows them so).
    let changed = |since| {
        let store = store.clone();
        async move {
            store
                .list_deliveries(&DeliveryFilter {
                    states: DeliveryState::DEAD_LETTERS.to_vec(),
                    updated_since: Some(since),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .iter()
                .map(|d| d.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(changed(d.updated_at).await, vec![id]);
    assert!(
        changed(d.updated_at + Duration::microseconds(1))
            .await
            .is_empty()
    );
    let attempts = store.list_attempts(id).await.unwrap();
    let outcomes: Vec<(&str, i64, &str)> = attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.attempt, a.node.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("delivered", 1, "b"),
            ("transient", 1, "a"),
            ("permanent", 2, "a")
        ]
    );
    assert_eq!(attempts[1].status, Some(503));
    assert_eq!(attempts[1].response_excerpt.as_deref(), Some("body"));
    assert!((attempts[1].duration_ms - 1.5).abs() < 0.01);
    assert!(
        store
            .claim_deliveries(claim_req("a", Lane::Standard, 10, t + Duration::days(9)))
            .await
            .unwrap()
            .is_empty(),
        "dead letters are never claimed"
    );
}

pub async fn queue_expired_leases_are_claimed_again(store: SharedStore) {
    let id = enqueue(&store, "x", vec![delivery("f", "d", Lane::Bulk)]).await[0];
    let t = t0();
    let first = store
        .claim_deliveries(claim_req("a", Lane::Bulk, 10, t))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let mut later = claim_req("b", Lane::Bulk, 10, t + Duration::seconds(30));
    assert!(
        store
            .claim_deliveries(later.clone())
            .await
            .unwrap()
            .is_empty(),
        "lease still held"
    );
    later.real_now = t + Duration::seconds(61);
    later.lease_until = later.real_now + Duration::seconds(60);
    let again = store.claim_deliveries(later).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, id);
    assert_eq!(again[0].lease_owner.as_deref(), Some("b"));
    // The first holder comes back too late: recorded, not applied.
    assert!(
        !store
            .complete_attempt(result(&first[0], "a", AttemptNext::Delivered, t))
            .await
            .unwrap()
    );
    assert!(
        !store
            .extend_delivery_lease(id, "a", t + Duration::seconds(600))
            .await
            .unwrap()
    );
    assert!(
        store
            .extend_delivery_lease(id, "b", t + Duration::seconds(600))
            .await
            .unwrap()
    );
    assert_eq!(store.release_deliveries(vec![id], "a").await.unwrap(), 0);
    assert_eq!(store.release_deliveries(vec![id], "b").await.unwrap(), 1);
    let d = store.get_delivery(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Scheduled);
    assert!(d.lease_owner.is_none());
    assert_eq!(store.list_attempts(id).await.unwrap().len(), 1);
}

pub async fn queue_ordering_key_holds_only_its_own_key(store: SharedStore) {
    let keyed = |k: &str, hold: bool| {
        let mut d = delivery("f", "d", Lane::Standard);
        d.ordering_key = Some(k.into());
        d.hold_on_dead = hold;
        d
    };
    let ids = enqueue(
        &store,
        "o",
        vec![
            keyed("A", true),
            keyed("A", true),
            keyed("B", true),
            keyed("A", true),
            delivery("f", "d", Lane::Standard),
        ],
    )
    .await;
    let t = t0();
    let claim = |owner: &str, now| claim_req(owner, Lane::Standard, 10, now);
    let mut got: Vec<i64> = store
        .claim_deliveries(claim("a", t))
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![ids[0], ids[2], ids[4]],
        "one head per key, unkeyed free"
    );
    let head = store.get_delivery(ids[0]).await.unwrap().unwrap();
    // The head fails transiently: its key waits, even when the next is due.
    store
        .complete_attempt(result(
            &head,
            "a",
            AttemptNext::RetryAt(t + Duration::seconds(5)),
            t,
        ))
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(claim("a", t + Duration::seconds(1)))
            .await
            .unwrap()
            .is_empty()
    );
    let head = store
        .claim_deliveries(claim("a", t + Duration::seconds(5)))
        .await
        .unwrap();
    assert_eq!(head.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[0]]);
    // Dead-lettered with hold: the key stays blocked until discarded.
    store
        .complete_attempt(result(&head[0], "a", AttemptNext::Dead("no".into()), t))
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries(claim("a", t + Duration::seconds(6)))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .discard_delivery(ids[0], "ops", "obsolete", t)
        .await
        .unwrap();
    let next = store
        .claim_deliveries(claim("a", t + Duration::seconds(7)))
        .await
        .unwrap();
    assert_eq!(next.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[1]]);
    store
        .complete_attempt(result(&next[0], "a", AttemptNext::Delivered, t))
        .await
        .unwrap();
    let last = store
        .claim_deliveries(claim("a", t + Duration::seconds(8)))
        .await
        .unwrap();
    assert_eq!(last.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[3]]);

    // on_failure = dead-letter: a dead head does not hold its key.
    let ids = enqueue(&store, "p", vec![keyed("C", false), keyed("C", false)]).await;
    let head = store.claim_deliveries(claim("a", t)).await.unwrap();
    assert_eq!(head.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[0]]);
    store
        .complete_attempt(result(&head[0], "a", AttemptNext::Dead("no".into()), t))
        .await
        .unwrap();
    let next = store.claim_deliveries(claim("a", t)).await.unwrap();
    assert_eq!(next.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[1]]);

    // A new leased delivery behind a pending one of its key is not leased.
    let mut e = event("urn:queue", "q-1", "order.created");
    let mut d = keyed("B", true);
    d.lease = Some(LeaseRequest {
        owner: "a".into(),
        until: t + Duration::seconds(60),
    });
    e.deliveries = vec![d];
    let out = store.append_routed(vec![e]).await.unwrap();
    assert!(!out[0].1[0].leased, "key B's head is still delivering");
}

pub async fn queue_lanes_and_destination_filters(store: SharedStore) {
    let ids = enqueue(
        &store,
        "l",
        vec![
            delivery("f", "d1", Lane::Critical),
            delivery("f", "d2", Lane::Critical),
            delivery("f", "d1", Lane::Bulk),
        ],
    )
    .await;
    let t = t0();
    let mut req = claim_req("a", Lane::Critical, 10, t);
    req.exclude = vec!["d1".into()];
    let got = store.claim_deliveries(req).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[1]]);
    let mut req = claim_req("a", Lane::Bulk, 10, t);
    req.only = Some("d2".into());
    assert!(
        store
            .claim_deliveries(req.clone())
            .await
            .unwrap()
            .is_empty()
    );
    req.only = Some("d1".into());
    let got = store.claim_deliveries(req).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[2]]);
    let got = store
        .claim_deliveries(claim_req("a", Lane::Critical, 10, t))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|d| d.id).collect::<Vec<_>>(), vec![ids[0]]);
}

/// A destination's step cursor is saved with the attempt that reached it, only by the lease
/// holder, kept by results that carry none, kept by a plain replay and cleared by an edit.
pub async fn queue_cursor_is_saved_with_attempts(store: SharedStore) {
    let ids = enqueue(
        &store,
        "cur",
        vec![
            delivery("f", "d", Lane::Standard),
            delivery("f", "d", Lane::Standard),
        ],
    )
    .await;
    let t = t0();
    let claimed = store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, t))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|d| d.cursor.is_none()));
    let step1 = serde_json::json!({"step": 1, "records": {"order": {"id": 7}}});
    let mut stranger = result(&claimed[0], "b", AttemptNext::Delivered, t);
    stranger.cursor = Some(serde_json::json!({"step": 9}));
    assert!(!store.complete_attempt(stranger).await.unwrap());
    for d in &claimed {
        let mut r = result(d, "a", AttemptNext::RetryAt(t), t);
        r.cursor = Some(step1.clone());
        assert!(store.complete_attempt(r).await.unwrap());
    }
    let d = store.get_delivery(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        d.cursor.as_ref(),
        Some(&step1),
        "the holder's cursor is saved"
    );
    // The next claim hands it to the next attempt; a result without one keeps it.
    let again = store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, t))
        .await
        .unwrap();
    assert!(again.iter().all(|d| d.cursor.as_ref() == Some(&step1)));
    for d in &again {
        store
            .complete_attempt(result(d, "a", AttemptNext::Dead("422".into()), t))
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_delivery(ids[1]).await.unwrap().unwrap().cursor,
        Some(step1.clone())
    );
    let replay = |id: i64, payload: Option<serde_json::Value>| Replay {
        id,
        actor: "alice".into(),
        reason: "retry".into(),
        at: t,
        state: DeliveryState::Scheduled,
        payload,
        flow_version: None,
        ordering_key: None,
        error: None,
        error_detail: None,
        action: "dlq.replay".into(),
    };
    let kept = store.replay_delivery(replay(ids[0], None)).await.unwrap();
    assert_eq!(
        kept.cursor,
        Some(step1),
        "a plain replay resumes where it stopped"
    );
    let edited = store
        .replay_delivery(replay(ids[1], Some(serde_json::json!({"order": "S2"}))))
        .await
        .unwrap();
    assert_eq!(
        edited.cursor, None,
        "an edited payload starts from the first step"
    );
}

pub async fn queue_replay_and_discard_are_audited(store: SharedStore) {
    let ids = enqueue(
        &store,
        "d",
        vec![
            delivery("f", "d", Lane::Standard),
            delivery("f", "d", Lane::Standard),
        ],
    )
    .await;
    let t = t0();
    for d in store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, t))
        .await
        .unwrap()
    {
        store
            .complete_attempt(result(&d, "a", AttemptNext::Dead("422".into()), t))
            .await
            .unwrap();
    }
    let before_audit = store.list_audit(0, None, 1000).await.unwrap().len();
    let edited = serde_json::json!({"order": "S1", "fixed": true});
    let r = store
        .replay_delivery(Replay {
            id: ids[0],
            actor: "alice".into(),
            reason: "fixed the lot number".into(),
            at: t + Duration::seconds(1),
            state: DeliveryState::Scheduled,
            payload: Some(edited.clone()),
            flow_version: None,
            ordering_key: None,
            error: None,
            error_detail: None,
            action: "dlq.edit".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.state, DeliveryState::Scheduled);
    assert_eq!(r.generation, 1);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.payload, Some(edited.clone()));
    assert_eq!(r.next_attempt_at, Some(t + Duration::seconds(1)));
    assert_eq!(
        r.created_at,
        t + Duration::seconds(1),
        "a replay's age starts anew"
    );
    assert!(r.last_error.is_none());
    // It is due again and carries its generation.
    let again = store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, t + Duration::seconds(1)))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].generation, 1);
    // Only dead letters can be replayed or discarded.
    assert!(matches!(
        store
            .replay_delivery(Replay {
                id: ids[0],
                actor: "alice".into(),
                reason: "again".into(),
                at: t,
                state: DeliveryState::Scheduled,
                payload: None,
                flow_version: None,
                ordering_key: None,
                error: None,
                error_detail: None,
                action: "dlq.replay".into(),
            })
            .await,
        Err(Error::Conflict(_))
    ));
    let d = store
        .discard_delivery(ids[1], "bob", "duplicate order", t)
        .await
        .unwrap();
    assert_eq!(d.state, DeliveryState::Discarded);
    assert!(matches!(
        store.discard_delivery(ids[1], "bob", "again", t).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store.discard_delivery(999_999, "bob", "x", t).await,
        Err(Error::NotFound(_))
    ));
    let audit = store.list_audit(0, None, 1000).await.unwrap();
    let new: Vec<&AuditRecord> = audit[before_audit..].iter().collect();
    assert_eq!(new.len(), 2);
    assert_eq!(new[0].action, "dlq.edit");
    assert_eq!(new[0].actor, "alice");
    assert_eq!(new[0].target, format!("delivery:{}", ids[0]));
    assert_eq!(new[0].detail["reason"], "fixed the lot number");
    assert_eq!(new[0].detail["generation"], 1);
    assert_eq!(new[0].detail["changed"]["payload"]["after"], edited);
    assert_eq!(
        new[0].detail["changed"]["payload"]["before"],
        serde_json::json!({"flow": "f"})
    );
    assert_eq!(new[1].action, "dlq.discard");
    assert_eq!(new[1].actor, "bob");
    assert_eq!(new[1].detail["reason"], "duplicate order");
}

pub async fn queue_credential_failure_pauses_the_destination(store: SharedStore) {
    let id = enqueue(&store, "p", vec![delivery("f", "odoo", Lane::Critical)]).await[0];
    let t = t0();
    let d = store
        .claim_deliveries(claim_req("a", Lane::Critical, 10, t))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let resume_after = t + Duration::seconds(300);
    store
        .complete_attempt(result(
            &d,
            "a",
            AttemptNext::Pause {
                retry_at: t,
                resume_after,
            },
            t,
        ))
        .await
        .unwrap();
    let d = store.get_delivery(id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::RetryWait);
    assert_eq!(
        d.attempts, 0,
        "a credential pause does not spend the retry budget"
    );
    assert_eq!(d.error_class, Some(ErrorClass::Credential));
    let pauses = store.destination_pauses().await.unwrap();
    assert_eq!(pauses.len(), 1);
    assert_eq!(pauses[0].destination, "odoo");
    assert_eq!(pauses[0].resume_after, resume_after);
    assert!(pauses[0].reason.contains("credential"));
    assert!(
        store
            .resume_destination("odoo", "carol", "rotated the key", t)
            .await
            .unwrap()
    );
    assert!(
        !store
            .resume_destination("odoo", "carol", "again", t)
            .await
            .unwrap()
    );
    assert!(store.destination_pauses().await.unwrap().is_empty());
    let audit = store.list_audit(0, None, 1000).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        (
            last.action.as_str(),
            last.actor.as_str(),
            last.target.as_str()
        ),
        ("destination.resume", "carol", "destination:odoo")
    );
}

pub async fn queue_stats_and_backfill(store: SharedStore) {
    let ids = enqueue(
        &store,
        "s",
        vec![
            delivery("f", "d", Lane::Standard),
            delivery("f", "d", Lane::Standard),
        ],
    )
    .await;
    let t = t0();
    let d = store
        .claim_deliveries(claim_req("a", Lane::Standard, 1, t))
        .await
        .unwrap()
        .pop()
        .unwrap();
    store
        .complete_attempt(result(&d, "a", AttemptNext::Delivered, t))
        .await
        .unwrap();
    let stats = store.delivery_stats().await.unwrap();
    let count = |state| {
        stats
            .iter()
            .filter(|s| s.flow == "f" && s.state == state)
            .map(|s| s.count)
            .sum::<i64>()
    };
    assert_eq!(count(DeliveryState::Delivered), 1);
    assert_eq!(count(DeliveryState::Scheduled), 1);
    assert!(
        stats
            .iter()
            .all(|s| s.oldest_created_at == t0() && s.destination == "d")
    );
    let delivered = store.get_delivery(d.id).await.unwrap().unwrap();
    assert_eq!(delivered.delivered_at, Some(t));
    // Backfill: the same (event, flow) is left alone; a new flow gets a delivery.
    let seq = store.get_delivery(ids[0]).await.unwrap().unwrap().event_seq;
    let out = store
        .insert_deliveries(
            vec![
                (seq, delivery("f", "d", Lane::Standard)),
                (seq, delivery("g", "d", Lane::Bulk)),
            ],
            t + Duration::hours(1),
        )
        .await
        .unwrap();
    assert!(out[0].is_none());
    let created = out[1].unwrap();
    assert!(!created.leased);
    let g = store.get_delivery(created.id).await.unwrap().unwrap();
    assert_eq!(
        (g.flow.as_str(), g.event_seq, g.state),
        ("g", seq, DeliveryState::Scheduled)
    );
    assert!(matches!(
        store
            .insert_deliveries(vec![(987_654, delivery("g", "d", Lane::Bulk))], t)
            .await,
        Err(Error::NotFound(_))
    ));
}

pub async fn purging_events_takes_their_finished_deliveries(store: SharedStore) {
    let ids = enqueue(
        &store,
        "g",
        vec![
            delivery("f", "d", Lane::Standard),
            delivery("f", "d", Lane::Standard),
        ],
    )
    .await;
    let t = t0();
    let first = store
        .claim_deliveries(claim_req("a", Lane::Standard, 1, t))
        .await
        .unwrap()
        .pop()
        .unwrap();
    store
        .complete_attempt(result(&first, "a", AttemptNext::Delivered, t))
        .await
        .unwrap();
    let second = store
        .claim_deliveries(claim_req("a", Lane::Standard, 1, t))
        .await
        .unwrap()
        .pop()
        .unwrap();
    store
        .complete_attempt(result(&second, "a", AttemptNext::Dead("no".into()), t))
        .await
        .unwrap();
    let n = store
        .purge_events(t0() + Duration::seconds(1), &SourceScope::all(), 100)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(store.get_delivery(first.id).await.unwrap().is_none());
    assert!(store.list_attempts(first.id).await.unwrap().is_empty());
    // The dead letter stays, with its payload and history, for an operator to decide.
    let dead = store.get_delivery(second.id).await.unwrap().unwrap();
    assert_eq!(dead.state, DeliveryState::Dead);
    assert_eq!(store.list_attempts(second.id).await.unwrap().len(), 1);
    assert_eq!(ids.len(), 2);
}

// ---- the workflow monitor ----

use switchyard_core::batch::{BatchRun, RunStatus};
use switchyard_core::instance::{Evidence, Finding, FindingKind, Hit, Instance, InstanceState};

/// An open instance of `workflow` started at `started` (with sub-microsecond parts in its
/// hits, which only the JSON body keeps), known by `aliases`.
fn instance(
    workflow: &str,
    key: Option<&str>,
    aliases: &[(&str, &str)],
    started: DateTime<Utc>,
) -> Instance {
    let mut aliases: Vec<BusinessKey> = aliases
        .iter()
        .map(|(n, v)| BusinessKey::new(*n, *v))
        .collect();
    aliases.sort();
    Instance {
        workflow: workflow.into(),
        version: "v1".into(),
        key: key.map(str::to_string),
        aliases,
        state: InstanceState::OnTrack,
        started_at: started,
        progressed_at: started,
        closed_at: None,
        dimensions: Default::default(),
        hits: vec![Hit {
            step: "ordered".into(),
            seq: 1,
            source: "/shop".into(),
            id: "e1".into(),
            ty: "order.created".into(),
            occurred_at: started - Duration::nanoseconds(1_234_567),
            received_at: started + Duration::nanoseconds(987),
        }],
        raised: Vec::new(),
    }
}

fn finding(step: &str, kind: FindingKind, at: DateTime<Utc>) -> Finding {
    Finding {
        step: step.into(),
        kind,
        at,
        message: format!("step \"{step}\": {}", kind.as_str()),
        evidence: vec![Evidence {
            seq: 1,
            source: "/shop".into(),
            id: "e1".into(),
        }],
    }
}

fn new_write(
    instance: Instance,
    due_at: Option<DateTime<Utc>>,
    findings: Vec<Finding>,
) -> InstanceWrite {
    InstanceWrite {
        relink: true,
        id: None,
        instance,
        due_at,
        findings,
        absorbed: Vec::new(),
    }
}

fn alias(workflow: &str, name: &str, value: &str) -> WorkflowAlias {
    (workflow.to_string(), BusinessKey::new(name, value))
}

fn commit(lease: &Lease, writes: Vec<InstanceWrite>, now: DateTime<Utc>) -> MonitorCommit {
    MonitorCommit {
        runs: Vec::new(),
        findings_only: false,
        lease: lease.clone(),
        checkpoint: None,
        versions: Vec::new(),
        writes,
        now,
    }
}

/// What a commit of instance writes only returns.
fn committed(instances: Vec<i64>, findings: u64) -> MonitorCommitted {
    MonitorCommitted {
        instances,
        runs: Vec::new(),
        findings,
    }
}

/// A run of `monitor` scheduled at `slot` that started then.
fn batch_run(
    monitor: &str,
    run_id: Option<&str>,
    slot: Option<DateTime<Utc>>,
    status: RunStatus,
) -> BatchRun {
    BatchRun {
        monitor: monitor.into(),
        run_id: run_id.map(str::to_string),
        slot,
        started_at: slot,
        finished_at: None,
        status,
        count: None,
        message: None,
    }
}

fn run_finding(kind: FindingKind, at: DateTime<Utc>) -> Finding {
    Finding {
        step: "run".into(),
        kind,
        at,
        message: format!("run: {}", kind.as_str()),
        evidence: Vec::new(),
    }
}

fn runs(limit: usize) -> RunFilter {
    RunFilter {
        limit,
        ..Default::default()
    }
}

fn ids(records: &[InstanceRecord]) -> Vec<i64> {
    records.iter().map(|r| r.id).collect()
}

fn all_findings() -> FindingFilter {
    FindingFilter {
        limit: 1000,
        ..Default::default()
    }
}

fn instances(limit: usize) -> InstanceFilter {
    InstanceFilter {
        limit,
        ..Default::default()
    }
}

pub async fn monitor_commit_writes_instances_aliases_and_findings_once(store: SharedStore) {
    let ttl = Duration::seconds(60);
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), ttl)
        .await
        .unwrap()
        .unwrap();
    let now = t0() + Duration::minutes(1);
    let due = t0() + Duration::minutes(10);

    let mut one = instance(
        "o2c",
        Some("#1"),
        &[("shop_order", "#1"), ("sale_order", "S1")],
        t0(),
    );
    one.dimensions.insert("warehouse".into(), "WH2".into());
    one.raised = vec![("confirmed".into(), FindingKind::AtRisk)];
    let mut two = instance(
        "o2c",
        Some("#2"),
        &[("shop_order", "#2")],
        t0() + Duration::minutes(2),
    );
    two.state = InstanceState::Breached;
    two.dimensions.insert("warehouse".into(), "WH1".into());
    let three = instance(
        "returns",
        None,
        &[("shop_order", "#1")],
        t0() + Duration::minutes(3),
    );
    let at_risk = finding(
        "confirmed",
        FindingKind::AtRisk,
        t0() + Duration::minutes(5),
    );
    let duplicate = finding(
        "shipped",
        FindingKind::Duplicate,
        t0() + Duration::seconds(30),
    );
    let version = WorkflowVersion {
        workflow: "o2c".into(),
        version: "v1".into(),
        definition: serde_json::json!({"steps": ["ordered", "confirmed"]}),
        created_at: t0(),
    };
    let mut c = commit(
        &lease,
        vec![
            new_write(
                one.clone(),
                Some(due),
                vec![at_risk.clone(), duplicate.clone()],
            ),
            new_write(two.clone(), None, Vec::new()),
            new_write(three.clone(), Some(due + Duration::minutes(5)), Vec::new()),
        ],
        now,
    );
    c.checkpoint = Some(serde_json::json!({"after": "0.5"}));
    c.versions = vec![version.clone()];
    let MonitorCommitted {
        instances: written,
        runs,
        findings: inserted,
    } = store.monitor_commit(c).await.unwrap();
    assert!(runs.is_empty());
    assert_eq!(written.len(), 3);
    assert_eq!(inserted, 2);
    let (id1, id2, id3) = (written[0], written[1], written[2]);
    assert!(id1 < id2 && id2 < id3, "new ids follow the writes' order");
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"after": "0.5"})),
        "the checkpoint is saved with the step"
    );

    // found by either alias, within its workflow only
    let expected = InstanceRecord {
        id: id1,
        instance: one.clone(),
        due_at: Some(due),
        updated_at: now,
    };
    for a in [
        alias("o2c", "shop_order", "#1"),
        alias("o2c", "sale_order", "S1"),
    ] {
        assert_eq!(
            store.monitor_find(vec![a]).await.unwrap(),
            vec![expected.clone()]
        );
    }
    assert_eq!(
        ids(&store
            .monitor_find(vec![
                alias("o2c", "shop_order", "#2"),
                alias("o2c", "sale_order", "S1"),
                alias("o2c", "shop_order", "#1"),
                alias("returns", "shop_order", "#1"),
            ])
            .await
            .unwrap()),
        vec![id1, id2, id3],
        "each instance once, by id"
    );
    assert!(
        store
            .monitor_find(vec![
                alias("o2c", "sale_order", "#1"),
                alias("other", "shop_order", "#1")
            ])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.monitor_find(Vec::new()).await.unwrap().is_empty());
    // a batch larger than any one statement's parameters
    let mut many: Vec<WorkflowAlias> = (0..2500)
        .map(|i| alias("o2c", "shop_order", &format!("#x{i}")))
        .collect();
    many.insert(1200, alias("o2c", "shop_order", "#2"));
    many.push(alias("o2c", "sale_order", "S1"));
    assert_eq!(
        ids(&store.monitor_find(many).await.unwrap()),
        vec![id1, id2]
    );

    // timers
    assert_eq!(store.monitor_next_due().await.unwrap(), Some(due));
    assert!(
        store
            .monitor_due(due - Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.monitor_due(due, 10).await.unwrap(),
        vec![expected.clone()]
    );
    assert_eq!(
        ids(&store
            .monitor_due(due + Duration::hours(1), 10)
            .await
            .unwrap()),
        vec![id1, id3],
        "earliest first"
    );
    assert_eq!(
        ids(&store
            .monitor_due(due + Duration::hours(1), 1)
            .await
            .unwrap()),
        vec![id1]
    );

    // the instance round-trips exactly (its body carries what the columns round)
    assert_eq!(store.get_instance(id1).await.unwrap(), Some(expected));
    assert_eq!(
        store.get_instance(id2).await.unwrap().unwrap().instance,
        two
    );
    assert!(store.get_instance(id3 + 1000).await.unwrap().is_none());

    // versions are inserted once
    let mut again = commit(&lease, Vec::new(), now);
    again.versions = vec![
        WorkflowVersion {
            definition: serde_json::json!({"changed": true}),
            created_at: now,
            ..version.clone()
        },
        WorkflowVersion {
            version: "v2".into(),
            created_at: now,
            ..version.clone()
        },
    ];
    assert_eq!(
        store.monitor_commit(again).await.unwrap(),
        committed(vec![], 0)
    );
    let versions = store.workflow_versions().await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0], version, "the first definition of v1 is kept");
    assert_eq!(versions[1].version, "v2");

    // the same finding again on an update: not inserted twice
    let later = now + Duration::minutes(1);
    one.state = InstanceState::AtRisk;
    let update = InstanceWrite {
        relink: true,
        id: Some(id1),
        ..new_write(one.clone(), None, vec![at_risk.clone()])
    };
    assert_eq!(
        store
            .monitor_commit(commit(&lease, vec![update], later))
            .await
            .unwrap(),
        committed(vec![id1], 0)
    );
    let stored = store.get_instance(id1).await.unwrap().unwrap();
    assert_eq!(stored.instance.state, InstanceState::AtRisk);
    assert_eq!(stored.due_at, None);
    assert_eq!(stored.updated_at, later);
    assert_eq!(
        store.monitor_next_due().await.unwrap(),
        Some(due + Duration::minutes(5))
    );
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"after": "0.5"})),
        "a commit without a checkpoint keeps the last one"
    );
    let breach = finding(
        "confirmed",
        FindingKind::Breach,
        t0() + Duration::minutes(10),
    );
    let update = InstanceWrite {
        relink: true,
        id: Some(id1),
        ..new_write(
            one.clone(),
            None,
            vec![breach.clone(), at_risk.clone(), breach.clone()],
        )
    };
    let mut c = commit(&lease, vec![update], later);
    c.checkpoint = Some(serde_json::json!({"after": "0.9"}));
    assert_eq!(
        store.monitor_commit(c).await.unwrap(),
        committed(vec![id1], 1)
    );
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"after": "0.9"}))
    );

    // findings: in id order, as raised, with the instance's label and the commit's time
    let all = store.list_findings(&all_findings()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[0].finding, at_risk);
    assert_eq!(all[1].finding, duplicate);
    assert_eq!(all[2].finding, breach);
    assert!(
        all.iter()
            .all(|f| f.instance_id == id1 && f.workflow == "o2c" && f.instance_key == "#1")
    );
    assert_eq!((all[0].detected_at, all[2].detected_at), (now, later));
    let only = |f: FindingFilter| {
        let store = store.clone();
        async move {
            store
                .list_findings(&f)
                .await
                .unwrap()
                .iter()
                .map(|f| f.id)
                .collect::<Vec<_>>()
        }
    };
    let fid: Vec<i64> = all.iter().map(|f| f.id).collect();
    assert_eq!(
        only(FindingFilter {
            kind: Some(FindingKind::Breach),
            ..all_findings()
        })
        .await,
        vec![fid[2]]
    );
    assert_eq!(
        only(FindingFilter {
            workflow: Some("o2c".into()),
            ..all_findings()
        })
        .await,
        fid
    );
    assert!(
        only(FindingFilter {
            workflow: Some("returns".into()),
            ..all_findings()
        })
        .await
        .is_empty()
    );
    assert!(
        only(FindingFilter {
            instance_id: Some(id2),
            ..all_findings()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        only(FindingFilter {
            since: Some(t0() + Duration::minutes(5)),
            ..all_findings()
        })
        .await,
        vec![fid[0], fid[2]],
        "since: became true at or after"
    );
    assert_eq!(
        only(FindingFilter {
            after_id: fid[0],
            limit: 1,
            ..all_findings()
        })
        .await,
        vec![fid[1]]
    );

    // counts per workflow and state
    let mut counts = store.instance_counts().await.unwrap();
    counts.sort_by(|a, b| (&a.workflow, a.state.as_str()).cmp(&(&b.workflow, b.state.as_str())));
    let count = |workflow: &str, state, count| InstanceCount {
        workflow: workflow.into(),
        state,
        count,
    };
    assert_eq!(
        counts,
        vec![
            count("o2c", InstanceState::AtRisk, 1),
            count("o2c", InstanceState::Breached, 1),
            count("returns", InstanceState::OnTrack, 1),
        ]
    );

    // listings: newest first, filtered, paged
    let list = |f: InstanceFilter| {
        let store = store.clone();
        async move { ids(&store.list_instances(&f).await.unwrap()) }
    };
    assert_eq!(list(instances(10)).await, vec![id3, id2, id1]);
    assert_eq!(list(instances(2)).await, vec![id3, id2]);
    assert_eq!(
        list(InstanceFilter {
            before_id: Some(id2),
            ..instances(10)
        })
        .await,
        vec![id1]
    );
    assert_eq!(
        list(InstanceFilter {
            workflow: Some("o2c".into()),
            ..instances(10)
        })
        .await,
        vec![id2, id1]
    );
    assert_eq!(
        list(InstanceFilter {
            states: vec![InstanceState::AtRisk],
            ..instances(10)
        })
        .await,
        vec![id1]
    );
    assert_eq!(
        list(InstanceFilter {
            states: vec![InstanceState::OnTrack, InstanceState::Breached],
            ..instances(10)
        })
        .await,
        vec![id3, id2]
    );
    assert_eq!(
        list(InstanceFilter {
            dimension: Some(("warehouse".into(), "WH2".into())),
            ..instances(10)
        })
        .await,
        vec![id1]
    );
    for (name, value) in [
        ("warehouse", "WH9"),
        ("region", "WH2"),
        ("ware\"house", "WH2"),
    ] {
        assert!(
            list(InstanceFilter {
                dimension: Some((name.into(), value.into())),
                ..instances(10)
            })
            .await
            .is_empty(),
            "{name} = {value}"
        );
    }
    assert_eq!(
        list(InstanceFilter {
            since: Some(two.started_at),
            ..instances(10)
        })
        .await,
        vec![id3, id2],
        "since: started at or after"
    );
    assert_eq!(
        list(InstanceFilter {
            until: Some(two.started_at),
            ..instances(10)
        })
        .await,
        vec![id1],
        "until: started before"
    );
    assert_eq!(
        list(InstanceFilter {
            workflow: Some("o2c".into()),
            states: vec![InstanceState::Breached, InstanceState::AtRisk],
            since: Some(t0()),
            until: Some(t0() + Duration::hours(1)),
            before_id: Some(id2),
            ..instances(10)
        })
        .await,
        vec![id1]
    );

    // by key value, any key name
    assert_eq!(
        ids(&store.instances_by_key("#1", None, 10).await.unwrap()),
        vec![id3, id1]
    );
    assert_eq!(
        ids(&store.instances_by_key("#1", None, 1).await.unwrap()),
        vec![id3]
    );
    assert_eq!(
        ids(&store.instances_by_key("#1", Some("o2c"), 10).await.unwrap()),
        vec![id1]
    );
    assert_eq!(
        ids(&store.instances_by_key("S1", None, 10).await.unwrap()),
        vec![id1]
    );
    assert!(
        store
            .instances_by_key("S1", Some("returns"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn monitor_commit_is_fenced_by_the_lease_epoch(store: SharedStore) {
    let ttl = Duration::seconds(30);
    let a = store
        .acquire_lease("monitor", "node-a", t0(), ttl)
        .await
        .unwrap()
        .unwrap();
    let mut c = commit(&a, Vec::new(), t0());
    c.checkpoint = Some(serde_json::json!({"n": 1}));
    store.monitor_commit(c).await.unwrap();

    // node-a stalls past its lease; node-b takes the monitor over
    let takeover = t0() + Duration::seconds(31);
    let b = store
        .acquire_lease("monitor", "node-b", takeover, ttl)
        .await
        .unwrap()
        .expect("expired lease is taken over");
    assert_eq!(b.epoch, a.epoch + 1);

    let step = |lease: &Lease, n: i64| {
        let mut c = commit(
            lease,
            vec![new_write(
                instance("o2c", Some("#1"), &[("shop_order", "#1")], t0()),
                Some(t0() + Duration::minutes(10)),
                vec![finding("confirmed", FindingKind::AtRisk, t0())],
            )],
            takeover,
        );
        c.checkpoint = Some(serde_json::json!({"n": n}));
        c.versions = vec![WorkflowVersion {
            workflow: "o2c".into(),
            version: format!("v{n}"),
            definition: serde_json::json!({}),
            created_at: takeover,
        }];
        c.runs = vec![RunWrite {
            subject: SUBJECT_BATCH,
            id: None,
            run: batch_run("nightly", None, Some(t0()), RunStatus::Running),
            findings: vec![run_finding(FindingKind::LateRun, t0())],
        }];
        c
    };
    match store.monitor_commit(step(&a, 99)).await {
        Err(Error::Fenced { name, epoch }) => {
            assert_eq!((name.as_str(), epoch), ("monitor", a.epoch))
        }
        other => panic!("a stale owner's commit must be fenced, got {other:?}"),
    }
    assert!(store.instance_counts().await.unwrap().is_empty());
    assert!(
        store
            .list_instances(&instances(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .list_findings(&all_findings())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.workflow_versions().await.unwrap().is_empty());
    assert!(store.list_runs(&runs(10)).await.unwrap().is_empty());
    assert_eq!(store.monitor_next_due().await.unwrap(), None);
    assert!(
        store
            .monitor_find(vec![alias("o2c", "shop_order", "#1")])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"n": 1})),
        "the fenced commit's checkpoint is not saved"
    );

    // the new owner's commit goes through
    let MonitorCommitted {
        instances: written,
        runs: run_ids,
        findings: inserted,
    } = store.monitor_commit(step(&b, 2)).await.unwrap();
    assert_eq!((written.len(), run_ids.len(), inserted), (1, 1, 2));
    assert_eq!(
        store
            .list_runs(&runs(10))
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        run_ids
    );
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"n": 2}))
    );
    assert_eq!(
        ids(&store
            .monitor_find(vec![alias("o2c", "shop_order", "#1")])
            .await
            .unwrap()),
        written
    );
    assert_eq!(store.workflow_versions().await.unwrap().len(), 1);
}

pub async fn monitor_commit_writes_nothing_when_a_write_fails(store: SharedStore) {
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let mut c = commit(
        &lease,
        vec![new_write(
            instance("o2c", Some("#1"), &[("shop_order", "#1")], t0()),
            None,
            vec![finding("confirmed", FindingKind::AtRisk, t0())],
        )],
        t0(),
    );
    c.checkpoint = Some(serde_json::json!({"n": 1}));
    let written = store.monitor_commit(c).await.unwrap().instances;

    // a new instance, then an update of one that does not exist: the whole step fails
    let mut c = commit(
        &lease,
        vec![
            new_write(
                instance("o2c", Some("#2"), &[("shop_order", "#2")], t0()),
                Some(t0()),
                vec![finding("confirmed", FindingKind::AtRisk, t0())],
            ),
            InstanceWrite {
                relink: true,
                id: Some(written[0] + 1000),
                ..new_write(
                    instance("o2c", Some("#3"), &[("shop_order", "#3")], t0()),
                    None,
                    Vec::new(),
                )
            },
        ],
        t0() + Duration::minutes(1),
    );
    c.checkpoint = Some(serde_json::json!({"n": 2}));
    assert!(matches!(
        store.monitor_commit(c).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        ids(&store.list_instances(&instances(10)).await.unwrap()),
        written
    );
    assert_eq!(store.list_findings(&all_findings()).await.unwrap().len(), 1);
    assert!(
        store
            .monitor_find(vec![
                alias("o2c", "shop_order", "#2"),
                alias("o2c", "shop_order", "#3")
            ])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.monitor_next_due().await.unwrap(), None);
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"n": 1}))
    );
}

pub async fn monitor_merge_moves_findings_and_aliases(store: SharedStore) {
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let now = t0() + Duration::minutes(30);
    // the shop's order, and two provisional instances the WMS and the carrier started
    let shop = instance("o2c", Some("#1"), &[("shop_order", "#1")], t0());
    let wms = instance(
        "o2c",
        None,
        &[("sale_order", "S1"), ("sale_order", "S1-old")],
        t0() + Duration::minutes(20),
    );
    let carrier = instance(
        "o2c",
        None,
        &[("tracking", "T1")],
        t0() + Duration::minutes(25),
    );
    let shop_breach = finding(
        "confirmed",
        FindingKind::Breach,
        t0() + Duration::minutes(10),
    );
    let wms_breach = finding(
        "confirmed",
        FindingKind::Breach,
        t0() + Duration::minutes(21),
    );
    let wms_missing = finding(
        "confirmed",
        FindingKind::Missing,
        t0() + Duration::minutes(21),
    );
    let carrier_missing = finding(
        "confirmed",
        FindingKind::Missing,
        t0() + Duration::minutes(26),
    );
    let carrier_stalled = finding(
        "shipped",
        FindingKind::Stalled,
        t0() + Duration::minutes(27),
    );
    let MonitorCommitted {
        instances: written,
        findings: inserted,
        ..
    } = store
        .monitor_commit(commit(
            &lease,
            vec![
                new_write(shop.clone(), None, vec![shop_breach.clone()]),
                new_write(
                    wms.clone(),
                    Some(t0() + Duration::minutes(40)),
                    vec![wms_breach, wms_missing.clone()],
                ),
                new_write(
                    carrier.clone(),
                    Some(t0() + Duration::minutes(50)),
                    vec![carrier_missing, carrier_stalled.clone()],
                ),
            ],
            now,
        ))
        .await
        .unwrap();
    assert_eq!(inserted, 5);
    let (survivor, other, third) = (written[0], written[1], written[2]);
    let before = store.list_findings(&all_findings()).await.unwrap();
    assert_eq!(before.len(), 5);
    assert_eq!(
        before[1].instance_key, "sale_order S1",
        "a provisional label"
    );

    // an event links S1 and T1 to #1: the shop's instance absorbs the other two
    let mut merged = shop.clone();
    merged.aliases.push(BusinessKey::new("sale_order", "S1"));
    merged.aliases.push(BusinessKey::new("tracking", "T1"));
    merged.aliases.sort();
    merged.hits.extend(wms.hits.clone());
    let later = now + Duration::minutes(1);
    let merge = InstanceWrite {
        relink: true,
        id: Some(survivor),
        absorbed: vec![other, third],
        ..new_write(
            merged.clone(),
            Some(t0() + Duration::minutes(40)),
            Vec::new(),
        )
    };
    assert_eq!(
        store
            .monitor_commit(commit(&lease, vec![merge], later))
            .await
            .unwrap(),
        committed(vec![survivor], 0)
    );
    assert!(store.get_instance(other).await.unwrap().is_none());
    assert!(store.get_instance(third).await.unwrap().is_none());
    assert_eq!(
        store
            .get_instance(survivor)
            .await
            .unwrap()
            .unwrap()
            .instance,
        merged
    );
    for key in [
        ("shop_order", "#1"),
        ("sale_order", "S1"),
        ("tracking", "T1"),
    ] {
        assert_eq!(
            ids(&store
                .monitor_find(vec![alias("o2c", key.0, key.1)])
                .await
                .unwrap()),
            vec![survivor],
            "{key:?} names the survivor"
        );
    }
    assert!(
        store
            .monitor_find(vec![alias("o2c", "sale_order", "S1-old")])
            .await
            .unwrap()
            .is_empty(),
        "the absorbed instance's other aliases are gone"
    );
    assert_eq!(
        ids(&store.instances_by_key("S1", None, 10).await.unwrap()),
        vec![survivor]
    );
    assert_eq!(
        ids(&store
            .monitor_due(t0() + Duration::hours(1), 10)
            .await
            .unwrap()),
        vec![survivor]
    );

    // The survivor keeps its breach; the WMS breach of the same step goes, and so does the
    // carrier's missing finding once the WMS one has moved over. The others move, with
    // their ids, so followers do not see them twice.
    let after = store.list_findings(&all_findings()).await.unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[0].finding, shop_breach);
    assert_eq!(
        (after[1].id, after[1].instance_id, &after[1].finding),
        (before[2].id, survivor, &wms_missing)
    );
    assert_eq!(
        (after[2].id, after[2].instance_id, &after[2].finding),
        (before[4].id, survivor, &carrier_stalled)
    );
    for gone in [other, third] {
        assert!(
            store
                .list_findings(&FindingFilter {
                    instance_id: Some(gone),
                    ..all_findings()
                })
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(
        store
            .list_findings(&FindingFilter {
                instance_id: Some(survivor),
                ..all_findings()
            })
            .await
            .unwrap(),
        after
    );
    assert_eq!(
        store.instance_counts().await.unwrap(),
        vec![InstanceCount {
            workflow: "o2c".into(),
            state: InstanceState::OnTrack,
            count: 1
        }]
    );
}

pub async fn monitor_archive_removes_closed_instances_only(store: SharedStore) {
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let closed = |n: &str, state: InstanceState, minutes: i64| {
        let mut i = instance("o2c", Some(n), &[("shop_order", n)], t0());
        i.state = state;
        i.closed_at = Some(t0() + Duration::minutes(minutes));
        i
    };
    let written = store
        .monitor_commit(commit(
            &lease,
            vec![
                new_write(
                    closed("#1", InstanceState::CompletedLate, 60),
                    None,
                    vec![finding("confirmed", FindingKind::Breach, t0())],
                ),
                new_write(closed("#2", InstanceState::Completed, 90), None, Vec::new()),
                new_write(
                    closed("#3", InstanceState::Cancelled, 180),
                    None,
                    Vec::new(),
                ),
                new_write(
                    instance("o2c", Some("#4"), &[("shop_order", "#4")], t0()),
                    Some(t0() + Duration::hours(5)),
                    Vec::new(),
                ),
            ],
            t0(),
        ))
        .await
        .unwrap()
        .instances;
    let cutoff = t0() + Duration::minutes(120);
    // oldest closed first, up to the limit
    assert_eq!(store.archive_instances(cutoff, 1).await.unwrap(), 1);
    assert!(store.get_instance(written[0]).await.unwrap().is_none());
    assert!(store.get_instance(written[1]).await.unwrap().is_some());
    assert_eq!(store.archive_instances(cutoff, 10).await.unwrap(), 1);
    assert_eq!(store.archive_instances(cutoff, 10).await.unwrap(), 0);
    assert_eq!(
        ids(&store.list_instances(&instances(10)).await.unwrap()),
        vec![written[3], written[2]],
        "open instances and those closed later stay"
    );
    assert!(
        store
            .monitor_find(vec![
                alias("o2c", "shop_order", "#1"),
                alias("o2c", "shop_order", "#2")
            ])
            .await
            .unwrap()
            .is_empty(),
        "their aliases went with them"
    );
    assert!(
        store
            .instances_by_key("#1", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let kept = store.list_findings(&all_findings()).await.unwrap();
    assert_eq!(kept.len(), 1, "findings stay as history");
    assert_eq!(kept[0].instance_id, written[0]);
    assert_eq!(
        store
            .archive_instances(t0() + Duration::days(1), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        ids(&store.list_instances(&instances(10)).await.unwrap()),
        vec![written[3]]
    );
}

/// SLA compliance over time and the cycle-time histogram: closed instances of one workflow
/// counted per hour bucket (by close), final state and cycle-time bin.
pub async fn monitor_closed_counts_per_bucket_state_and_cycle_time(store: SharedStore) {
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let closed = |wf: &str, n: &str, state: InstanceState, started: i64, closed: i64| {
        let mut i = instance(
            wf,
            Some(n),
            &[("shop_order", n)],
            t0() + Duration::seconds(started),
        );
        i.state = state;
        i.closed_at = Some(t0() + Duration::seconds(closed));
        new_write(i, None, Vec::new())
    };
    store
        .monitor_commit(commit(
            &lease,
            vec![
                // 08:00 bucket: 30 s (bin 0), 10 min (bin 2, late), 59 min (bin 3)
                closed("o2c", "#1", InstanceState::Completed, 0, 30),
                closed("o2c", "#2", InstanceState::CompletedLate, 0, 600),
                closed("o2c", "#3", InstanceState::Completed, 0, 3_540),
                // 09:00 bucket: 1 h exactly (bin 4), 5 days (the last bin)
                closed("o2c", "#4", InstanceState::CompletedLate, 0, 3_600),
                closed(
                    "o2c",
                    "#5",
                    InstanceState::Cancelled,
                    -432_000 + 3_700,
                    3_700,
                ),
                // too early, another workflow, still open: not counted
                closed("o2c", "#6", InstanceState::Completed, -7_200, -3_600),
                closed("mto", "#7", InstanceState::Completed, 0, 30),
                new_write(
                    instance("o2c", Some("#8"), &[("shop_order", "#8")], t0()),
                    Some(t0() + Duration::hours(5)),
                    Vec::new(),
                ),
            ],
            t0(),
        ))
        .await
        .unwrap();
    let got = store.closed_counts("o2c", t0(), 3_600).await.unwrap();
    let h = |n: i64| t0() + Duration::hours(n);
    let last = CYCLE_BINS_SECONDS.len();
    let want = vec![
        (h(0), InstanceState::Completed, 0, 1),
        (h(0), InstanceState::Completed, 3, 1),
        (h(0), InstanceState::CompletedLate, 2, 1),
        (h(1), InstanceState::Cancelled, last, 1),
        (h(1), InstanceState::CompletedLate, 4, 1),
    ];
    let mut got: Vec<_> = got
        .into_iter()
        .map(|c| (c.bucket, c.state, c.cycle_bin, c.count))
        .collect();
    got.sort_by_key(|g| (g.0, g.1.as_str(), g.2));
    let mut want = want;
    want.sort_by_key(|g| (g.0, g.1.as_str(), g.2));
    assert_eq!(got, want);
    assert!(
        store
            .closed_counts("o2c", h(2), 3_600)
            .await
            .unwrap()
            .is_empty()
    );
    // Two-hour buckets fold both hours into one.
    let two: i64 = store
        .closed_counts("o2c", t0(), 7_200)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.bucket == h(0))
        .map(|c| c.count)
        .sum();
    assert_eq!(two, 5);
}

/// Timers commit their findings alone first (`findings_only`: the instance is untouched),
/// then the instance without re-pointing its aliases (`relink: false`), which must not
/// take an alias back that a later write gave another instance.
pub async fn monitor_timer_commits_findings_first_and_keeps_aliases(store: SharedStore) {
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let due = t0() + Duration::minutes(10);
    let one = instance(
        "o2c",
        Some("#1"),
        &[("shop_order", "#1"), ("sale_order", "S1")],
        t0(),
    );
    let ids_ = store
        .monitor_commit(commit(
            &lease,
            vec![new_write(one.clone(), Some(due), vec![])],
            t0(),
        ))
        .await
        .unwrap()
        .instances;
    let id = ids_[0];
    // another instance now owns S1
    let two = instance(
        "o2c",
        Some("#2"),
        &[("sale_order", "S1"), ("shop_order", "#2")],
        t0(),
    );
    store
        .monitor_commit(commit(&lease, vec![new_write(two, None, vec![])], t0()))
        .await
        .unwrap();
    let breach = finding("confirmed", FindingKind::Breach, due);
    let mut only = commit(
        &lease,
        vec![InstanceWrite {
            id: Some(id),
            ..new_write(one.clone(), None, vec![breach.clone()])
        }],
        due,
    );
    only.findings_only = true;
    let inserted = store.monitor_commit(only).await.unwrap().findings;
    assert_eq!(inserted, 1);
    let stored = store.get_instance(id).await.unwrap().unwrap();
    assert_eq!(
        stored.due_at,
        Some(due),
        "findings_only leaves the instance as it was"
    );
    assert_eq!(stored.instance, one);
    let mut later = one.clone();
    later.state = InstanceState::Breached;
    later.raised.push(("confirmed".into(), FindingKind::Breach));
    let inserted = store
        .monitor_commit(commit(
            &lease,
            vec![InstanceWrite {
                id: Some(id),
                relink: false,
                ..new_write(later.clone(), None, vec![breach])
            }],
            due,
        ))
        .await
        .unwrap()
        .findings;
    assert_eq!(inserted, 0, "the same finding again is not a second one");
    let stored = store.get_instance(id).await.unwrap().unwrap();
    assert_eq!(stored.instance, later);
    assert_eq!(stored.due_at, None);
    let s1 = store
        .monitor_find(vec![alias("o2c", "sale_order", "S1")])
        .await
        .unwrap();
    assert_eq!(s1.len(), 1);
    assert_ne!(s1[0].id, id, "relink: false did not take S1 back");
    let mut stray = commit(&lease, vec![new_write(one, None, vec![])], due);
    stray.findings_only = true;
    assert!(
        store.monitor_commit(stray).await.is_err(),
        "findings need a stored instance"
    );
}

/// Batch runs are written in the monitor's commit with their findings (subject `batch`,
/// keyed by the run's id), which never mix with an instance's of the same number.
pub async fn monitor_runs_are_written_with_their_findings(store: SharedStore) {
    let lease = store
        .acquire_lease("monitor", "node-a", t0(), Duration::seconds(60))
        .await
        .unwrap()
        .unwrap();
    let slot = t0() + Duration::hours(18);
    let yesterday = slot - Duration::days(1);

    // yesterday's run (succeeded) and another job's failed run
    let mut old = batch_run("nightly", None, Some(yesterday), RunStatus::Succeeded);
    old.finished_at = Some(yesterday + Duration::minutes(20));
    old.count = Some(1000);
    let mut export = batch_run("export", Some("exp-7"), None, RunStatus::Failed);
    export.started_at = Some(t0() + Duration::minutes(30));
    export.finished_at = Some(t0() + Duration::minutes(31));
    export.message = Some("disk full".into());
    let mut c = commit(&lease, Vec::new(), t0() + Duration::hours(1));
    c.runs = [&old, &export]
        .into_iter()
        .map(|r| RunWrite {
            subject: SUBJECT_BATCH,
            id: None,
            run: r.clone(),
            findings: Vec::new(),
        })
        .collect();
    let out = store.monitor_commit(c).await.unwrap();
    assert!(out.instances.is_empty());
    assert_eq!(out.findings, 0);
    let (old_id, export_id) = (out.runs[0], out.runs[1]);
    assert!(old_id < export_id, "new ids follow the writes' order");

    // today's run starts late
    let started = slot + Duration::minutes(15);
    let now = started + Duration::seconds(1);
    let mut nightly = batch_run("nightly", None, Some(slot), RunStatus::Running);
    nightly.started_at = Some(started);
    let late = run_finding(FindingKind::LateRun, slot + Duration::minutes(10));
    let mut c = commit(&lease, Vec::new(), now);
    c.runs = vec![RunWrite {
        subject: SUBJECT_BATCH,
        id: None,
        run: nightly.clone(),
        findings: vec![late.clone()],
    }];
    c.checkpoint = Some(serde_json::json!({"n": 1}));
    let out = store.monitor_commit(c).await.unwrap();
    assert!(out.instances.is_empty());
    assert_eq!((out.runs.len(), out.findings), (1, 1));
    let id = out.runs[0];
    assert!(id > export_id);
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"n": 1}))
    );

    // they round-trip
    assert_eq!(
        store.get_run(id).await.unwrap(),
        Some(RunRecord {
            id,
            run: nightly.clone(),
            updated_at: now,
        })
    );
    assert_eq!(
        store.get_run(old_id).await.unwrap(),
        Some(RunRecord {
            id: old_id,
            run: old.clone(),
            updated_at: t0() + Duration::hours(1),
        })
    );
    assert_eq!(store.get_run(export_id).await.unwrap().unwrap().run, export);
    assert!(store.get_run(id + 1000).await.unwrap().is_none());

    // listings: newest first, filtered, paged
    let list = |f: RunFilter| {
        let store = store.clone();
        async move {
            store
                .list_runs(&f)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(runs(10)).await, vec![id, export_id, old_id]);
    assert_eq!(list(runs(1)).await, vec![id]);
    assert_eq!(
        list(RunFilter {
            before_id: Some(id),
            ..runs(1)
        })
        .await,
        vec![export_id]
    );
    assert_eq!(
        list(RunFilter {
            before_id: Some(export_id),
            ..runs(10)
        })
        .await,
        vec![old_id]
    );
    assert_eq!(
        list(RunFilter {
            monitor: Some("nightly".into()),
            ..runs(10)
        })
        .await,
        vec![id, old_id]
    );
    assert!(
        list(RunFilter {
            monitor: Some("weekly".into()),
            ..runs(10)
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(RunFilter {
            statuses: vec![RunStatus::Running],
            ..runs(10)
        })
        .await,
        vec![id]
    );
    assert_eq!(
        list(RunFilter {
            statuses: vec![RunStatus::Succeeded, RunStatus::Failed],
            ..runs(10)
        })
        .await,
        vec![export_id, old_id]
    );
    assert!(
        list(RunFilter {
            statuses: vec![RunStatus::Missed],
            ..runs(10)
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(RunFilter {
            slot: Some(slot),
            ..runs(10)
        })
        .await,
        vec![id]
    );
    assert!(
        list(RunFilter {
            slot: Some(slot + Duration::seconds(1)),
            ..runs(10)
        })
        .await
        .is_empty()
    );
    assert_eq!(
        list(RunFilter {
            run_id: Some("exp-7".into()),
            ..runs(10)
        })
        .await,
        vec![export_id]
    );
    assert_eq!(
        list(RunFilter {
            started_since: Some(started),
            ..runs(10)
        })
        .await,
        vec![id],
        "started_since: started at or after"
    );
    assert_eq!(
        list(RunFilter {
            started_since: export.started_at,
            ..runs(10)
        })
        .await,
        vec![id, export_id]
    );
    assert_eq!(
        list(RunFilter {
            monitor: Some("nightly".into()),
            statuses: vec![RunStatus::Succeeded],
            slot: Some(yesterday),
            started_since: Some(yesterday),
            before_id: Some(id),
            ..runs(10)
        })
        .await,
        vec![old_id]
    );

    // it finishes with a count out of range
    let later = now + Duration::minutes(40);
    nightly.status = RunStatus::Succeeded;
    nightly.finished_at = Some(later);
    nightly.count = Some(17);
    nightly.message = Some("done".into());
    let out_of_range = run_finding(FindingKind::CountOutOfRange, later);
    let mut c = commit(&lease, Vec::new(), later);
    c.runs = vec![RunWrite {
        subject: SUBJECT_BATCH,
        id: Some(id),
        run: nightly.clone(),
        findings: vec![out_of_range.clone(), late.clone()],
    }];
    assert_eq!(
        store.monitor_commit(c).await.unwrap(),
        MonitorCommitted {
            instances: Vec::new(),
            runs: vec![id],
            findings: 1,
        },
        "the late finding is not inserted twice"
    );
    assert_eq!(
        store.get_run(id).await.unwrap(),
        Some(RunRecord {
            id,
            run: nightly.clone(),
            updated_at: later,
        })
    );
    assert!(
        list(RunFilter {
            statuses: vec![RunStatus::Running],
            ..runs(10)
        })
        .await
        .is_empty()
    );
    let batch = FindingFilter {
        subject: Some(SUBJECT_BATCH.into()),
        ..all_findings()
    };
    let found = store.list_findings(&batch).await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(
        (&found[0].finding, found[0].detected_at),
        (&late, now),
        "as raised, at the commit's time"
    );
    assert_eq!(
        (&found[1].finding, found[1].detected_at),
        (&out_of_range, later)
    );
    for f in &found {
        assert_eq!(f.subject, SUBJECT_BATCH);
        assert_eq!(f.instance_id, id);
        assert_eq!(f.workflow, "nightly");
        assert_eq!(f.instance_key, nightly.label());
        assert_eq!(f.finding.step, "run");
    }

    // the same finding again inserts nothing, alone or with the run
    let again = |findings_only: bool| {
        let mut c = commit(&lease, Vec::new(), later + Duration::minutes(1));
        c.findings_only = findings_only;
        c.runs = vec![RunWrite {
            subject: SUBJECT_BATCH,
            id: Some(id),
            run: nightly.clone(),
            findings: vec![out_of_range.clone()],
        }];
        c
    };
    assert_eq!(
        store.monitor_commit(again(false)).await.unwrap().findings,
        0
    );
    assert_eq!(store.monitor_commit(again(true)).await.unwrap().findings, 0);

    // findings_only: the findings, not the row
    let never = run_finding(FindingKind::NeverFinished, later);
    let mut c = commit(&lease, Vec::new(), later + Duration::minutes(2));
    c.findings_only = true;
    c.runs = vec![RunWrite {
        subject: SUBJECT_BATCH,
        id: Some(id),
        run: batch_run("nightly", None, Some(slot), RunStatus::Running),
        findings: vec![never.clone()],
    }];
    assert_eq!(
        store.monitor_commit(c).await.unwrap(),
        MonitorCommitted {
            instances: Vec::new(),
            runs: vec![id],
            findings: 1,
        }
    );
    let stored = store.get_run(id).await.unwrap().unwrap();
    assert_eq!(
        stored.run, nightly,
        "findings_only leaves the run as it was"
    );
    assert_eq!(stored.updated_at, later + Duration::minutes(1));
    let mut stray = commit(&lease, Vec::new(), later);
    stray.findings_only = true;
    stray.runs = vec![RunWrite {
        subject: SUBJECT_BATCH,
        id: None,
        run: nightly.clone(),
        findings: vec![run_finding(FindingKind::RunFailed, later)],
    }];
    assert!(
        store.monitor_commit(stray).await.is_err(),
        "findings need a stored run"
    );
    assert_eq!(store.list_findings(&batch).await.unwrap().len(), 3);

    // An instance with the run's id has a finding of the same (step, kind): both stand,
    // the subject tells them apart. (Ids are per table: make instances up to the run's.)
    let mut instance_id = 0;
    let mut instance_ids = Vec::new();
    while instance_id < id {
        let n = instance_ids.len();
        let key = format!("#{n}");
        instance_id = store
            .monitor_commit(commit(
                &lease,
                vec![new_write(
                    instance("o2c", Some(&key), &[("shop_order", &key)], t0()),
                    None,
                    Vec::new(),
                )],
                later,
            ))
            .await
            .unwrap()
            .instances[0];
        instance_ids.push(instance_id);
    }
    assert_eq!(instance_id, id, "instance ids count from 1 like run ids");
    let clash = run_finding(FindingKind::CountOutOfRange, later);
    let mut c = commit(
        &lease,
        vec![InstanceWrite {
            id: Some(id),
            ..new_write(
                store.get_instance(id).await.unwrap().unwrap().instance,
                None,
                vec![clash.clone()],
            )
        }],
        later,
    );
    c.findings_only = true;
    assert_eq!(store.monitor_commit(c).await.unwrap().findings, 1);
    let workflow = FindingFilter {
        subject: Some(SUBJECT_WORKFLOW.into()),
        ..all_findings()
    };
    let theirs = store.list_findings(&workflow).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        (
            theirs[0].subject.as_str(),
            theirs[0].instance_id,
            theirs[0].workflow.as_str(),
            &theirs[0].finding
        ),
        (SUBJECT_WORKFLOW, id, "o2c", &clash)
    );
    let ours = store
        .list_findings(&FindingFilter {
            kind: Some(FindingKind::CountOutOfRange),
            ..batch.clone()
        })
        .await
        .unwrap();
    assert_eq!(ours.len(), 1);
    assert_eq!((ours[0].instance_id, &ours[0].finding), (id, &out_of_range));
    assert!(
        store
            .list_findings(&batch)
            .await
            .unwrap()
            .iter()
            .all(|f| f.subject == SUBJECT_BATCH),
        "subject batch: the runs' findings only"
    );
    assert_eq!(
        store
            .list_findings(&FindingFilter {
                instance_id: Some(id),
                ..all_findings()
            })
            .await
            .unwrap()
            .len(),
        4,
        "without a subject, an instance_id matches both"
    );
    assert_eq!(
        store
            .list_findings(&FindingFilter {
                instance_id: Some(id),
                ..workflow.clone()
            })
            .await
            .unwrap(),
        theirs
    );

    // Merging the instance of the run's id into another moves its findings, not the run's.
    let survivor = instance_ids[0];
    let merge = InstanceWrite {
        id: Some(survivor),
        absorbed: vec![id],
        ..new_write(
            store
                .get_instance(survivor)
                .await
                .unwrap()
                .unwrap()
                .instance,
            None,
            Vec::new(),
        )
    };
    store
        .monitor_commit(commit(&lease, vec![merge], later))
        .await
        .unwrap();
    assert!(store.get_instance(id).await.unwrap().is_none());
    let moved = store.list_findings(&workflow).await.unwrap();
    assert_eq!(
        (moved[0].id, moved[0].instance_id),
        (theirs[0].id, survivor)
    );
    let kept = store.list_findings(&batch).await.unwrap();
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|f| f.instance_id == id));

    // an update of a run that does not exist fails the whole step
    let runs_before = store.list_runs(&runs(100)).await.unwrap();
    let findings_before = store.list_findings(&all_findings()).await.unwrap();
    let instances_before = store.list_instances(&instances(100)).await.unwrap();
    let mut c = commit(
        &lease,
        vec![new_write(
            instance("o2c", Some("#new"), &[("shop_order", "#new")], t0()),
            Some(later),
            vec![finding("confirmed", FindingKind::AtRisk, t0())],
        )],
        later + Duration::hours(1),
    );
    c.checkpoint = Some(serde_json::json!({"n": 2}));
    c.runs = vec![
        RunWrite {
            subject: SUBJECT_BATCH,
            id: None,
            run: batch_run("weekly", Some("w-1"), Some(slot), RunStatus::Running),
            findings: vec![run_finding(FindingKind::LateRun, slot)],
        },
        RunWrite {
            subject: SUBJECT_BATCH,
            id: Some(id),
            run: nightly.clone(),
            findings: vec![run_finding(FindingKind::RunFailed, later)],
        },
        RunWrite {
            subject: SUBJECT_BATCH,
            id: Some(id + 1000),
            run: nightly.clone(),
            findings: Vec::new(),
        },
    ];
    assert!(matches!(
        store.monitor_commit(c).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.list_runs(&runs(100)).await.unwrap(), runs_before);
    assert_eq!(
        store.list_findings(&all_findings()).await.unwrap(),
        findings_before
    );
    assert_eq!(
        store.list_instances(&instances(100)).await.unwrap(),
        instances_before
    );
    assert_eq!(store.monitor_next_due().await.unwrap(), None);
    assert_eq!(
        store.lease_state("monitor").await.unwrap(),
        Some(serde_json::json!({"n": 1}))
    );
}

// ---- alerting ----

fn alert(fp: &str, state: AlertState, incident: Option<i64>, at: DateTime<Utc>) -> AlertRecord {
    use switchyard_core::alerts::{Cause, Severity};
    AlertRecord {
        fingerprint: fp.into(),
        rule: "breach".into(),
        labels: [("alertname", "breach"), ("workflow", "o2c")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        state,
        severity: Severity::Critical,
        cause: Cause::BusinessProcess,
        summary: format!("alert {fp}"),
        count: 1,
        evidence: serde_json::json!({"instances": ["S00042"]}),
        suppressed: None,
        starts_at: at,
        updated_at: at,
        ends_at: None,
        incident_id: incident,
        acknowledged_at: None,
        acknowledged_by: None,
    }
}

fn incident(id: i64, at: DateTime<Utc>) -> IncidentRecord {
    use switchyard_core::alerts::{Cause, Severity};
    IncidentRecord {
        id,
        group_key: format!("0:{id}"),
        group_labels: Default::default(),
        receiver: "operations".into(),
        team: "operations".into(),
        title: format!("incident {id}"),
        severity: Severity::High,
        cause: Cause::BusinessProcess,
        status: IncidentStatus::Open,
        opened_at: at,
        notified_at: None,
        acknowledged_at: None,
        acknowledged_by: None,
        resolved_at: None,
        resolved_by: None,
        links: serde_json::json!({}),
    }
}

pub async fn alerts_commit_upserts_and_is_fenced(store: SharedStore) {
    let ttl = Duration::seconds(30);
    let a = store
        .acquire_lease("alerts", "node-a", t0(), ttl)
        .await
        .unwrap()
        .unwrap();
    let mut c = AlertsCommit::new(a.clone());
    c.checkpoint = Some(serde_json::json!({"after": 7}));
    c.alerts = vec![
        alert("f1", AlertState::Firing, Some(1), t0()),
        alert("f2", AlertState::Firing, None, t0() + Duration::seconds(1)),
    ];
    c.groups = vec![GroupRow {
        key: "0:{}".into(),
        body: serde_json::json!({"seq": 1}),
    }];
    c.open_incidents = vec![incident(1, t0())];
    c.notified_incidents = vec![(1, t0() + Duration::seconds(30))];
    c.entries = vec![NewIncidentEntry {
        incident_id: 1,
        at: t0(),
        kind: "opened".into(),
        actor: None,
        text: "opened".into(),
    }];
    assert!(!c.is_empty());
    store.alerts_commit(c).await.unwrap();
    assert_eq!(
        store.lease_state("alerts").await.unwrap(),
        Some(serde_json::json!({"after": 7}))
    );
    let all = store
        .list_alerts(&AlertFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|a| a.fingerprint.as_str())
            .collect::<Vec<_>>(),
        ["f2", "f1"],
        "newest change first"
    );
    assert_eq!(all[1], alert("f1", AlertState::Firing, Some(1), t0()));
    let of_incident = store
        .list_alerts(&AlertFilter {
            incident_id: Some(1),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_incident.len(), 1);
    let i = store.get_incident(1).await.unwrap().unwrap();
    assert_eq!(i.notified_at, Some(t0() + Duration::seconds(30)));
    assert_eq!(i.status, IncidentStatus::Open);
    assert_eq!(store.alert_groups().await.unwrap().len(), 1);

    // An upsert replaces; a resolve closes the incident once; deletes remove.
    let mut c = AlertsCommit::new(a.clone());
    let mut f1 = alert("f1", AlertState::Resolved, Some(1), t0());
    f1.count = 5;
    f1.ends_at = Some(t0() + Duration::minutes(5));
    f1.updated_at = t0() + Duration::minutes(5);
    c.alerts = vec![f1.clone()];
    c.delete_alerts = vec!["f2".into()];
    c.delete_groups = vec!["0:{}".into()];
    c.open_incidents = vec![incident(1, t0() + Duration::minutes(9))]; // already there: kept
    c.resolve_incidents = vec![(1, t0() + Duration::minutes(5))];
    store.alerts_commit(c).await.unwrap();
    assert_eq!(store.get_alert("f1").await.unwrap(), Some(f1));
    assert_eq!(store.get_alert("f2").await.unwrap(), None);
    assert!(store.alert_groups().await.unwrap().is_empty());
    let i = store.get_incident(1).await.unwrap().unwrap();
    assert_eq!(i.opened_at, t0());
    assert_eq!(i.status, IncidentStatus::Resolved);
    assert_eq!(i.resolved_by.as_deref(), Some("switchyard"));
    let firing = store
        .list_alerts(&AlertFilter {
            state: Some(AlertState::Firing),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(firing.is_empty());

    // Another node takes over: the stale owner writes nothing.
    let b = store
        .acquire_lease("alerts", "node-b", t0() + Duration::seconds(31), ttl)
        .await
        .unwrap()
        .unwrap();
    let mut stale = AlertsCommit::new(a.clone());
    stale.alerts = vec![alert("f3", AlertState::Firing, None, t0())];
    stale.open_incidents = vec![incident(2, t0())];
    match store.alerts_commit(stale).await {
        Err(Error::Fenced { name, epoch }) => {
            assert_eq!((name.as_str(), epoch), ("alerts", a.epoch))
        }
        other => panic!("a stale owner's commit must be fenced, got {other:?}"),
    }
    assert_eq!(store.get_alert("f3").await.unwrap(), None);
    assert_eq!(store.get_incident(2).await.unwrap(), None);
    store.alerts_commit(AlertsCommit::new(b)).await.unwrap();
}

pub async fn incident_actions_ack_comment_resolve(store: SharedStore) {
    let a = store
        .acquire_lease("alerts", "node-a", t0(), Duration::seconds(30))
        .await
        .unwrap()
        .unwrap();
    let mut c = AlertsCommit::new(a.clone());
    c.open_incidents = vec![incident(1, t0()), incident(2, t0() + Duration::minutes(1))];
    store.alerts_commit(c).await.unwrap();
    let act = |id, kind, min: i64| IncidentAction {
        id,
        kind,
        actor: "alice".into(),
        at: t0() + Duration::minutes(min),
        text: format!("{kind:?} by alice"),
    };
    assert!(matches!(
        store
            .incident_action(act(9, IncidentActionKind::Acknowledge, 1))
            .await,
        Err(Error::NotFound(_))
    ));
    let i = store
        .incident_action(act(1, IncidentActionKind::Acknowledge, 2))
        .await
        .unwrap();
    assert_eq!(i.status, IncidentStatus::Acknowledged);
    assert_eq!(i.acknowledged_at, Some(t0() + Duration::minutes(2)));
    assert_eq!(i.acknowledged_by.as_deref(), Some("alice"));
    // A second ack changes nothing (the first time stays).
    let again = store
        .incident_action(act(1, IncidentActionKind::Acknowledge, 3))
        .await
        .unwrap();
    assert_eq!(again.acknowledged_at, Some(t0() + Duration::minutes(2)));
    store
        .incident_action(act(1, IncidentActionKind::Comment, 4))
        .await
        .unwrap();
    let r = store
        .incident_action(act(1, IncidentActionKind::Resolve, 5))
        .await
        .unwrap();
    assert_eq!(r.status, IncidentStatus::Resolved);
    assert_eq!(r.resolved_by.as_deref(), Some("alice"));
    assert!(matches!(
        store
            .incident_action(act(1, IncidentActionKind::Acknowledge, 6))
            .await,
        Err(Error::Conflict(_))
    ));
    // The automatic resolve of an incident resolved by hand keeps the hand's.
    let mut c = AlertsCommit::new(a.clone());
    c.resolve_incidents = vec![(1, t0() + Duration::minutes(7))];
    store.alerts_commit(c).await.unwrap();
    let i = store.get_incident(1).await.unwrap().unwrap();
    assert_eq!(i.resolved_by.as_deref(), Some("alice"));
    assert_eq!(i.resolved_at, Some(t0() + Duration::minutes(5)));
    // Resolving without an ack counts as acknowledged then (for MTTA).
    let r = store
        .incident_action(act(2, IncidentActionKind::Resolve, 8))
        .await
        .unwrap();
    assert_eq!(r.acknowledged_at, r.resolved_at);

    let kinds: Vec<String> = store
        .incident_timeline(1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["acknowledged", "comment", "resolved"]);
    let open = store
        .list_incidents(&IncidentFilter {
            status: vec![IncidentStatus::Open, IncidentStatus::Acknowledged],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(open.is_empty());
    let all = store
        .list_incidents(&IncidentFilter {
            team: Some("operations".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|i| i.id).collect::<Vec<_>>(), [2, 1]);
    let older = store
        .list_incidents(&IncidentFilter {
            before_id: Some(2),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older.iter().map(|i| i.id).collect::<Vec<_>>(), [1]);
}

pub async fn silences_are_created_listed_and_expired(store: SharedStore) {
    let s = store
        .create_silence(NewSilence {
            matchers: vec![r#"cause="odoo_unavailable""#.into()],
            starts_at: t0(),
            ends_at: t0() + Duration::hours(2),
            created_by: "alice".into(),
            comment: "Odoo upgrade".into(),
            created_at: t0() - Duration::minutes(1),
        })
        .await
        .unwrap();
    assert!(s.id > 0);
    let later = store
        .create_silence(NewSilence {
            matchers: vec![r#"flow="x""#.into()],
            starts_at: t0() + Duration::hours(3),
            ends_at: t0() + Duration::hours(4),
            created_by: "bob".into(),
            comment: "later".into(),
            created_at: t0(),
        })
        .await
        .unwrap();
    let active = |t| {
        let store = store.clone();
        async move {
            store
                .list_silences(Some(t))
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(active(t0() - Duration::seconds(1)).await, Vec::<i64>::new());
    assert_eq!(active(t0()).await, [s.id]);
    assert_eq!(active(t0() + Duration::hours(3)).await, [later.id]);
    assert_eq!(store.list_silences(None).await.unwrap().len(), 2);
    let e = store
        .expire_silence(s.id, "carol", t0() + Duration::minutes(30))
        .await
        .unwrap();
    assert_eq!(e.expired_by.as_deref(), Some("carol"));
    assert_eq!(
        active(t0() + Duration::minutes(31)).await,
        Vec::<i64>::new()
    );
    // Expiring an ended one changes nothing; an unknown one is not found.
    let again = store
        .expire_silence(s.id, "dave", t0() + Duration::minutes(40))
        .await
        .unwrap();
    assert_eq!(again.expired_by.as_deref(), Some("carol"));
    assert!(matches!(
        store.expire_silence(9999, "x", t0()).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn attempt_stats_per_destination(store: SharedStore) {
    let ids = enqueue(
        &store,
        "as",
        vec![
            delivery("f", "carrier", Lane::Standard),
            delivery("f", "carrier", Lane::Standard),
            delivery("g", "odoo", Lane::Standard),
        ],
    )
    .await;
    let t = t0();
    let claimed = store
        .claim_deliveries(claim_req("a", Lane::Standard, 10, t))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    for d in &claimed {
        let mut r = if d.destination == "odoo" {
            result(d, "a", AttemptNext::Delivered, t)
        } else {
            result(d, "a", AttemptNext::RetryAt(t + Duration::seconds(5)), t)
        };
        if d.id == ids[1] {
            r.status = Some(429);
            r.started_at = t + Duration::seconds(1);
            r.error = Some("Too Many Requests".into());
        }
        store.complete_attempt(r).await.unwrap();
    }
    let stats = store.attempt_stats(t).await.unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(
        (
            stats[0].destination.as_str(),
            stats[0].attempts,
            stats[0].failed,
            stats[0].throttled
        ),
        ("carrier", 2, 2, 1)
    );
    assert_eq!(stats[0].last_status, Some(429));
    assert_eq!(stats[0].last_outcome, "transient");
    assert_eq!(stats[0].last_error.as_deref(), Some("Too Many Requests"));
    assert_eq!(
        (
            stats[1].destination.as_str(),
            stats[1].attempts,
            stats[1].failed
        ),
        ("odoo", 1, 0)
    );
    assert!(
        store
            .attempt_stats(t + Duration::seconds(2))
            .await
            .unwrap()
            .is_empty()
    );
}
