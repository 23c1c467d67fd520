//! Taking over from a Debezium PostgreSQL connector: `pgcdc takeover debezium`, or a
//! connector's `from_debezium` on its first start. pgcdc continues Debezium's stream on its
//! slot, publication, topics and subjects, with no snapshot: it reads where Debezium stopped
//! (Kafka Connect's offsets, or an explicit LSN), refuses what is unsafe, and writes its
//! first checkpoint there. Nothing is written before every check passed.

use crate::avro::registry::Registry;
use crate::avro::schema::{key_schema, topic_name};
use crate::checkpoint::debezium::{DebeziumOffset, Seam};
use crate::checkpoint::{Checkpoint, CHECKPOINT_VERSION};
use crate::config::{ConnectorConfig, DaemonConfig, FromDebezium};
use crate::error::{Code, Error, Result};
use crate::kafka::producer::TxProducer;
use crate::postgres::catalog::SlotInfo;
use crate::postgres::Catalog;
use crate::Lsn;

/// What a takeover found and will do.
#[derive(Debug)]
pub struct Takeover {
    /// Where Debezium's position was read.
    pub source: String,
    pub offset: DebeziumOffset,
    pub seam: Seam,
    pub slot: SlotInfo,
    /// Captured tables with their topics.
    pub tables: Vec<Subjects>,
}

fn refused(conn: &ConnectorConfig, msg: String) -> Error {
    Error::permanent(
        Code::Takeover,
        format!(
            "connector {}: takeover from Debezium refused: {msg}",
            conn.name
        ),
    )
}

/// Every check, in the order an operator fixes them; nothing is written. `ck` is pgcdc's
/// own checkpoint of the connector: a connector that has one took over already.
pub async fn plan(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
    from: &FromDebezium,
    ck: Option<&Checkpoint>,
) -> Result<Takeover> {
    if let Some(c) = ck {
        return Err(refused(
            conn,
            format!(
                "it has a checkpoint of its own at {} in {}: it streams already (run pgcdc run); \
                 to take over again, delete that record first",
                c.lsn, daemon.kafka.offsets_topic
            ),
        ));
    }
    let (offset, source) = debezium_offset(daemon, conn, from).await?;
    if let Some(why) = offset.unsafe_reason() {
        return Err(refused(conn, format!("{why} ({source})")));
    }
    let seam = offset
        .seam(from.connector.as_deref().unwrap_or("(--lsn)"))
        .ok_or_else(|| refused(conn, format!("no position in {source}")))?;
    let commit = offset.commit().unwrap_or(Lsn::ZERO);

    let mut catalog = Catalog::connect(
        &conn.postgres,
        conn.numeric_mode,
        &format!("pgcdc-{}", conn.name),
    )
    .await?;
    let slot = check_slot(conn, &catalog, commit, &source).await?;
    // The stream after the seam must be filtered as Debezium's was: by its publication,
    // which therefore exists already (pgcdc would otherwise create one now, after the
    // changes it must send, and PostgreSQL would decode them without it).
    let publication = conn.publication_name();
    if !catalog.publication_exists(&publication).await? {
        return Err(refused(conn, format!(
            "publication {publication} does not exist: set publication to Debezium's publication.name \
             (dbz_publication unless it was set), the one its slot streamed through"
        )));
    }
    let problems = catalog.preflight(conn).await?.problems;
    if let Some(first) = problems.first() {
        return Err(Error::permanent(
            Code::Preflight,
            format!(
                "connector {}: {first} (run pgcdc validate for every check)",
                conn.name
            ),
        ));
    }
    let tables = check_subjects(daemon, conn, &mut catalog).await?;
    Ok(Takeover {
        source,
        offset,
        seam,
        slot,
        tables,
    })
}

