#!/usr/bin/env bash
# Apply migrations/ to the local D1 database that `wrangler dev` uses
# (wrangler records applied files in its `d1_migrations` table, so re-running is
# a no-op). Non-interactive: CI=true makes wrangler answer its "continue?" prompt
# with yes. Extra arguments go to wrangler, e.g. `--persist-to DIR` to use the
# state directory of a `wrangler dev --persist-to DIR`.
#
#   bash scripts/workerd-migrate.sh [--persist-to DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

WRANGLER=node_modules/wrangler/bin/wrangler.js
[ -f "$WRANGLER" ] || { echo "workerd-migrate: wrangler is not installed; run npm ci" >&2; exit 1; }

# Offline and quiet: no prompt, no telemetry, no update check.
export CI=true
export WRANGLER_SEND_METRICS=false
export WRANGLER_SEND_ERROR_REPORTS=false
export WRANGLER_HIDE_BANNER=true

exec node "$WRANGLER" d1 migrations apply DB --local "$@"
