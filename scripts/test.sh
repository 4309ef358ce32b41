#!/usr/bin/env bash
# Runs every test of the workspace against real PostgreSQL and RabbitMQ (started, or installed,
# first). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh postgres rabbitmq
exec cargo test --workspace "$@"