/// Debezium's newest offsets record for this connector's `topic_prefix`, or the `lsn`
/// given, with where it was read.
async fn debezium_offset(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
    from: &FromDebezium,
) -> Result<(DebeziumOffset, String)> {
    if let Some(l) = &from.lsn {
        let lsn: Lsn = l
            .parse()
            .map_err(|e| refused(conn, format!("--lsn {l}: {e}")))?;
        return Ok((DebeziumOffset::at(lsn), format!("the LSN given, {lsn}")));
    }
    let topic = &from.offsets_topic;
    let found = crate::kafka::offsets::connect_offsets(
        &daemon.kafka,
        topic,
        &conn.topic_prefix,
        &conn.name,
    )
    .await?;
    let Some(found) = found else {
        return Err(refused(conn, format!(
            "Kafka Connect's offsets topic {topic} does not exist on {}: name the worker's offset.storage.topic \
             (--offsets-topic, from_debezium.offsets_topic), or give Debezium's last committed LSN (--lsn)",
            daemon.kafka.bootstrap_servers
        )));
    };
    let (name, (value, at)) = match &from.connector {
        Some(n) => match found.get(n) {
            Some(v) => (n.clone(), v.clone()),
            None => {
                return Err(refused(conn, format!(
                    "{topic} holds no offsets of a Debezium connector {n} with topic.prefix {} (it has {}): \
                     check the connector name and topic_prefix",
                    conn.topic_prefix,
                    names(&found)
                )))
            }
        },
        None if found.is_empty() => {
            return Err(refused(conn, format!(
                "{topic} holds no Debezium offsets for topic.prefix {}: set topic_prefix to Debezium's topic.prefix, \
                 or name the worker's offset.storage.topic (--offsets-topic, from_debezium.offsets_topic)",
                conn.topic_prefix
            )))
        }
        None if found.len() == 1 => {
            let mut found = found;
            match found.pop_first() {
                Some(one) => one,
                None => return Err(refused(conn, format!("{topic} changed while read"))),
            }
        }
        None => {
            return Err(refused(conn, format!(
                "{topic} holds offsets of {} for topic.prefix {}: name the Debezium connector (--debezium-connector, from_debezium.connector)",
                names(&found),
                conn.topic_prefix
            )))
        }
    };
    let source = format!("Kafka Connect's offsets topic {topic}, connector {name}, record {at}");
    let offset = DebeziumOffset::parse(&value).map_err(|e| {
        refused(
            conn,
            format!(
                "the offsets record in {source} is not a Debezium PostgreSQL offset ({e}): check --offsets-topic \
                 and --debezium-connector, or give Debezium's last committed LSN (--lsn)"
            ),
        )
    })?;
    Ok((offset, source))
}

