#!/usr/bin/env bash
# Writes the passwords, keys and tokens docker-compose.yml needs into .env: a random one (32 hex digits) for each
# that .env does not set yet. Existing values and the rest of .env are kept, so it is safe to run
# again (scripts/compose.sh runs it before every `docker compose`).
#   scripts/init-env.sh            # .env at the repository root
#   scripts/init-env.sh FILE       # another file, relative to the repository root (CI validates
#                                  # the compose file with a throwaway one)
set -euo pipefail
cd "$(dirname "$0")/.."

env_file=${1:-.env}
secrets=(
  POSTGRES_PASSWORD
  POSTGRES_USER_SERVICE_PASSWORD
  POSTGRES_OUTBOX_RELAY_PASSWORD
  POSTGRES_EMAIL_SERVICE_PASSWORD
  POSTGRES_WEBHOOK_SERVICE_PASSWORD
  RABBITMQ_ADMIN_PASSWORD
  RABBITMQ_OUTBOX_RELAY_PASSWORD
  RABBITMQ_EMAIL_SERVICE_PASSWORD
  RABBITMQ_WEBHOOK_SERVICE_PASSWORD
  CODE_HMAC_KEY
  WEBHOOK_API_TOKEN
  GRAFANA_ADMIN_PASSWORD
)

random_password() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

touch "$env_file"
chmod 600 "$env_file"
added=()
for name in "${secrets[@]}"; do
  if ! grep -qE "^${name}=.+" "$env_file"; then
    # An empty `NAME=` line (as in a copied template) is replaced, not left to shadow it.
    sed -i "/^${name}=\$/d" "$env_file"
    printf '%s=%s\n' "$name" "$(random_password)" >>"$env_file"
    added+=("$name")
  fi
done
if [ ${#added[@]} -gt 0 ]; then
  echo "init-env: wrote random ${added[*]} to $env_file" >&2
fi
