//! `pgcdc tail`: reads topics with `read_committed`, decodes keys and values through the
//! schema registry as any consumer would, and prints one JSON object per record (rendered
//! by [`crate::consume::json`]).

use std::io::Write;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::config::DaemonConfig;
use crate::consume::{Reader, Start};
use crate::error::Result;

pub struct TailOptions {
    /// Topic names, or regular expressions starting with `^`.
    pub topics: Vec<String>,
    pub from_beginning: bool,
    /// Stop after this many records.
    pub max_records: Option<usize>,
    /// Stop when nothing arrives for this long.
    pub idle_timeout: Option<Duration>,
}

pub async fn run(
    daemon: &DaemonConfig,
    opts: &TailOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let reader = Reader::new(
        &daemon.kafka,
        &daemon.schema_registry,
        "pgcdc-tail",
        if opts.from_beginning {
            Start::Beginning
        } else {
            Start::End
        },
    )?;
    let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
    reader.subscribe(&topics)?;
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    let idle = opts
        .idle_timeout
        .unwrap_or(Duration::from_secs(3600 * 24 * 365));
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.changed() => return Ok(()),
            r = reader.next(idle) => match r? {
                None => return Ok(()),
                Some(m) => m,
            },
        };
        let d = reader.decode(&msg).await?;
        let line = json!({
            "topic": d.topic,
            "partition": d.partition,
            "offset": d.offset,
            "key": d.key,
            "value": d.value,
        });
        let mut out = stdout.lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        printed += 1;
        if opts.max_records.is_some_and(|m| printed >= m) {
            return Ok(());
        }
    }
}