fn names(found: &crate::kafka::offsets::ConnectOffsets) -> String {
    if found.is_empty() {
        return "none".to_owned();
    }
    found.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The slot Debezium read: there, idle, pgoutput, valid, and not past Debezium's offset.
async fn check_slot(
    conn: &ConnectorConfig,
    catalog: &Catalog,
    commit: Lsn,
    source: &str,
) -> Result<SlotInfo> {
    let name = conn.slot_name();
    let Some(slot) = catalog.slot(&name).await? else {
        return Err(refused(conn, format!(
            "replication slot {name} does not exist: set slot to Debezium's slot.name (the changes after its offset are only in that slot)"
        )));
    };
    if slot.plugin.as_deref() != Some("pgoutput") {
        return Err(refused(conn, format!(
            "replication slot {name} decodes with plugin {}, pgcdc reads pgoutput only: \
             Debezium's stream cannot be continued on it; start pgcdc on a new slot with a snapshot",
            slot.plugin.as_deref().unwrap_or("(none)")
        )));
    }
    if slot.active {
        let pid = slot
            .active_pid
            .map_or_else(|| "?".to_owned(), |p| p.to_string());
        let app = match slot.active_pid {
            Some(p) => catalog.application_name(p).await?.unwrap_or_default(),
            None => String::new(),
        };
        return Err(refused(conn, format!(
            "replication slot {name} is active (walsender pid {pid}, application_name {app:?}): Debezium still runs; \
             stop its connector first (PUT /connectors/<name>/stop on Kafka Connect) and run the takeover again"
        )));
    }
    if let Some(why) = slot.invalidated() {
        return Err(refused(conn, format!(
            "replication slot {name} was invalidated by PostgreSQL ({why}): the changes after Debezium's offset are gone; \
             start pgcdc on a new slot with a snapshot"
        )));
    }
    let flushed = slot.confirmed_flush.unwrap_or(Lsn::ZERO);
    if flushed > commit {
        return Err(refused(conn, format!(
            "replication slot {name} has confirmed_flush_lsn {flushed}, past Debezium's last committed position {commit} \
             ({source}): transactions in between are no longer in the slot and may never have reached Kafka; \
             if you know they did, pass --lsn {flushed}, else start pgcdc on a new slot with a snapshot"
        )));
    }
    Ok(slot)
}

/// Each captured table's topic, after checking that its subjects take pgcdc's key and
/// value schemas as their next versions and mean the same by them.
async fn check_subjects(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
    catalog: &mut Catalog,
) -> Result<Vec<Subjects>> {
    let registry = Registry::new(&daemon.schema_registry)?;
    let mut out = Vec::new();
    for name in catalog.captured_table_names(conn).await? {
        let rel = catalog.snapshot_table(&name, conn).await?.relation;
        let topic = topic_name(&conn.topic_prefix, &rel.schema, &rel.table);
        let key_subject = format!("{topic}-key");
        let key = key_schema(&conn.topic_prefix, &rel)?;
        let key_theirs = registry.latest(&key_subject).await?;
        if let (Some(k), Some((id, _))) = (&key, &key_theirs) {
            // The key bytes (schema id included) pick the partition and are what compaction
            // matches: they must be Debezium's, not a compatible variant of them.
            if registry.lookup(&key_subject, &k.json).await? != Some(*id) {
                let same = match &key_theirs {
                    Some((_, theirs)) => crate::avro::seam::mismatches(theirs, &json(&k.json)?),
                    None => Vec::new(),
                };
                return Err(refused(conn, format!(
                    "schema registry subject {key_subject} (table {name}): pgcdc's key schema is not the newest one \
                     Debezium registered (id {id}){}: the key bytes would differ, so a key would move partition and \
                     compaction would keep Debezium's records; the key columns differ (message.key.columns, or the \
                     table's primary key changed): pgcdc cannot continue this topic",
                    if same.is_empty() { String::new() } else { format!(" ({})", same.join("; ")) }
                )));
            }
        }
        let subject = format!("{topic}-value");
        let (rules, fields, v) = super::reader::value_schema(conn, &rel)?;
        // The stream falls back to all-optional fields where a subject refuses NOT NULL
        // ones (see the reader's codec): refused only when that is refused too.
        if let Some(why) = registry.refuses(&subject, &v.json).await? {
            let optional = crate::avro::fields::all_optional(&fields);
            let v =
                crate::avro::schema::envelope_schema(&conn.topic_prefix, &rel, &optional, &rules)?;
            if registry.refuses(&subject, &v.json).await?.is_some() {
                return Err(subject_refuses(conn, &subject, &name, &why));
            }
        }
        let value_theirs = registry.latest(&subject).await?;
        if let Some((_, theirs)) = &value_theirs {
            if !crate::avro::seam::is_envelope(theirs) {
                return Err(refused(conn, format!(
                    "schema registry subject {subject} (table {name}) holds no change event envelope (before, after, op): \
                     Debezium's events were rewritten by an SMT (such as ExtractNewRecordState); pgcdc writes the envelope \
                     and cannot continue this topic"
                )));
            }
            let m = crate::avro::seam::mismatches(theirs, &json(&v.json)?);
            if !m.is_empty() {
                return Err(refused(conn, format!(
                    "schema registry subject {subject} (table {name}) holds another type for what pgcdc would send: {}; \
                     Debezium ran with a setting pgcdc does not follow (time.precision.mode, decimal.handling.mode, \
                     interval.handling.mode, binary.handling.mode...): see README, Switching from Debezium",
                    m.join("; ")
                )));
            }
        }
        out.push(Subjects {
            table: name,
            topic,
            existed: key_theirs.is_some() || value_theirs.is_some(),
        });
    }
    Ok(out)
}

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| Error::permanent(Code::Internal, format!("pgcdc's schema is not JSON: {e}")))
}

/// A captured table, its topic, and whether Debezium registered its subjects.
#[derive(Debug)]
pub struct Subjects {
    pub table: String,
    pub topic: String,
    pub existed: bool,
}

fn subject_refuses(conn: &ConnectorConfig, subject: &str, table: &str, why: &str) -> Error {
    refused(
        conn,
        format!(
            "schema registry subject {subject} (table {table}) refuses pgcdc's schema as its next version: {why}; \
             compare the table's columns and the connector's settings (numeric_mode, columns) with Debezium's, \
             or relax the subject's compatibility (PUT /config/{subject})"
        ),
    )
}

