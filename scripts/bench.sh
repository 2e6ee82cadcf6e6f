#!/usr/bin/env bash
# The benchmark: on one broker and one harness, the engine against the do-nothing
# responder reddit-echo (same service framework, same request bytes, same reply
# sizes) at 1, 64 and 512 requests in flight, then the mixed simulator workload
# (4 shards, 4 client processes, closed loop). Starts and stops everything itself.
#
#   scripts/bench.sh [--seconds S] [--sim-seconds S] [--sim-in-flight N] [--users N]
#
# Results go to run/bench-<time>/ (bench.json, the simulation's report.json and plots).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=5 sim_seconds=30 sim_in_flight=64 users=10000 shards=4
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --sim-seconds) sim_seconds=$2; shift 2 ;;
    --sim-in-flight) sim_in_flight=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done

run="$ROOT/run/bench-run-$$"
out="$ROOT/run/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
cleanup() {
  stop_pidfile "$run/echo.pid" 5 2>/dev/null || true
  "$ROOT/scripts/stop.sh" --run-dir "$run" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
port=$(free_port) mport=$(free_port)
"$ROOT/scripts/start.sh" --shards "$shards" --port "$port" --monitor-port "$mport" --run-dir "$run" 2>&1 |
  grep -vE '^\s+(export|/)|^stop with' >&2
BIN="$ROOT/target/release"
# The benchmark publishes on reddit.echo.>, which nats.conf's client user may not:
# both the echo responder and the harness use the engine's credentials.
url="nats://$ENGINE_USER:$ENGINE_PASSWORD@127.0.0.1:$port"
nohup "$BIN/reddit-echo" --nats-url "$url" >"$run/echo.log" 2>&1 &
echo $! >"$run/echo.pid"

{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "nats-server: $("$("$ROOT/scripts/install-nats.sh")" --version 2>&1)"
  echo "command: scripts/bench.sh --seconds $seconds --sim-seconds $sim_seconds --sim-in-flight $sim_in_flight --users $users"
} | tee "$out/machine.txt" >&2

say "== engine vs echo (closed loop, ${seconds}s per measurement)"
"$BIN/reddit-client" --nats-url "$url" bench --levels 1,64,512 --seconds "$seconds" --out "$out/bench.json" |
  tee "$out/bench.txt"

say "== mixed workload: $users users, 4 client processes, $sim_in_flight in flight each, ${sim_seconds}s"
"$BIN/reddit-client" --nats-url "nats://127.0.0.1:$port" simulate \
  --users "$users" --processes 4 --in-flight "$sim_in_flight" --duration "$sim_seconds" \
  --offline-mean 10 --online-mean 30 --out "$out/sim" | tee "$out/sim.txt"
echo "results in $out"
