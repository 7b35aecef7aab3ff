//! SQLite only: a reader holding an old snapshot neither blocks the writer nor stops the
//! background checkpointer; once it lets go, the WAL is copied back without anyone asking.

use std::time::{Duration, Instant};
use switchyard_store::conformance::event;
use switchyard_store::sqlite::SqliteStore;
use switchyard_store::{Store, StoreOptions};

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_reader_stalls_neither_writer_nor_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let store = SqliteStore::open(&path, None, &StoreOptions::default())
        .await
        .unwrap();
    store
        .append_events(vec![event("/s", "first", "t")])
        .await
        .unwrap();
    wait_for("the first checkpoint", || store.wal_backlog() == Some(0)).await;

    // A reader opens a transaction and keeps its snapshot.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 1);

    // The writer goes on committing while the snapshot is held.
    for chunk in 0..20 {
        let batch = (0..100)
            .map(|i| event("/s", &format!("e{chunk}-{i}"), "t"))
            .collect();
        store.append_events(batch).await.unwrap();
    }
    assert_eq!(store.count_events().await.unwrap(), 2001);
    // The checkpointer keeps running but cannot copy frames the reader may still need.
    wait_for("the checkpointer to see the backlog", || {
        store.wal_backlog().is_some_and(|b| b > 0)
    })
    .await;
    let still: i64 = reader
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, 1, "the reader's snapshot is intact");

    // The reader lets go: the backlog drains by itself.
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    wait_for("the backlog to drain", || store.wal_backlog() == Some(0)).await;
    store.close().await;
}
