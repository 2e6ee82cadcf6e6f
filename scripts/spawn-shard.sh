#!/usr/bin/env bash
# Starts one more engine shard process for the system scripts/start.sh runs: shard K
# of the cluster's N (for instance one that crashed or was stopped). The engine
# refuses to start if a live process already owns shard K.
#
#   scripts/spawn-shard.sh K [--run-dir DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run="$ROOT/run" k=""
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) run=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) [ -z "$k" ] || die "one shard number only"; k=$1; shift ;;
  esac
done
[[ "$k" =~ ^[0-9]+$ ]] || die "usage: scripts/spawn-shard.sh K [--run-dir DIR]"
[ -f "$run/env" ] || die "no system is running from $run (start one with scripts/start.sh)"
# shellcheck disable=SC1091
source "$run/env"
[ "$k" -lt "$REDDIT_SHARDS" ] || die "shard $k does not exist in a cluster of $REDDIT_SHARDS (0..$((REDDIT_SHARDS - 1)))"
BIN="$ROOT/target/release"
[ -x "$BIN/reddit-engine" ] || build_release
start_shard "$k" "$REDDIT_SHARDS" "$run" "$NATS_PORT"
pid=$(cat "$run/shard-$k.pid")
wait_shard "$k" "$run" 15
say "shard $k of $REDDIT_SHARDS is serving (pid $pid, log $run/shard-$k.log)"
