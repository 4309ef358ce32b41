#!/usr/bin/env bash
# Runs the whole pipeline in one process (user-service, outbox-relay, email-service) with
# embedded defaults: SQLite files, mails as .eml files in ./mail, RabbitMQ on localhost (started,
# or installed, first). Ctrl-C stops it. Settings: see .env.template.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh rabbitmq
exec cargo run "$@"