impl Takeover {
    /// What was found and what will happen, for the operator to read before it does.
    pub fn describe(&self, conn: &ConnectorConfig, daemon: &DaemonConfig) -> String {
        let o = &self.offset;
        let lsn = |l: Option<Lsn>| l.map_or_else(|| "-".to_owned(), |l| l.to_string());
        let mut s = format!("Debezium's position ({}):\n", self.source);
        s += &format!(
            "  lsn_commit {}  lsn_proc {}  lsn {}  txId {}  ts_usec {}  messageType {}\n",
            lsn(o.lsn_commit),
            lsn(o.lsn_proc),
            lsn(o.lsn),
            o.tx_id.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            o.ts_usec.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            o.message_type.as_deref().unwrap_or("-"),
        );
        s += &format!(
            "Replication slot {}: plugin pgoutput, inactive, confirmed_flush_lsn {}\n",
            conn.slot_name(),
            lsn(self.slot.confirmed_flush)
        );
        s += &format!(
            "pgcdc connector {} continues Debezium's stream, with no snapshot:\n",
            conn.name
        );
        s += &format!(
            "  slot {}, publication {}; transactions that committed before {} are skipped (Debezium delivered them)\n",
            conn.slot_name(),
            conn.publication_name(),
            self.seam.commit
        );
        if let Some(w) = &self.seam.within {
            s += &format!(
                "  Debezium stopped inside the next transaction: its changes before {w} are skipped, the rest is sent (the change at {w} again)\n"
            );
        }
        for t in &self.tables {
            let (table, topic) = (&t.table, &t.topic);
            if t.existed {
                s += &format!("  {table} -> topic {topic} (subjects {topic}-key, {topic}-value: pgcdc's schemas accepted)\n");
            } else {
                s += &format!(
                    "  {table} -> topic {topic}: NEW, Debezium registered no subject for it (a table it never wrote, \
                     or a connector that names its topics otherwise: then stop here)\n"
                );
            }
        }
        s += &format!(
            "  its first checkpoint goes to {}; from the first change after the seam it is exactly-once",
            daemon.kafka.offsets_topic
        );
        s
    }

    /// pgcdc's first checkpoint of the connector: at Debezium's last committed position,
    /// with the seam, in its own Kafka transaction.
    pub async fn write(
        &self,
        conn: &ConnectorConfig,
        producer: &TxProducer,
        offsets_topic: &str,
    ) -> Result<Checkpoint> {
        let ck = Checkpoint {
            version: CHECKPOINT_VERSION,
            connector: conn.name.clone(),
            lsn: self.seam.commit.clone(),
            commit_lsn: None,
            end_lsn: self.offset.lsn_commit.map(|l| l.to_string()),
            xid: self.offset.tx_id.and_then(|x| u32::try_from(x).ok()),
            commit_ts_us: self.offset.ts_usec,
            snapshot: None,
            system_id: None,
            timeline: None,
            takeover: Some(self.seam.clone()),
        };
        producer
            .send_alone(offsets_topic, conn.name.as_bytes(), Some(&ck.encode()?))
            .await?;
        tracing::info!(connector = %conn.name, lsn = %ck.lsn, within = ?self.seam.within, source = %self.source,
            "took over from Debezium: first checkpoint written");
        Ok(ck)
    }
}

/// `pgcdc takeover debezium`: checks, then `show`s the plan (before anything is written),
/// then, unless `dry_run`, writes the first checkpoint. Returns the closing line.
pub async fn command(
    daemon: &DaemonConfig,
    conn: &ConnectorConfig,
    from: &FromDebezium,
    dry_run: bool,
    show: impl FnOnce(&str),
) -> Result<&'static str> {
    let (ck, _) = crate::kafka::offsets::state(&daemon.kafka, &conn.name).await?;
    let t = plan(daemon, conn, from, ck.as_ref()).await?;
    show(&t.describe(conn, daemon));
    if dry_run {
        return Ok("--dry-run: nothing written");
    }
    let kafka = super::prepare::kafka(daemon, conn).await?;
    // Read again under the producer that fences any instance started meanwhile.
    if let Some(c) = &kafka.ck {
        return Err(refused(
            conn,
            format!("a checkpoint at {} appeared while checking", c.lsn),
        ));
    }
    t.write(conn, &kafka.producer, &daemon.kafka.offsets_topic)
        .await?;
    Ok("first checkpoint written: start the connector (pgcdc run) to stream")
}
