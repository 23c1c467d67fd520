#!/usr/bin/env bash
# End-to-end check of dev/connect/run-source + dev/connect/source-connector against the local stack
# (dev/stack up): Debezium's PostgreSQL source on one distributed Connect worker, Avro through the
# stack's registry. About 60 s. Prints what a takeover test needs to see: the offsets records after
# a graceful stop and after a SIGKILL, next to the slot's confirmed_flush_lsn.
#
#   dev/connect/probe/source.sh
#
#   PROBE_DB     database, default dbzsrc_probe (dropped and created again; dropped at the end)
#   SOURCE_NAME  default dbzsrc_p<epoch seconds>: a new name each run, so new Connect topics
#   PROBE_KEEP   1: keep the database, the Kafka topics, the registry subjects and the log (the
#                slot is always dropped)
#   PGCDC_STACK_DIR, PGCDC_CONNECT_DIR as for dev/connect/install
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STACK=${PGCDC_STACK_DIR:-$ROOT/.stack}
DEST=${PGCDC_CONNECT_DIR:-$STACK/connect}
# shellcheck disable=SC1091
source "$STACK/env"
export PGCDC_STACK_DIR=$STACK PGCDC_CONNECT_DIR=$DEST
export SOURCE_NAME=${SOURCE_NAME:-dbzsrc_p$(date +%s)}
DB=${PROBE_DB:-dbzsrc_probe}
export SOURCE_DB_NAME=$DB SOURCE_TABLES='public\.items'
SLOT=$(printf '%s' "$SOURCE_NAME" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9_' '_')
PREFIX=$(printf '%s' "$SOURCE_NAME" | tr -c 'A-Za-z0-9_' '_')
TOPIC=$PREFIX.public.items
WORK=$DEST/run/$SOURCE_NAME
export CONNECT_LOG_FILE=$WORK/worker.log
PY=${PGCDC_VENV:-$STACK/venv}/bin/python
PGCDC_VENV=${PGCDC_VENV:-$STACK/venv} "$ROOT/dev/python-env"

log() { printf '\n[probe] %s\n' "$*" >&2; }
die() { printf '[probe] error: %s\n' "$*" >&2; exit 1; }
sql() { psql -qX -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
slot_state() {
  psql -X -d postgres -c "SELECT slot_name, plugin, active, confirmed_flush_lsn,
    confirmed_flush_lsn - '0/0'::pg_lsn AS confirmed_flush_int FROM pg_replication_slots WHERE slot_name = '$SLOT'"
}
newest_offset() { "$HERE/source-connector" offsets-topic | tail -n 1; }

WORKER=
start_worker() {
  "$HERE/run-source" </dev/null >/dev/null 2>&1 &
  WORKER=$!
}
# SIGTERM, and SIGKILL if the JVM is still there after 20 s: Connect 4.1.1's shutdown hook can hang
# in Jetty's Server.join() (seen once in four SIGTERMs; see README).
stop_worker() {
  local i
  [ -n "$WORKER" ] && kill -0 "$WORKER" 2>/dev/null || return 0
  kill -TERM "$WORKER"
  for ((i = 0; i < 200; i++)); do kill -0 "$WORKER" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$WORKER" 2>/dev/null; then
    echo "[probe] the worker did not exit 20 s after SIGTERM; SIGKILL" >&2
    kill -KILL "$WORKER"
  fi
  wait "$WORKER" 2>/dev/null || true
}
cleanup() {
  set +e
  stop_worker
  psql -qX -d postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$SLOT'" >/dev/null
  if [ "${PROBE_KEEP:-0}" != 1 ]; then
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    TOPICS="$TOPIC connect-$SOURCE_NAME-offsets connect-$SOURCE_NAME-configs connect-$SOURCE_NAME-status" "$PY" -c '
import os
from confluent_kafka.admin import AdminClient
a = AdminClient({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP"]})
for t, f in a.delete_topics(os.environ["TOPICS"].split(), operation_timeout=10).items():
    try: f.result()
    except Exception as e: print("[probe] could not delete topic", t, e)'
    for s in "$TOPIC-key" "$TOPIC-value"; do
      curl -s -o /dev/null -X DELETE "$SCHEMA_REGISTRY_URL/subjects/$s"
      curl -s -o /dev/null -X DELETE "$SCHEMA_REGISTRY_URL/subjects/$s?permanent=true"
    done
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# Decodes the change topic with the registry; prints a summary line (JSON) and, with
# SHOW=N, the last N events.
topic_summary() {
  TOPIC=$TOPIC "$PY" - <<'PY'
import json, os, collections
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
topic = os.environ["TOPIC"]
sr = SchemaRegistryClient({"url": os.environ["SCHEMA_REGISTRY_URL"]})
kd, vd = AvroDeserializer(sr), AvroDeserializer(sr)
c = Consumer({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP"], "group.id": "unused", "enable.auto.commit": False})
hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
c.assign([TopicPartition(topic, 0, 0)])
ops, created, events = collections.Counter(), collections.Counter(), []
while hi and len(events) < hi:
    m = c.poll(5)
    if m is None: break
    k = kd(m.key(), SerializationContext(topic, MessageField.KEY))
    v = vd(m.value(), SerializationContext(topic, MessageField.VALUE)) if m.value() is not None else None
    op = v["op"] if v else "tombstone"
    ops[op] += 1
    if op in ("c", "r"): created[v["after"]["id"]] += 1
    events.append((m.offset(), k, op, v and v["after"] and v["after"]["qty"], v and v["source"]["lsn"], v and v["source"]["txId"]))
c.close()
n = int(os.environ.get("SHOW", "0"))
for e in events[len(events) - n:] if n else []:
    print("  offset %d key %s op %s after.qty %s source.lsn %s txId %s" % e)
print(json.dumps({"records": len(events), "ops": dict(ops), "distinct_created_ids": len(created),
                  "created_more_than_once": sorted(i for i, n in created.items() if n > 1)}))
PY
}
wait_records() { # <n>: until the change topic holds at least n records
  local i s
  for ((i = 0; i < 60; i++)); do
    s=$(topic_summary)
    [ "$(printf '%s' "$s" | tail -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])')" -ge "$1" ] && { echo "$s"; return; }
    sleep 1
  done
  die "the topic $TOPIC did not reach $1 records: $s"
}

log "database $DB, SOURCE_NAME=$SOURCE_NAME, slot $SLOT, topic $TOPIC"
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
sql <<'SQL'
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int, price numeric(10,2));
INSERT INTO items SELECT g, 'seed-' || g, g, g * 1.5 FROM generate_series(1, 5) g;
SQL

log "1. worker + connector"
t0=$(now); start_worker
"$HERE/source-connector" create >/dev/null
echo "worker pid $WORKER; REST port $(cat "$WORK/rest.port"); worker start + connector RUNNING (incl. 3 s settle): $(since "$t0") s"
grep -E 'Kafka Connect worker initializing|Kafka Connect started|Snapshot completed|Processing messages' "$CONNECT_LOG_FILE" | cut -c1-110

log "2. changes while streaming"
sql <<'SQL'
INSERT INTO items VALUES (6, 'six', 6, 9.99);
BEGIN; INSERT INTO items VALUES (7, 'seven', 7, 1.01), (8, 'eight', 8, 2.02); UPDATE items SET qty = qty + 100 WHERE id = 1; COMMIT;
UPDATE items SET name = 'two-renamed' WHERE id = 2;
DELETE FROM items WHERE id = 3;
UPDATE items SET id = 40 WHERE id = 4;
SQL
# 5 snapshot reads, 3 creates + 1 update, 1 update, delete + tombstone, delete + tombstone + create
SHOW=15 wait_records 15

log "3. registry subjects"
for s in key value; do
  curl -sf "$SCHEMA_REGISTRY_URL/subjects/$TOPIC-$s/versions/latest" | python3 -c '
import json, sys
d = json.load(sys.stdin); s = json.loads(d["schema"])
print(d["subject"], "version", d["version"], "id", d["id"], "record", s["namespace"] + "." + s["name"])
src = [f for f in s["fields"] if f["name"] == "source"]
if src: print("  source:", src[0]["type"]["namespace"] + "." + src[0]["type"]["name"], [f["name"] for f in src[0]["type"]["fields"]])'
done

log "4. offsets topic while running, then a graceful stop (PUT /connectors/$SOURCE_NAME/stop)"
sleep 2
"$HERE/source-connector" offsets-topic
slot_state
sql -c "BEGIN; UPDATE items SET qty = qty + 1 WHERE id IN (5, 6); INSERT INTO items VALUES (10, 'ten', 10, 10.10); COMMIT;"
wait_records 18 >/dev/null
t0=$(now); "$HERE/source-connector" stop >/dev/null; echo "stop: $(since "$t0") s"
echo "newest offsets record after the stop:"; newest_offset
echo "GET /connectors/$SOURCE_NAME/offsets:"; "$HERE/source-connector" offsets
slot_state

log "5. resume, a workload of 400 transactions (2 inserts + 1 update each), SIGKILL of the worker after 4 s"
"$HERE/source-connector" resume >/dev/null
python3 -c '
for i in range(400):
    a = 1000 + 2 * i
    print(f"BEGIN; INSERT INTO items VALUES ({a}, $$w{a}$$, {i}, 1); UPDATE items SET qty = {i} WHERE id = 1; "
          f"INSERT INTO items VALUES ({a + 1}, $$w{a + 1}$$, {i}, 2); COMMIT; SELECT pg_sleep(0.02);")' \
  | sql >/dev/null &
LOAD=$!
sleep 4
kill -KILL "$WORKER"; wait "$WORKER" 2>/dev/null || true
echo "SIGKILL at WAL $(psql -X -d postgres -Atc 'SELECT pg_current_wal_lsn()')"
echo "newest offsets record after the SIGKILL:"; newest_offset
slot_state
wait "$LOAD"
echo "delivered before the kill: $(topic_summary)"

log "6. the same worker again: it restarts the connector from the offsets topic"
t0=$(now); start_worker
SOURCE_SETTLE_S=0 "$HERE/source-connector" wait >/dev/null
echo "restart after SIGKILL -> task RUNNING on the new worker: $(since "$t0") s"
# 18 + 400 * (2 creates + 1 update) = 1218, plus what is sent twice
wait_records 1218
echo "newest offsets record:"; sleep 2; newest_offset
slot_state
"$HERE/source-connector" stop >/dev/null
echo "after a graceful stop:"; newest_offset
slot_state
t0=$(now); stop_worker; echo "worker stopped (SIGTERM) in $(since "$t0") s"
