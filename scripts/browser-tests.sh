#!/usr/bin/env bash
# Real-browser end-to-end tests of the hosted sign-up pages: headless Chromium (Debian's
# `chromium`, installed here if missing; never downloaded by Playwright) driven by
# `playwright-core` (tests/browser, pinned by package-lock.json) against the all-in-one runner
# (SQLite databases, mails as .eml files and SMS as files in a fresh temporary folder, RabbitMQ
# on localhost under a namespace of its own). Screenshots go to target/screenshots/
# (UPDATE_SCREENSHOTS=1: docs/screenshots/, the README's).
# Needs RabbitMQ running (scripts/services.sh rabbitmq). Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
command -v chromium >/dev/null 2>&1 || apt_install chromium
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium)}"

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
cargo build --bin signup-outbox

work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
namespace="browser-$$-$(date +%s)."
base="http://127.0.0.1:${port}"
runner_pid=""
cleanup() {
  status=$?
  if [ -n "$runner_pid" ]; then kill "$runner_pid" 2>/dev/null || true; wait "$runner_pid" 2>/dev/null || true; fi
  # The namespace's queues (best effort: rabbitmqctl is only on the broker's machine).
  if command -v rabbitmqctl >/dev/null 2>&1; then
    rabbitmqctl -q list_queues name 2>/dev/null | grep -F "$namespace" |
      while read -r queue; do rabbitmqctl -q delete_queue "$queue" </dev/null >/dev/null 2>&1 || true; done
  fi
  if [ $status -ne 0 ]; then echo "runner log: $work/runner.log" >&2; else rm -rf "$work"; fi
  exit $status
}
trap cleanup EXIT

env DATABASE_URL="sqlite://$work/signup.db?mode=rwc" \
  EMAIL_DATABASE_URL="sqlite://$work/email.db?mode=rwc" \
  WEBHOOK_DATABASE_URL="sqlite://$work/webhook.db?mode=rwc" \
  WEBHOOK_HTTP_ADDR="127.0.0.1:$(free_port)" \
  USER_ADMIN_ADDR="127.0.0.1:$(free_port)" \
  RELAY_ADMIN_ADDR="127.0.0.1:$(free_port)" \
  EMAIL_ADMIN_ADDR="127.0.0.1:$(free_port)" \
  MAIL_DIR="$work/mail" SMS_DIR="$work/sms" \
  AMQP_NAMESPACE="$namespace" \
  HTTP_ADDR="127.0.0.1:${port}" PUBLIC_BASE_URL="$base" \
  ARGON2_MEMORY_KIB=1024 ARGON2_ITERATIONS=1 ARGON2_ALLOW_WEAK=true \
  RUST_LOG="${RUST_LOG:-info}" \
  target/debug/signup-outbox >"$work/runner.log" 2>&1 &
runner_pid=$!

for _ in $(seq 1 120); do
  if curl -fsS -o /dev/null "$base/signup"; then break; fi
  if ! kill -0 "$runner_pid" 2>/dev/null; then cat "$work/runner.log" >&2; exit 1; fi
  sleep 0.5
done
curl -fsS -o /dev/null "$base/signup"

# Screenshots of every run go to target/screenshots (not committed: they show per-run
# addresses); UPDATE_SCREENSHOTS=1 refreshes the README's, in docs/screenshots.
screenshots="$PWD/target/screenshots"
if [ "${UPDATE_SCREENSHOTS:-0}" = 1 ]; then screenshots="$PWD/docs/screenshots"; fi
mkdir -p "$screenshots"
BASE_URL="$base" MAIL_DIR="$work/mail" SMS_DIR="$work/sms" SCREENSHOT_DIR="$screenshots" \
  node --test --test-concurrency=1 tests/browser/pages.test.mjs
