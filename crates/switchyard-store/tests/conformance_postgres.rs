//! The conformance suite on the shared backend: a real PostgreSQL server, a fresh schema
//! per test. The server's URL comes from `SWITCHYARD_TEST_PG_URL`; without it these tests
//! skip with a notice (CI always sets it, and fails if it is missing).

use switchyard_store::{SharedStore, StoreOptions, open, store_conformance_suite};

async fn fresh() -> Option<SharedStore> {
    let Ok(base) = std::env::var("SWITCHYARD_TEST_PG_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "SWITCHYARD_TEST_PG_URL must be set in CI"
        );
        eprintln!("SKIPPED: PostgreSQL conformance test (set SWITCHYARD_TEST_PG_URL to run it)");
        return None;
    };
    let schema = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    let store = open(
        &format!("{base}{sep}schema={schema}"),
        &StoreOptions::default(),
    )
    .await
    .expect("open postgres store");
    Some(store)
}

store_conformance_suite!(fresh);
