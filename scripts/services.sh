#!/usr/bin/env bash
# Makes sure the local services the project needs are running: installs them with apt-get if
# they are missing, starts them if they are stopped, waits until they answer.
#   scripts/services.sh            # PostgreSQL and RabbitMQ (what the tests need)
#   scripts/services.sh rabbitmq   # only RabbitMQ (what `cargo run` needs)
set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

ensure_postgres() {
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  # A fresh cluster uses peer/scram auth; the tests connect as postgres over loopback.
  if ! as_root grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    log "allowing trust auth on loopback in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  for _ in $(seq 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL does not answer on 127.0.0.1:5432"; exit 1; }
}

ensure_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1 && ! [ -x /usr/sbin/rabbitmq-server ]; then
    log "installing RabbitMQ"
    apt_install rabbitmq-server
  fi
  if ! as_root rabbitmqctl -q await_startup >/dev/null 2>&1; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached >/dev/null 2>&1 || true
    # `await_startup` fails until the node has registered: retry for up to a minute.
    for _ in $(seq 60); do
      as_root rabbitmqctl -q await_startup >/dev/null 2>&1 && break
      sleep 1
    done
  fi
  as_root rabbitmqctl -q await_startup >/dev/null 2>&1 || { log "RabbitMQ did not start"; exit 1; }
}

services=("$@")
[ ${#services[@]} -gt 0 ] || services=(postgres rabbitmq)
for service in "${services[@]}"; do
  case "$service" in
    postgres) ensure_postgres ;;
    rabbitmq) ensure_rabbitmq ;;
    *) log "unknown service: $service (postgres, rabbitmq)"; exit 2 ;;
  esac
done
