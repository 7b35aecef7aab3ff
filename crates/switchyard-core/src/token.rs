//! API tokens and roles. A token is shown once when created; only its SHA-256 hash is stored.
//! Tokens are 32 random bytes, so a fast hash is enough (no password stretching needed).

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Prefix of every token, so leaked tokens are recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "sy_";

/// What a token may do. Least privilege: `ingest` can only post events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Post events; nothing else.
    Ingest,
    /// Read everything (events, deliveries, incidents), change nothing.
    Viewer,
    /// Viewer, plus operate: replay, acknowledge, run jobs.
    Operator,
    /// Everything, including tokens and configuration.
    Admin,
}

/// What an API route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Ingest,
    Read,
    Operate,
    Administer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Ingest, Role::Viewer, Role::Operator, Role::Admin];

    pub fn allows(self, p: Permission) -> bool {
        matches!(
            (self, p),
            (Role::Admin, _)
                | (Role::Ingest, Permission::Ingest)
                | (Role::Viewer, Permission::Read)
                | (Role::Operator, Permission::Read | Permission::Operate)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role \"{s}\" (ingest, viewer, operator, admin)"))
    }
}

/// A new random token in clear text. Print it once; store [`hash_token`] of it.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Token names are what audit records show as the actor.
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("token names must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err("token names may contain letters, digits, '-', '_', '.' and '@'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_privilege() {
        assert!(Role::Ingest.allows(Permission::Ingest));
        assert!(!Role::Ingest.allows(Permission::Read));
        assert!(!Role::Viewer.allows(Permission::Ingest));
        assert!(!Role::Viewer.allows(Permission::Operate));
        assert!(Role::Operator.allows(Permission::Operate));
        assert!(!Role::Operator.allows(Permission::Administer));
        assert!(Role::Admin.allows(Permission::Administer));
        assert!(Role::Admin.allows(Permission::Ingest));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn roles_parse() {
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
        assert!(check_token_name("ci-bot").is_ok());
        assert!(check_token_name("bad name").is_err());
    }
}
