"""A Python microservice that was reading Debezium's topic when pgcdc took over: one
confluent-kafka Consumer (read_committed, one consumer group, never restarted) with the stock
AvroDeserializer, from the beginning until told to stop. Prints one JSON object per record,
with its partition, offset and the schema ids of its key and value (Confluent wire format).

Stops when --stop-file exists and nothing arrived for --idle seconds, or at --timeout.
"""
import argparse
import json
import os
import struct
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def schema_id(raw):
    if raw is None or len(raw) < 5 or raw[0] != 0:
        return None
    return struct.unpack(">I", raw[1:5])[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--idle", type=float, default=3)
    p.add_argument("--timeout", type=float, default=300)
    a = p.parse_args()

    deser = AvroDeserializer(SchemaRegistryClient({"url": a.registry}))
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "topic.metadata.refresh.interval.ms": 1000,
    })
    c.subscribe([a.topic])
    deadline = time.time() + a.timeout
    last = time.time()
    while time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            if os.path.exists(a.stop_file) and time.time() - last > a.idle:
                break
            continue
        if m.error():
            if "UNKNOWN_TOPIC" in str(m.error()):
                continue
            sys.exit(f"consume error: {m.error()}")
        last = time.time()
        ctx = lambda f: SerializationContext(m.topic(), f)
        key = deser(m.key(), ctx(MessageField.KEY)) if m.key() is not None else None
        value = deser(m.value(), ctx(MessageField.VALUE)) if m.value() is not None else None
        print(json.dumps({
            "partition": m.partition(), "offset": m.offset(),
            "key_schema": schema_id(m.key()), "value_schema": schema_id(m.value()),
            "key": key, "value": value,
        }, default=str), flush=True)
    else:
        sys.exit(f"not told to stop within {a.timeout}s")
    c.close()


if __name__ == "__main__":
    main()
