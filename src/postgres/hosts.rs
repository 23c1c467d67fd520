//! Several hosts for one database, as libpq tries them: in order, keeping the first that
//! answers and has the `target_session_attrs` asked for (after a failover, the promoted
//! standby). Every connection pgcdc opens goes through [`first_host`].

use std::future::Future;
use std::time::Duration;

use crate::config::{PostgresConfig, TargetSessionAttrs};
use crate::error::{Code, Error, Result};

/// How long one host may take to accept a session (TCP, TLS, authentication, the
/// attributes check): a host that black-holes packets, or a frozen server whose kernel
/// still accepts the connection, is given up on after this and the next host is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
        return match within(&server, open(one)).await? {
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
    // The host that last did comes first: a dead first host costs its timeout once, not on
    // every connection the connector opens. Its attributes are checked all the same.
    let preferred = last_good(&cfg.host, None);
    let mut order: Vec<usize> = (0..endpoints.len()).collect();
    if let Some(p) = preferred.filter(|p| *p < order.len()) {
        order.retain(|i| *i != p);
        order.insert(0, p);
    }
    for i in order {
        let one = endpoints[i].clone();
        let server = format!("{}:{}", one.host, one.port);
        match within(&server, open(one)).await {
            Ok(Some(t)) => {
                last_good(&cfg.host, Some(i));
                return Ok(t);
            }
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

/// `open`, or a transient error naming `server` after [`CONNECT_TIMEOUT`].
async fn within<T>(server: &str, open: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(CONNECT_TIMEOUT, open)
        .await
        .unwrap_or_else(|_| {
            Err(Error::transient(
                Code::PostgresConnect,
                format!(
                    "PostgreSQL {server}: no session within {}s (the host does not answer, or the server is frozen)",
                    CONNECT_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// The index of the host of `hosts` that last gave a session; `set` records one.
fn last_good(hosts: &str, set: Option<usize>) -> Option<usize> {
    static LAST: std::sync::Mutex<Option<std::collections::HashMap<String, usize>>> =
        std::sync::Mutex::new(None);
    let mut m = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let map = m.get_or_insert_with(Default::default);
    match set {
        Some(i) => {
            map.insert(hosts.to_owned(), i);
            Some(i)
        }
        None => map.get(hosts).copied(),
    }
}
