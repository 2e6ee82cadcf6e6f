#!/usr/bin/env bash
# Stops what scripts/start.sh (and spawn-shard.sh) started: shards first (SIGTERM,
# so they answer what they took), then nats-server.
#
#   scripts/stop.sh [--run-dir DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run="$ROOT/run"
while [ $# -gt 0 ]; do
  case "$1" in
    --run-dir) run=$2; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -d "$run" ] || { say "nothing to stop ($run does not exist)"; exit 0; }

stopped=0
# Ask every shard at once (each drains, appends its last log record and stores a
# snapshot), then wait for each: up to 25 s, past the engine's own 15 s grace.
# Gateways first: they stop taking requests and finish those in flight (chat
# gateways tell their users and free their names).
for f in "$run"/gateway-*.pid "$run"/chat-*.pid; do
  [ -e "$f" ] || continue
  stop_pidfile "$f" 35
  stopped=$((stopped + 1))
done
# Standbys first, so that none takes over from a shard that is stopping.
for f in "$run"/standby-*.pid; do
  [ -e "$f" ] || continue
  stop_pidfile "$f" 10
  stopped=$((stopped + 1))
done
for f in "$run"/shard-*.pid; do
  [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
done
for f in "$run"/shard-*.pid "$run"/echo-*.pid "$run"/client-*.pid; do
  [ -e "$f" ] || continue
  stop_pidfile "$f" 25
  stopped=$((stopped + 1))
done
for f in "$run"/nats.pid "$run"/nats-*.pid; do
  [ -e "$f" ] || continue
  stop_pidfile "$f" 10
  stopped=$((stopped + 1))
done
say "stopped $stopped process(es) from $run"
