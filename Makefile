# pgcdc developer commands. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Integration tests are I/O-bound against the local stack; a few run at once on 2 cores.
TEST_THREADS ?= 4

.PHONY: help stack stack-down stack-status build test unit-test run lint bench

help:
	@echo "make run         local stack up, demo tables, daemon on connectors/example.yaml"
	@echo "make test        every test (unit and integration) against the real local stack"
	@echo "make stack       install and start PostgreSQL, Kafka and Apicurio Registry in .stack/"
	@echo "make stack-down  stop what 'make stack' started"

stack:
	@dev/stack up

stack-down:
	@dev/stack down

stack-status:
	@dev/stack status

build:
	cargo build --locked --all-targets

test: stack
	cargo test --locked --all-targets -- --test-threads=$(TEST_THREADS)

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
