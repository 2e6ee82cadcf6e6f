#!/usr/bin/env bash
# Starts one more engine shard process for the system scripts/start.sh runs: shard K
# of the cluster's N (for instance one that crashed or was stopped). The engine
# refuses to start if a live process already owns shard K. With --standby, the
# process waits for shard K's lease instead and takes over when the owner dies
# (durable mode; any number per shard).
#
#   scripts/spawn-shard.sh K [--standby] [--run-dir DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run="$ROOT/run" k="" standby=0
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) run=$2; shift 2 ;;
    --standby) standby=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) [ -z "$k" ] || die "one shard number only"; k=$1; shift ;;
  esac
done
[[ "$k" =~ ^[0-9]+$ ]] || die "usage: scripts/spawn-shard.sh K [--standby] [--run-dir DIR]"
[ -f "$run/env" ] || die "no system is running from $run (start one with scripts/start.sh)"
# shellcheck disable=SC1091
source "$run/env"
[ "$k" -lt "$REDDIT_SHARDS" ] || die "shard $k does not exist in a cluster of $REDDIT_SHARDS (0..$((REDDIT_SHARDS - 1)))"
BIN="$ROOT/target/release"
[ -x "$BIN/reddit-engine" ] || build_release
if [ "$standby" = 1 ]; then
  start_standby "$k" "$REDDIT_SHARDS" "$run" "$NATS_PORT"
  say "a standby for shard $k is waiting for its lease (logs: $run/standby-$k-*.log)"
  exit 0
fi
start_shard "$k" "$REDDIT_SHARDS" "$run" "$NATS_PORT"
pid=$(cat "$run/shard-$k.pid")
wait_shard "$k" "$run" 15
say "shard $k of $REDDIT_SHARDS is serving (pid $pid, log $run/shard-$k.log)"
