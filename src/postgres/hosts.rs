//! Several hosts for one database, as libpq tries them: in order, keeping the first that
//! answers and has the `target_session_attrs` asked for (after a failover, the promoted
//! standby). Every connection pgcdc opens goes through [`first_host`].

use std::future::Future;

use crate::config::{PostgresConfig, TargetSessionAttrs};
use crate::error::{Code, Error, Result};

/// The SQL that says whether a session has `attrs`, answered `on`/`off` or `t`/`f`, and
/// the value that means yes.
pub(crate) fn check_sql(attrs: TargetSessionAttrs) -> Option<(&'static str, &'static str)> {
    match attrs {
        TargetSessionAttrs::Any => None,
        TargetSessionAttrs::ReadWrite => Some(("SHOW transaction_read_only", "off")),
        TargetSessionAttrs::Primary => Some(("SELECT pg_is_in_recovery()", "f")),
    }
}

/// Opens a session with `open` on each host of `cfg` in turn; `open` returns None for a
/// session without the `target_session_attrs` (it closes it). With one host its error is
/// returned as it is; with several, a permanent error (authentication, TLS) of any host
/// wins, else one transient error lists what every host said.
pub(crate) async fn first_host<T, F, Fut>(cfg: &PostgresConfig, mut open: F) -> Result<T>
where
    F: FnMut(PostgresConfig) -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let endpoints = cfg
        .endpoints()
        .map_err(|m| Error::permanent(Code::Config, format!("postgres.host: {m}")))?;
    let attrs = cfg.target_session_attrs;
    let not_fit = |server: &str| {
        format!(
            "{server} is {} (target_session_attrs: {})",
            if attrs == TargetSessionAttrs::Primary {
                "in recovery (a standby)"
            } else {
                "read-only"
            },
            attrs.as_str()
        )
    };
    if endpoints.len() == 1 {
        let one = endpoints
            .into_iter()
            .next()
            .ok_or_else(|| Error::permanent(Code::Config, "postgres.host: no host".to_owned()))?;
        let server = format!("{}:{}", one.host, one.port);
        return match open(one).await? {
            Some(t) => Ok(t),
            None => Err(Error::transient(
                Code::PostgresConnect,
                format!(
                    "PostgreSQL {}; pgcdc retries until it is promoted",
                    not_fit(&server)
                ),
            )),
        };
    }
    let mut notes = Vec::new();
    let mut permanent: Option<Error> = None;
    for one in endpoints {
        let server = format!("{}:{}", one.host, one.port);
        match open(one).await {
            Ok(Some(t)) => return Ok(t),
            Ok(None) => notes.push(not_fit(&server)),
            Err(e) => {
                notes.push(e.to_string());
                if !e.is_transient() && permanent.is_none() {
                    permanent = Some(e);
                }
            }
        }
    }
    if let Some(e) = permanent {
        return Err(e);
    }
    Err(Error::transient(
        Code::PostgresConnect,
        format!(
            "PostgreSQL {}: no host will do: {}; pgcdc retries",
            cfg.host,
            notes.join("; ")
        ),
    ))
}
