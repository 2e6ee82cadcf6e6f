#!/usr/bin/env bash
# The benchmark: on one broker and one harness, the engine against the do-nothing
# responder reddit-echo (same service framework, same request bytes, same reply
# sizes) at 1, 64 and 512 requests in flight; the same typed reads and votes over
# NATS and through an HTTP gateway; then the mixed simulator workload (4 shards, 4
# client processes, closed loop). Starts and stops everything itself.
# Both are run once per storage mode (--storage, default "jetstream memory"), each
# on a fresh system: durable shards that log every write to JetStream before
# answering, and in-memory shards.
#
#   scripts/bench.sh [--seconds S] [--sim-seconds S] [--sim-in-flight N | --sim-rate R]
#                    [--users N]
#                    [--seed-posts P] [--seed-comments C] [--sim-only]
#                    [--online-mean S] [--offline-mean S]
#                    [--memory-users N] [--storage "jetstream memory"]
#
# --sim-rate R runs the simulation in open loop instead: R operations per second
# in all, whatever the replies (latency then includes any queueing behind the
# engine). --seed-posts/--seed-comments have the simulation's setup make that many posts
# per subreddit and comments per post first; --sim-only skips the single-operation
# benchmarks. --online-mean/--offline-mean set the simulated sessions (default
# 30 s online, 10 s offline: every return costs a feed and an inbox catch-up, so
# at 1,000,000 users use sessions of minutes: scripts/bench.sh --users 1000000
# --sim-only --storage jetstream --memory-users 0 --seed-posts 20
# --online-mean 600 --offline-mean 600). After each simulation the shards'
# resident memory is recorded (engine-memory.txt), and after a durable one the
# seconds inside a snapshot's encoding or storing are set against the others
# (snapshot-windows.txt, scripts/snapshot-windows.py).
#
# Last, client memory: one worker process simulating --memory-users users (default
# 100,000; 0 skips it).
#
# Results go to run/bench-<time>/ (bench.json, the simulation's report.json and plots).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=5 sim_seconds=30 sim_in_flight=64 sim_rate= users=10000 shards=4 memory_users=100000
seed_posts=0 seed_comments=0 sim_only=0 online_mean=30 offline_mean=10
storages="jetstream memory"
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --sim-seconds) sim_seconds=$2; shift 2 ;;
    --sim-in-flight) sim_in_flight=$2; shift 2 ;;
    --sim-rate) sim_rate=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --seed-posts) seed_posts=$2; shift 2 ;;
    --seed-comments) seed_comments=$2; shift 2 ;;
    --sim-only) sim_only=1; shift ;;
    --online-mean) online_mean=$2; shift 2 ;;
    --offline-mean) offline_mean=$2; shift 2 ;;
    --memory-users) memory_users=$2; shift 2 ;;
    --storage) storages=$2; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done

# The shards' resident memory (the engine processes under each shard's
# supervisor), in all and per simulated user ($2).
engine_memory() {
  local run=$1 users=$2 kib=0 f pid child rss
  for f in "$run"/shard-*.pid; do
    pid=$(cat "$f")
    for child in $pid $(pgrep -P "$pid" || true); do
      rss=$(awk '/^VmRSS:/{print $2}' "/proc/$child/status" 2>/dev/null || true)
      # The supervisor is a shell: count only the engine.
      if [ -n "$rss" ] && [ "$(cat "/proc/$child/comm" 2>/dev/null)" = reddit-engine ]; then
        kib=$((kib + rss))
      fi
    done
  done
  echo "engine memory: $((kib / 1024)) MiB resident in all shards, $((kib * 1024 / (users > 0 ? users : 1))) bytes per simulated user"
}

out="$ROOT/run/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
# Built once: a source edited during the run does not change what is measured.
build_release
export REDDIT_BUILT=1
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "nats-server: $("$("$ROOT/scripts/install-nats.sh")" --version 2>&1)"
  echo "engine: $(engine_bin)"
  echo "command: scripts/bench.sh --seconds $seconds --sim-seconds $sim_seconds $([ -n "$sim_rate" ] && echo "--sim-rate $sim_rate" || echo "--sim-in-flight $sim_in_flight") --users $users --seed-posts $seed_posts --seed-comments $seed_comments --online-mean $online_mean --offline-mean $offline_mean$([ "$sim_only" = 1 ] && echo " --sim-only") --storage \"$storages\""
} | tee "$out/machine.txt" >&2

