#!/usr/bin/env bash
# Runs every test of the workspace against real PostgreSQL and RabbitMQ (started, or installed,
# first). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh postgres rabbitmq
# The reference verifiers the interop tests check our output against; fail (not skip) without.
scripts/install-test-tools.sh
# Prometheus configuration, alert rules and their unit tests, the Grafana dashboard's JSON.
scripts/check-monitoring.sh
export REQUIRE_INTEROP=1

# Each test creates its own database (t_<label>_<12 hex>); drop the ones earlier runs left.
psql -h 127.0.0.1 -U postgres -d postgres -Atc \
  "SELECT datname FROM pg_database WHERE datname ~ '^t_[a-z0-9_]+_[0-9a-f]{12}$'" |
  while read -r db; do
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
  done

cargo test --workspace "$@"

# The hosted pages in headless Chromium (installed if missing), against the all-in-one binary; on
# a full run only (arguments select some cargo tests).
if [ $# -eq 0 ]; then scripts/browser-tests.sh; fi
