#!/usr/bin/env bash
# Checks the monitoring files docker compose provisions: the Prometheus configuration and alert
# rules (`promtool check`), the rules' unit tests (`promtool test rules`), and that the Grafana
# dashboard is valid JSON. Installs Debian's `prometheus` package (it brings promtool) when
# promtool is missing. Run by scripts/test.sh; that every metric name the dashboard and the
# rules use exists in the services' /metrics is the e2e test `monitoring`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian package prometheus)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Without recommends: promtool is all we need, not the exporters.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

log "promtool check config"
promtool check config monitoring/prometheus.yml
log "promtool check rules"
promtool check rules monitoring/alerts.yml
log "promtool test rules"
promtool test rules monitoring/alerts_test.yml

log "Grafana dashboard JSON parses"
for dashboard in monitoring/grafana/dashboards/*.json; do
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["panels"], "no panels"' "$dashboard"
  elif command -v jq >/dev/null 2>&1; then
    jq -e '.panels | length > 0' "$dashboard" >/dev/null
  else
    log "neither python3 nor jq: $dashboard is parsed by the e2e test only"
  fi
done
log "monitoring checks passed"
