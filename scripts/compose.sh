#!/usr/bin/env bash
# `docker compose` for this repository, after making sure .env has the stack's passwords
# (scripts/init-env.sh generates the missing ones). Arguments go to docker compose; none means
# `up --build`.
#   scripts/compose.sh              # build and run the whole stack
#   scripts/compose.sh down -v      # stop it and delete its data
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/init-env.sh
[ $# -gt 0 ] || set -- up --build
if docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
else
  echo "compose.sh: needs Docker with the compose plugin (or docker-compose)" >&2
  exit 1
fi
