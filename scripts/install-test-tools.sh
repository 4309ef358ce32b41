#!/usr/bin/env bash
# Installs the tools some tests check against (idempotent; CI calls it before the tests):
# - the Python package `standardwebhooks`, the reference verifier the webhook-service's
#   signing interop test runs (`REQUIRE_INTEROP=1` makes that test fail rather than skip
#   without it).
set -euo pipefail

if python3 -c "import standardwebhooks" 2>/dev/null; then
    echo "standardwebhooks: already installed"
else
    python3 -m pip install --quiet standardwebhooks
    python3 -c "import standardwebhooks"
    echo "standardwebhooks: installed"
fi
