#!/usr/bin/env python3
"""Compares the final rows Flink computed (FlinkCompat's JSON lines) with PostgreSQL's rows.

    compare.py --table items --key id --kinds 'id:int name:text seen:ts_us ...' \
        --flink items.flink.jsonl [--from 'SQL FROM item'] [--psql PATH] [--dbname DB]

PostgreSQL is read with psql (PGHOST, PGPORT, PGUSER from the environment). Both sides are
brought to one canonical value per column kind before comparing, so that Debezium's physical
forms (what Flink's DDL has to declare) meet PostgreSQL's own values:

    int      integer                     text   string, exact
    bool     true/false                  json   jsonb's text output, exact
    decimal  decimal.Decimal (12.50 == 12.5 is not accepted: the scale must match too)
    float    float (exact binary value)  bytea  lowercase hex
    date     ISO date; Flink INT (days since 1970-01-01) or DATE
    ts_us    µs since 1970 (timestamp without time zone); Flink BIGINT or TIMESTAMP(6) text
    time_us  µs since midnight; Flink BIGINT or TIME text
    tstz     µs since 1970 UTC; Flink STRING (Debezium's ZonedTimestamp) or an integer

Prints one line `RESULT compat table=<t> rows=<n> equal=<true|false>` (n: PostgreSQL's rows)
and, on a difference, the rows that differ. Exit 0 when equal, 1 otherwise.
"""
import argparse
import datetime as dt
import decimal
import json
import os
import subprocess
import sys

EPOCH = dt.datetime(1970, 1, 1)
EPOCH_TZ = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
US = dt.timedelta(microseconds=1)


def pg_expr(col, kind):
    q = '"%s"' % col.replace('"', '""')
    return {
        "int": q,
        "bool": q,
        "text": q + "::text",
        "json": q + "::text",
        "decimal": q + "::text",
        "float": q,
        "bytea": "encode(%s, 'hex')" % q,
        "date": q + "::text",
        "ts_us": "(extract(epoch from %s) * 1000000)::bigint" % q,
        "time_us": "(extract(epoch from %s) * 1000000)::bigint" % q,
        "tstz": "(extract(epoch from %s) * 1000000)::bigint" % q,
    }[kind]


def norm(kind, v):
    """The canonical value of one column, from either side."""
    if v is None:
        return None
    if kind == "int":
        return int(v)
    if kind == "bool":
        if not isinstance(v, bool):
            raise ValueError("not a boolean: %r" % (v,))
        return v
    if kind in ("text", "json", "bytea"):
        if not isinstance(v, str):
            raise ValueError("not a string: %r" % (v,))
        return v.lower() if kind == "bytea" else v
    if kind == "decimal":
        d = decimal.Decimal(str(v))
        return (d, d.as_tuple().exponent)
    if kind == "float":
        return float(v)
    if kind == "date":
        if isinstance(v, int):
            return (dt.date(1970, 1, 1) + dt.timedelta(days=v)).isoformat()
        return dt.date.fromisoformat(v).isoformat()
    if kind == "ts_us":
        if isinstance(v, int):
            return v
        return (dt.datetime.fromisoformat(v) - EPOCH) // US
    if kind == "time_us":
        if isinstance(v, int):
            return v
        t = dt.time.fromisoformat(v)
        return ((t.hour * 60 + t.minute) * 60 + t.second) * 1000000 + t.microsecond
    if kind == "tstz":
        if isinstance(v, int):
            return v
        t = dt.datetime.fromisoformat(v)
        if t.tzinfo is None:
            raise ValueError("no offset in %r" % v)
        return (t - EPOCH_TZ) // US
    raise ValueError("unknown kind " + kind)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--kinds", required=True)
    ap.add_argument("--flink", required=True)
    ap.add_argument("--from", dest="from_", default=None)
    pg_bin_psql = os.path.join(os.environ.get("PG_BIN", ""), "psql")
    ap.add_argument("--psql", default=pg_bin_psql if os.access(pg_bin_psql, os.X_OK) else "psql")
    ap.add_argument("--dbname", default=os.environ.get("PGDATABASE", "postgres"))
    a = ap.parse_args()

    kinds = []
    for item in a.kinds.split():
        col, kind = item.rsplit(":", 1)
        kinds.append((col, kind))
    kind_of = dict(kinds)
    key = [k.strip() for k in a.key.split(",") if k.strip()]
    src = a.from_ or '"%s"' % a.table

    sql = "SELECT json_build_object(%s) FROM %s AS t" % (
        ", ".join("'%s', %s" % (c.replace("'", "''"), pg_expr(c, k)) for c, k in kinds), src)
    out = subprocess.run(
        [a.psql, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", a.dbname, "-c", sql],
        check=True, capture_output=True, text=True).stdout

    def load(lines, side):
        rows = {}
        for line in lines:
            line = line.strip()
            if not line:
                continue
            raw = json.loads(line)
            missing = [c for c, _ in kinds if c not in raw]
            if missing:
                sys.exit("[compare] %s: %s row lacks %s: %s" % (a.table, side, missing, line))
            row = {}
            for c, k in kinds:
                try:
                    row[c] = norm(k, raw[c])
                except (ValueError, TypeError, ArithmeticError) as e:
                    # Not a value of this kind (a wrong Flink type): a difference, not a crash.
                    row[c] = ("unreadable as %s" % k, repr(raw[c]))
            kv = tuple(row[k] for k in key)
            if kv in rows:
                sys.exit("[compare] %s: %s has key %r twice" % (a.table, side, kv))
            rows[kv] = (row, raw)
        return rows

    pg = load(out.splitlines(), "postgres")
    with open(a.flink, encoding="utf-8") as f:
        fl = load(f, "flink")

    problems = []
    for kv in sorted(set(pg) | set(fl), key=repr):
        if kv not in fl:
            problems.append("  missing in flink: %s" % json.dumps(pg[kv][1], sort_keys=False))
        elif kv not in pg:
            problems.append("  extra in flink:   %s" % json.dumps(fl[kv][1], sort_keys=False))
        else:
            (p, praw), (f_, fraw) = pg[kv], fl[kv]
            for c, _ in kinds:
                if p[c] != f_[c]:
                    problems.append("  key %r column %s (%s): postgres %s, flink %s" % (
                        kv, c, kind_of[c], json.dumps(praw[c]), json.dumps(fraw[c])))
    equal = not problems
    print("RESULT compat table=%s rows=%d equal=%s" % (a.table, len(pg), "true" if equal else "false"))
    for p in problems:
        print(p)
    sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
