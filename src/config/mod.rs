//! Configuration: daemon settings (`config/pgcdc.yaml`) and one file per connector
//! (`connectors/*.yaml`).
//!
//! Both are YAML with unknown keys refused, `${VAR}` / `${VAR:-default}` substituted from the
//! environment inside the parsed values (never the text, so comments are left alone), and
//! a `validate()` pass whose errors name the file, the field path and what is allowed.
//!
//! - [`daemon`]: `config/pgcdc.yaml` (Kafka, the registry, HTTP, logging);
//! - [`connector`]: one connector file (tables, snapshot, value policies), its
//!   `postgres:` section in `postgres`;
//! - [`names`]: table and topic names as the files spell them;
//! - `env`: `${VAR}` substitution that keeps a value data, whatever it contains.

pub mod columns;
mod connector;
pub mod daemon;
mod env;
pub mod names;
mod outbox;
mod postgres;
#[cfg(test)]
mod tests;

pub use columns::*;
pub use connector::*;
pub use daemon::*;
pub use outbox::*;
pub use postgres::*;

pub use names::*;

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration problem: always permanent, always names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.display().to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Daemon settings

// ------------------------------------------------------------------------------------------
// Loading

pub(crate) fn parse_file<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "(file)", format!("cannot read: {e}")))?;
    parse_str(path, &text, &|k| std::env::var(k).ok())
}

pub(crate) fn parse_str<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let de = env::Expand {
        de: serde_yaml_ng::Deserializer::from_str(text),
        env,
    };
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(top level)".to_owned()
        } else {
            field
        };
        let msg = e.inner().to_string();
        // serde_yaml_ng repeats the parent path in front of its message; the field says it.
        let msg = match msg.split_once(": ") {
            Some((prefix, rest)) if field.starts_with(prefix) => rest.to_owned(),
            _ => msg,
        };
        ConfigError::new(path, field, msg)
    })
}

/// Every `*.yaml` / `*.yml` file of a connectors folder, sorted by name.
pub fn connector_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        ConfigError::new(
            dir,
            "(folder)",
            format!("cannot read connectors folder: {e}"),
        )
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}
