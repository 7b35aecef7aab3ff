//! Secrets in configuration: always a reference (`env:NAME` or `file:/path`), never the value.
//! A [`Secret`] prints as `***` in `Debug` and `Display`; the value is read only by
//! [`Secret::expose`], at the moment it is needed.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("a secret must be a reference, \"env:NAME\" or \"file:/path\", never the value itself")]
    NotAReference,
}

impl Secret {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if let Some(name) = s.strip_prefix("env:")
            && !name.is_empty()
        {
            return Ok(Secret::Env(name.to_string()));
        }
        if let Some(path) = s.strip_prefix("file:")
            && !path.is_empty()
        {
            return Ok(Secret::File(PathBuf::from(path)));
        }
        Err(SecretError::NotAReference)
    }

    /// Reads the secret's value. Trailing newlines of files are removed.
    pub fn expose(&self) -> Result<String, SecretError> {
        match self {
            Secret::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))
            }
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| SecretError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Where the secret comes from, safe to print.
    pub fn reference(&self) -> String {
        match self {
            Secret::Env(n) => format!("env:{n}"),
            Secret::File(p) => format!("file:{}", p.display()),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Secret::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::parse("env:SOME_TOKEN").unwrap();
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.reference(), "env:SOME_TOKEN");
    }

    #[test]
    fn literal_values_are_refused() {
        assert_eq!(Secret::parse("hunter2"), Err(SecretError::NotAReference));
        assert_eq!(Secret::parse("env:"), Err(SecretError::NotAReference));
    }

    #[test]
    fn file_secret_is_trimmed() {
        let dir = std::env::temp_dir().join(format!("sy-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let s = Secret::parse(&format!("file:{}", dir.display())).unwrap();
        assert_eq!(s.expose().unwrap(), "s3cret");
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(s.expose(), Err(SecretError::File { .. })));
    }
}
