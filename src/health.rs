//! Each connector's state, as the supervisor and the pipeline report it, for `/healthz`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value as Json};

/// Where a connector is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Connecting, checking, snapshotting before the stream starts.
    Starting,
    /// Streaming (or running its `initial_only` snapshot).
    Running,
    /// Another instance of the connector holds the slot; this one takes over when it is
    /// released.
    Standby,
    /// A transient error stopped the run; the supervisor restarts it after a backoff.
    Restarting(Problem),
    /// A permanent error stopped it; the operator must act.
    Failed(Problem),
    /// It finished (a completed `initial_only` snapshot, or a requested shutdown).
    Stopped,
}

/// The error that stopped a run, as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub error: String,
    pub next_step: String,
}

impl Problem {
    pub fn of(e: &crate::error::Error) -> Self {
        Problem {
            code: e.code().as_str(),
            error: e.to_string(),
            next_step: e.next_step().to_owned(),
        }
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Standby => "standby",
            State::Restarting(_) => "restarting",
            State::Failed(_) => "failed",
            State::Stopped => "stopped",
        }
    }

    /// Whether `/healthz` may answer 200 while a connector is in this state.
    fn healthy(&self) -> bool {
        matches!(self, State::Running | State::Standby | State::Stopped)
    }
}

static STATES: Mutex<BTreeMap<String, State>> = Mutex::new(BTreeMap::new());

pub fn set(connector: &str, state: State) {
    let mut m = STATES.lock().unwrap_or_else(|e| e.into_inner());
    m.insert(connector.to_owned(), state);
}

/// Forgets a connector (its file was removed).
pub fn remove(connector: &str) {
    let mut m = STATES.lock().unwrap_or_else(|e| e.into_inner());
    m.remove(connector);
}

/// Whether every connector is healthy, and a JSON body naming each one's state (and the
/// error of those that are not).
pub fn report() -> (bool, Json) {
    let m = STATES.lock().unwrap_or_else(|e| e.into_inner());
    let healthy = m.values().all(State::healthy);
    let connectors: Vec<Json> = m
        .iter()
        .map(|(name, s)| {
            let mut o = json!({"name": name, "state": s.name()});
            if let State::Restarting(p) | State::Failed(p) = s {
                o["code"] = json!(p.code);
                o["error"] = json!(p.error);
                o["next_step"] = json!(p.next_step);
            }
            o
        })
        .collect();
    let status = if healthy { "ok" } else { "unavailable" };
    (healthy, json!({"status": status, "connectors": connectors}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One connector's entry (other tests of this process may have set their own).
    fn connector(body: &Json, name: &str) -> Json {
        body["connectors"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    }

    #[test]
    fn one_failing_connector_makes_the_report_unhealthy_and_is_named() {
        set("h-a", State::Running);
        set("h-b", State::Starting);
        let (ok, body) = report();
        assert!(!ok, "{body}");
        set("h-b", State::Running);
        let (_, body) = report();
        assert_eq!(connector(&body, "h-b")["state"], "running");
        let e = crate::error::Error::transient(
            crate::error::Code::KafkaUnavailable,
            "Kafka 127.0.0.1:1 did not answer",
        );
        set("h-a", State::Restarting(Problem::of(&e)));
        let (ok, body) = report();
        assert!(!ok);
        assert_eq!(body["status"], "unavailable");
        let a = connector(&body, "h-a");
        assert_eq!(a["state"], "restarting");
        assert_eq!(a["code"], "kafka.unavailable");
        assert_eq!(a["error"], "Kafka 127.0.0.1:1 did not answer");
        assert_eq!(
            a["next_step"],
            crate::error::Code::KafkaUnavailable.next_step()
        );
    }
}
