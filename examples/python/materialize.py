"""A minimal Python microservice on pgcdc's topics: confluent-kafka's Consumer
(read_committed) and AvroDeserializer, nothing from pgcdc. It applies the change events of
one table to an in-memory table by key, as a service keeping a local copy would:

  op c, r, u   the row (`after`) is stored under the event's key
  op d         the key's row is removed
  tombstone    (null value) the key's row is removed (it already is, after its delete)
  op t         the table is emptied (truncate events are sent with skipped_operations: [])

A primary-key change arrives as delete (old key), tombstone, create (new key), so it needs
nothing special. When it has read --count records it prints the table, one JSON object per
row ({"key": …, "row": …}), and exits.

  python materialize.py --bootstrap 127.0.0.1:9092 \
      --registry http://127.0.0.1:8081/apis/ccompat/v7 --topic demo.public.customers --count 100
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def apply(table, key, value):
    """Applies one record to `table` (a dict from the key's JSON text to the row)."""
    k = json.dumps(key, sort_keys=True)
    if value is None:
        table.pop(k, None)
    elif value["op"] in ("c", "r", "u"):
        table[k] = (key, value["after"])
    elif value["op"] == "d":
        table.pop(k, None)
    elif value["op"] == "t":
        table.clear()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=120)
    a = p.parse_args()

    registry = SchemaRegistryClient({"url": a.registry})
    avro = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": f"materialize-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    consumer.subscribe([a.topic])
    table, seen = {}, 0
    deadline = time.time() + a.timeout
    while seen < a.count and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            if "UNKNOWN_TOPIC" in str(m.error()):
                continue
            sys.exit(f"consume error: {m.error()}")
        key = avro(m.key(), SerializationContext(m.topic(), MessageField.KEY)) if m.key() else None
        value = avro(m.value(), SerializationContext(m.topic(), MessageField.VALUE)) if m.value() else None
        apply(table, key, value)
        seen += 1
    consumer.close()
    if seen < a.count:
        sys.exit(f"read {seen} of {a.count} records within {a.timeout}s")
    for key, row in sorted(table.values(), key=lambda kr: json.dumps(kr[0], sort_keys=True)):
        print(json.dumps({"key": key, "row": row}, default=str))


if __name__ == "__main__":
    main()
