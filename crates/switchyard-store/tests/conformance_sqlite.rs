//! The conformance suite on the embedded backend: a real SQLite file per test.

use switchyard_store::{SharedStore, StoreOptions, open, store_conformance_suite};

async fn fresh() -> Option<SharedStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.keep().join("conformance.db");
    let store = open(
        &format!("sqlite://{}", path.display()),
        &StoreOptions::default(),
    )
    .await
    .expect("open sqlite store");
    Some(store)
}

store_conformance_suite!(fresh);
