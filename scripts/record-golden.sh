#!/bin/sh
# Regenerates the golden event recordings of test/fixtures/events/ on this machine: each live
# scenario of test/agent-live runs once under `kpiflow agent --source live --record`, and the
# recording (trimmed to the scenario's connections) is kept with the profiles the live agent
# exported. Needs root and the probes built (make build). Run after a change of the event layout
# (AGT_ERR_EVENTS_LAYOUT) or of what a profile holds, then review and commit the diff.
#
#   scripts/record-golden.sh                   # every scenario
#   scripts/record-golden.sh loss reset        # some of them
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "record-golden: needs root (live probes, network namespaces)" >&2
  exit 2
fi
npx tsc -p tsconfig.json
exec node dist/test/replay/events-record-golden.js test/fixtures/events "$@"
