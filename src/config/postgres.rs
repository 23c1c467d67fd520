//! A connector's `postgres:` section: where the database is (one host or several, libpq
//! style), who logs in, and TLS.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub const DEFAULT_PG_PORT: u16 = 5432;

/// A password or other secret: never printed by `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The YAML spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// `host`, `user` and `dbname` have no default: empty, [`ConnectorConfig::validate`]
/// refuses them, naming the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// One host, or several in libpq's style (`a,b` with a common `port`, or
    /// `a:5432,b:5433`), tried in order: see [`PostgresConfig::endpoints`].
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// CA bundle for verify-ca / verify-full.
    pub sslrootcert: Option<PathBuf>,
    /// libpq's `target_session_attrs`: which of the hosts will do.
    pub target_session_attrs: TargetSessionAttrs,
}

/// libpq's `target_session_attrs`, for a list of hosts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TargetSessionAttrs {
    /// The first host that accepts the connection.
    #[default]
    Any,
    /// The first that accepts writes (`transaction_read_only` is off).
    ReadWrite,
    /// The first that is not in recovery (not a standby).
    Primary,
}

impl TargetSessionAttrs {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetSessionAttrs::Any => "any",
            TargetSessionAttrs::ReadWrite => "read-write",
            TargetSessionAttrs::Primary => "primary",
        }
    }
}

impl PostgresConfig {
    /// One configuration per host of `host`, in order, each with its own `host` and `port`
    /// (`[v6]:port` and `v6` literals are understood). Errors name the entry.
    pub fn endpoints(&self) -> Result<Vec<PostgresConfig>, String> {
        let mut out = Vec::new();
        for entry in self.host.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(format!("{:?} has an empty host entry", self.host));
            }
            let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
                let (h, tail) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("{entry:?}: missing ']'"))?;
                match tail.strip_prefix(':') {
                    Some(p) => (h, Some(p)),
                    None if tail.is_empty() => (h, None),
                    None => return Err(format!("{entry:?}: expected [address]:port")),
                }
            } else {
                match entry.split_once(':') {
                    // More than one colon without brackets: an IPv6 literal, no port.
                    Some((_, p)) if p.contains(':') => (entry, None),
                    Some((h, p)) => (h, Some(p)),
                    None => (entry, None),
                }
            };
            let port = match port {
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("{entry:?}: {p:?} is not a port number"))?,
                None => self.port,
            };
            out.push(PostgresConfig {
                host: host.to_owned(),
                port,
                ..self.clone()
            });
        }
        Ok(out)
    }

    /// `host:port`, or the list as written for several hosts.
    pub fn server(&self) -> String {
        if self.host.contains(',') {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: String::new(),
            port: DEFAULT_PG_PORT,
            user: String::new(),
            password: None,
            dbname: String::new(),
            sslmode: SslMode::default(),
            sslrootcert: None,
            target_session_attrs: TargetSessionAttrs::Any,
        }
    }
}
