#!/usr/bin/env bash
# The fault-injection suite (tests/faults): the service binaries as separate processes under a
# load of sign-ups while RabbitMQ and PostgreSQL restart, the mail server is down and services
# are SIGKILLed. It restarts the machine's shared broker and database, so it runs alone, one
# scenario at a time, never beside other tests; it leaves both running. Extra arguments select
# scenarios (`scripts/faults.sh smtp`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh postgres rabbitmq
cargo build --bins
exec cargo test --test faults -- --ignored --test-threads=1 --nocapture "$@"
