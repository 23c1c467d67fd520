"""Reads pgcdc topics the way a Python microservice would: confluent-kafka's Consumer with
read_committed, and its AvroDeserializer backed by SchemaRegistryClient. Prints one JSON
object per record. Nothing here knows about pgcdc.

JSON conventions (the same as `pgcdc tail`): Decimal as its exact string, bytes as \\x hex,
non-finite floats as "NaN" / "Infinity" / "-Infinity".
"""
import argparse
import decimal
import json
import math
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(v):
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", action="append", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()

    sr = SchemaRegistryClient({"url": a.registry})
    deser = AvroDeserializer(sr)
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": f"pgcdc-python-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    c.subscribe(a.topic)
    seen = 0
    deadline = time.time() + a.timeout
    while seen < a.count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if "UNKNOWN_TOPIC" in str(m.error()):
                continue
            sys.exit(f"consume error: {m.error()}")
        key = deser(m.key(), SerializationContext(m.topic(), MessageField.KEY)) if m.key() is not None else None
        value = deser(m.value(), SerializationContext(m.topic(), MessageField.VALUE)) if m.value() is not None else None
        print(json.dumps({"topic": m.topic(), "offset": m.offset(), "key": plain(key), "value": plain(value)}), flush=True)
        seen += 1
    c.close()
    if seen < a.count:
        sys.exit(f"read {seen} of {a.count} records within {a.timeout}s")


if __name__ == "__main__":
    main()
