#!/usr/bin/env bash
# The main job: starts nats-server and 4 engine shards on free ports, runs the
# simulator with 4 client processes and 10,000 users for a minute, prints the
# report and where the plots are, and stops everything it started (also on
# failure or Ctrl-C). Extra arguments go to `reddit-client simulate`, e.g.
#
#   scripts/simulate.sh --users 20000 --duration 30 --in-flight 64
#   scripts/simulate.sh --shards 2 -- --zipf 1.2
#
# Options of this script (before any simulate flags): --shards N (default 4).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

shards=4
if [ "${1:-}" = "--shards" ]; then shards=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift

run="$ROOT/run/simulate-$$"
start_throwaway_system "$shards" "$run"
out="$ROOT/run/report-$(date +%Y%m%d-%H%M%S)"
# The simulator acts for thousands of users at once: the service role. Its URL
# goes in the environment, not on command lines other users can read.
NATS_URL="$SERVICE_URL" "$BIN/reddit-client" simulate \
  --users 10000 --processes 4 --duration 60 --out "$out" --check "$@"
echo "engine logs: $run; report and plots: $out"