for storage in $storages; do
  case "$storage" in jetstream | memory) ;; *) die "--storage: unknown mode $storage" ;; esac
  run="$ROOT/run/bench-run-$$-$storage"
  mkdir -p "$out/$storage"
  export REDDIT_STORAGE=$storage
  # One HTTP gateway, its rate limits lifted: the benchmark is one address and
  # one user at 512 requests in flight.
  export REDDIT_RATE_PER_IP=10000000 REDDIT_BURST_PER_IP=10000000
  export REDDIT_RATE_PER_USER=10000000 REDDIT_BURST_PER_USER=10000000
  start_throwaway_system "$shards" "$run" 1
  # The echo responder, the benchmark and the simulator are the service role
  # (nats-auth.conf); URLs with passwords go in the environment.
  export NATS_URL="$SERVICE_URL"
  nohup "$BIN/reddit-echo" >"$run/echo.log" 2>&1 &
  echo $! >"$run/echo-0.pid" # stop.sh stops every *.pid in the run dir
  for ((i = 0; i < 200; i++)); do
    grep -q "serving" "$run/echo.log" 2>/dev/null && break
    kill -0 "$(cat "$run/echo-0.pid")" 2>/dev/null || die "reddit-echo exited: $(cat "$run/echo.log")"
    sleep 0.05
  done

  if [ "$sim_only" = 0 ]; then
    say "== [$storage] engine vs echo (closed loop, ${seconds}s per measurement)"
    "$BIN/reddit-client" bench --levels 1,64,512 --seconds "$seconds" \
      --out "$out/$storage/bench.json" | tee "$out/$storage/bench.txt"

    say "== [$storage] through the HTTP gateway vs NATS directly (same reads and votes, decoded)"
    "$BIN/reddit-client" --http "$GATEWAY_URL" bench --levels 1,64,512 --seconds "$seconds" \
      --out "$out/$storage/gateway.json" | tee "$out/$storage/gateway.txt"
  fi

  if [ -n "$sim_rate" ]; then
    load=(--rate "$sim_rate") load_text="open loop at $sim_rate ops/s"
  else
    load=(--in-flight "$sim_in_flight") load_text="$sim_in_flight in flight each"
  fi
  say "== [$storage] mixed workload: $users users, 4 client processes, $load_text, ${sim_seconds}s"
  "$BIN/reddit-client" simulate \
    --users "$users" --processes 4 "${load[@]}" --duration "$sim_seconds" \
    --seed-posts "$seed_posts" --seed-comments "$seed_comments" \
    --offline-mean "$offline_mean" --online-mean "$online_mean" --out "$out/$storage/sim" | tee "$out/$storage/sim.txt"
  "$BIN/reddit-client" --json stats >"$out/$storage/stats.json" || true
  # Per shard, setup included: writes per log append, the mean commit time, log bytes per write.
  "$BIN/reddit-client" stats | tee "$out/$storage/stats.txt" || true
  engine_memory "$run" "$users" | tee "$out/$storage/engine-memory.txt"
  if [ "$storage" = jetstream ]; then
    # The seconds inside a snapshot's encoding or storing against the rest.
    python3 "$ROOT/scripts/snapshot-windows.py" "$out/$storage/sim/report.json" "$run" \
      >"$out/$storage/snapshot-windows.txt" 2>&1 || true
  fi
  "$ROOT/scripts/stop.sh" --run-dir "$run" >/dev/null 2>&1 || true
done

if [ "$memory_users" -gt 0 ]; then
  run="$ROOT/run/bench-run-$$-memory-users"
  export REDDIT_STORAGE=memory
  start_throwaway_system "$shards" "$run"
  say "== client memory: $memory_users users in one client process"
  NATS_URL="$SERVICE_URL" "$BIN/reddit-client" simulate \
    --users "$memory_users" --processes 1 --duration 10 --subreddits 500 \
    --setup-in-flight 512 --out "$out/memory" >"$out/memory.txt" 2>&1
  grep -E "client memory|ledger|audit" "$out/memory.txt"
fi
echo "results in $out"
