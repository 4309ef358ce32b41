#!/usr/bin/env bash
# Audits Cargo.lock against the RustSec advisory database with cargo-audit (installed from
# crates.io when missing). Any vulnerability fails, and so does any warning (unmaintained,
# unsound, yanked), except the advisories .cargo/audit.toml ignores, each with its reason.
#
# cargo-audit fetches the database from GitHub into ~/.cargo/advisory-db. When that fails, a
# copy fetched earlier is used if it is at most AUDIT_MAX_DB_AGE_DAYS (default 7) days old;
# otherwise the audit fails and says why (exit 2): an audit that cannot see the advisories must
# not pass. Extra arguments go to `cargo audit`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-audit >/dev/null 2>&1; then
  echo "==> installing cargo-audit from crates.io" >&2
  cargo install --locked cargo-audit
fi

db=${CARGO_HOME:-$HOME/.cargo}/advisory-db
max_age_days=${AUDIT_MAX_DB_AGE_DAYS:-7}

set +e
output=$(cargo audit --deny warnings "$@" 2>&1)
status=$?
set -e
printf '%s\n' "$output"
if [ $status -eq 0 ] || ! grep -q "couldn't fetch advisory database" <<<"$output"; then
  exit $status
fi

# The fetch failed (no route to GitHub): fall back to an earlier copy, if recent enough.
if [ -d "$db/crates" ]; then
  updated=$(git -C "$db" log -1 --format=%ct 2>/dev/null || stat -c %Y "$db/crates")
  age_days=$(( ($(date +%s) - updated) / 86400 ))
  if [ "$age_days" -le "$max_age_days" ]; then
    echo "==> advisory database unreachable: auditing against the copy in $db ($age_days days old)" >&2
    exec cargo audit --deny warnings --no-fetch "$@"
  fi
  reason="the copy in $db is $age_days days old (more than AUDIT_MAX_DB_AGE_DAYS=$max_age_days)"
else
  reason="there is no earlier copy in $db"
fi
cat >&2 <<MESSAGE

################################################################################################
DEPENDENCY AUDIT NOT DONE: the RustSec advisory database could not be fetched from GitHub, and
$reason.
Cargo.lock has NOT been checked for known vulnerabilities. Run scripts/audit.sh on a machine that
reaches github.com, or put a recent clone of the advisory database in $db.
################################################################################################
MESSAGE
exit 2
