# pgcdc developer commands. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Integration tests are I/O-bound against the local stack; a few run at once on 2 cores.
TEST_THREADS ?= 4
# make test's bounds run fails above this peak RSS (debug build): the two byte bounds
# (kafka.buffer_bytes and kafka.producer_queue_bytes, 32 MiB each) plus allocator and
# librdkafka slack. Unbounded buffering of the paused stream would take gigabytes.
BOUNDS_MAX_RSS_MB ?= 256

.PHONY: help stack stack-down stack-status build test unit-test run lint bench bounds chaos compat fuzz

help:
	@echo "make run         local stack up, demo tables, daemon on connectors/example.yaml"
	@echo "make test        every test (unit and integration) against the real local stack"
	@echo "make stack       install and start PostgreSQL, Kafka and Apicurio Registry in .stack/"
	@echo "make stack-down  stop what 'make stack' started"
	@echo "make bench       throughput and latency figures (RESULT lines)"
	@echo "make bounds      RSS through a 5M-row transaction with Kafka paused 60 s (RESULT line; release build)"
	@echo "make chaos       exactly-once under >=20 SIGKILLs and server restarts (RESULT line)"
	@echo "make compat      Flink SQL (debezium-avro-confluent) reads pgcdc's topics; final state = PostgreSQL (not in CI)"
	@echo "make fuzz        property tests of the decoder and text parsers for FUZZ_SECONDS (600) (RESULT line; not in CI)"

stack:
	@dev/stack up

stack-down:
	@dev/stack down

stack-status:
	@dev/stack status

build:
	cargo build --locked --all-targets

test: stack
	@for m in 14 15 16 18; do PG_MAJOR=$$m dev/stack pg || exit 1; done
	@dev/connect/install
	@dev/stack prune
	rm -f $${CARGO_TARGET_DIR:-target}/tmp/takeover-*.result
	cargo test --locked --all-targets -- --test-threads=$(TEST_THREADS)
	@echo "takeover from Debezium (tests/integration/debezium_takeover.rs):"; cat $${CARGO_TARGET_DIR:-target}/tmp/takeover-*.result
	@echo "chaos (short): a few SIGKILLs, a SIGTERM, Kafka, registry and PostgreSQL restarts"
	CHAOS_DURATION=40 CHAOS_MIN_CRASHES=4 CHAOS_SIGTERMS=1 CHAOS_MAX_ROWS=2000 CHAOS_PROFILE=debug dev/chaos/run
	@echo "bounds: 5,000,000 rows in one transaction, Kafka paused 60 s; every row once, peak RSS bounded"
	BOUNDS_PROFILE=debug BOUNDS_MAX_RSS_MB=$(BOUNDS_MAX_RSS_MB) bench/bounds

chaos: stack
	@dev/chaos/run

fuzz:
	@dev/fuzz

compat: stack
	cargo build --locked
	@dev/flink/compat

unit-test:
	cargo test --locked --lib --bins

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

run: stack
	cargo build --locked
	@dev/run-demo

.PHONY: bench
bench: stack
	@bench/run

bounds: stack
	@bench/bounds
