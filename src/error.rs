//! The daemon's error type: every error is either transient (worth retrying: a network
//! blip, a broker or registry that is briefly unavailable) or permanent (the operator must
//! change something, and the message says what).

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operator must act; the message names the object and the fix.
    #[error("{0}")]
    Permanent(String),
    /// Retrying the same operation later may succeed.
    #[error("{0}")]
    Transient(String),
    /// Another instance of the same connector took over (Kafka fenced our producer).
    #[error("{0}")]
    Fenced(String),
}

impl Error {
    pub fn permanent(msg: impl Into<String>) -> Self {
        Error::Permanent(msg.into())
    }

    pub fn transient(msg: impl Into<String>) -> Self {
        Error::Transient(msg.into())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
