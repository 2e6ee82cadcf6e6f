#!/usr/bin/env bash
# The chat benchmark: a fresh system (nats-server, 1 engine shard, 2 chat
# gateways), then `reddit-chat bench` with N connections spread over both
# gateways, in rooms of 10 and then of 500 members (members of a room alternate
# between the gateways, so every line crosses NATS). Reports delivered lines/s,
# send-to-receive latency (p50/p99/max), lines lost, and the gateways' memory per
# connection. Starts and stops everything itself.
#
#   scripts/bench-chat.sh [--connections N] [--seconds S] [--rate-10 R] [--rate-500 R]
#
# Defaults: 2000 connections, 10 s, 2000 lines/s in rooms of 10 (20,000
# deliveries/s), 100 lines/s in rooms of 500 (50,000 deliveries/s).
# Results go to run/bench-chat-<time>/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

connections=2000 seconds=10 rate10=2000 rate500=100
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) connections=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rate-10) rate10=$2; shift 2 ;;
    --rate-500) rate500=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
# Every connection is a file descriptor here and in a gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out="$ROOT/run/bench-chat-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "command: scripts/bench-chat.sh --connections $connections --seconds $seconds --rate-10 $rate10 --rate-500 $rate500"
} | tee "$out/machine.txt" >&2

run="$ROOT/run/bench-chat-run-$$"
start_throwaway_system 1 "$run" 0 2
pids=$(cat "$run"/chat-*.pid | paste -sd, -)
for size in 10 500; do
  rate=$rate10
  [ "$size" = 500 ] && rate=$rate500
  say "rooms of $size: $connections connections over $CHAT_ADDRS, $rate lines/s for ${seconds}s ..."
  "$BIN/reddit-chat" bench --gateways "$CHAT_ADDRS" --connections "$connections" \
    --room-size "$size" --rate "$rate" --seconds "$seconds" --pids "$pids" \
    --json "$out/rooms-$size.json" | tee "$out/rooms-$size.txt"
done
say "results in $out"
