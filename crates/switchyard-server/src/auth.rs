//! Who is calling: API tokens from `Authorization: Bearer …`, checked against the store's
//! hashed tokens, with a short-lived cache so ingest does not read the store per request.
//! A revocation on this node takes effect at once; on other nodes within [`CACHE_TTL`].

use crate::error::{ApiError, Problem};
use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use switchyard_core::token::{Permission, Role, hash_token};
use switchyard_store::SharedStore;

pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The authenticated caller; `name` is the actor in audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: i64,
    pub name: String,
    pub role: Role,
}

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, Option<Caller>)>>,
}

impl TokenCache {
    pub fn forget(&self, token_id: i64) {
        self.entries
            .lock()
            .expect("token cache")
            .retain(|_, (_, c)| c.as_ref().is_none_or(|c| c.token_id != token_id));
    }

    async fn lookup(&self, store: &SharedStore, hash: &str) -> Result<Option<Caller>, ApiError> {
        if let Some((at, c)) = self.entries.lock().expect("token cache").get(hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(c.clone());
        }
        let rec = store.token_by_hash(hash).await?;
        let caller = rec.filter(|r| r.revoked_at.is_none()).map(|r| Caller {
            token_id: r.id,
            name: r.name,
            role: r.role,
        });
        let mut entries = self.entries.lock().expect("token cache");
        if entries.len() > 10_000 {
            entries.clear(); // bounded: unknown tokens must not grow it without limit
        }
        entries.insert(hash.to_string(), (Instant::now(), caller.clone()));
        Ok(caller)
    }
}

/// Checks the request's bearer token and that its role allows `need`.
pub async fn authorize(
    cache: &TokenCache,
    store: &SharedStore,
    headers: &HeaderMap,
    need: Permission,
) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            Problem::Unauthenticated,
            "missing Authorization header; send `Authorization: Bearer <token>`",
        ));
    };
    // The scheme name is case-insensitive (RFC 9110, 11.1).
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Problem::Unauthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    let caller = cache
        .lookup(store, &hash_token(token))
        .await?
        .ok_or_else(|| ApiError::new(Problem::Unauthenticated, "unknown or revoked token"))?;
    if !caller.role.allows(need) {
        return Err(ApiError::new(
            Problem::Forbidden,
            format!(
                "token \"{}\" has role {}, which does not allow this",
                caller.name, caller.role
            ),
        ));
    }
    Ok(caller)
}
