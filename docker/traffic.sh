#!/bin/sh
# Traffic for the demo: one new TCP connection per URL per round (curl opens and closes its own),
# so the agent has connections to profile within seconds. TRAFFIC_ROUNDS=N stops after N rounds
# (default: forever); TRAFFIC_PAUSE=S between rounds (default 1). A failed request is reported,
# not fatal: a refused or timed-out connection is a profile too (UNREACHABLE).
set -u
[ "$#" -gt 0 ] || { echo "usage: traffic.sh URL..." >&2; exit 2; }
rounds=${TRAFFIC_ROUNDS:-0}
pause=${TRAFFIC_PAUSE:-1}
i=0
while [ "$rounds" -eq 0 ] || [ "$i" -lt "$rounds" ]; do
  i=$((i + 1))
  for url in "$@"; do
    curl -s -o /dev/null --max-time 5 "$url" || echo "traffic: $url failed (round $i)" >&2
  done
  sleep "$pause"
done
