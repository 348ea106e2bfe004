#!/usr/bin/env bash
# Runs CI as CI does, N times in a row: a fresh clone of this checkout's main with shared/ copied
# beside it (read-only), then `CI=true bash .ci/run`; stops at the first failure.
#   scripts/fresh-ci.sh [N] [DIR]   (default 1 run, under /tmp/kpiflow-ci)
# Each run's output goes to DIR/runK/log.txt, its last line the exit code and seconds.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-1}
base=${2:-/tmp/kpiflow-ci}
for k in $(seq 1 "$runs"); do
  dir=$base/run$k
  rm -rf "$dir" && mkdir -p "$dir"
  git clone -q "$repo" "$dir/main" && cp -r "$repo/../shared" "$dir/shared" && chmod -R a-w "$dir/shared"
  start=$(date +%s)
  (cd "$dir/main" && CI=true bash .ci/run) >"$dir/log.txt" 2>&1
  rc=$?
  echo "rc=$rc seconds=$(($(date +%s) - start))" >>"$dir/log.txt"
  echo "run $k: rc=$rc, $(grep -E '^ℹ (pass|fail|skipped)' "$dir/log.txt" | tr '\n' ' ')"
  ((rc == 0)) || exit "$rc"
done
