#!/usr/bin/env bash
# A shard restarted under load: the mixed simulator workload on 4 durable
# shards; a third of the way into the run phase one shard's engine process is
# killed (kill -9) and its supervisor restarts it (1 s backoff). The restarted
# shard recovers (snapshot + log), then resyncs every membership and karma
# total its subreddits hold to the users' shards, in the background while it
# serves. Reports, per second, throughput, errors, mean and max latency; when
# the shard served again; how many resync items it queued (pending_sync) and
# when they were delivered; and the audit and ledger. Starts and stops
# everything itself.
#
#   scripts/bench-restart.sh [--users N] [--seconds S] [--in-flight N] [--shard K]
#                            [--online-mean S] [--offline-mean S]
#
# Results go to run/bench-restart-<time>/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

users=100000 seconds=60 in_flight=64 shards=4 victim=1 online_mean=30 offline_mean=10
while [ $# -gt 0 ]; do
  case "$1" in
    --users) users=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --in-flight) in_flight=$2; shift 2 ;;
    --shard) victim=$2; shift 2 ;;
    --online-mean) online_mean=$2; shift 2 ;;
    --offline-mean) offline_mean=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[ "$victim" -ge 0 ] && [ "$victim" -lt "$shards" ] || die "--shard must be 0..$((shards - 1))"
out="$ROOT/run/bench-restart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "command: scripts/bench-restart.sh --users $users --seconds $seconds --in-flight $in_flight --shard $victim --online-mean $online_mean --offline-mean $offline_mean"
} | tee "$out/machine.txt" >&2
build_release
export REDDIT_BUILT=1 REDDIT_STORAGE=jetstream
run="$ROOT/run/bench-restart-run-$$"
start_throwaway_system "$shards" "$run" 0
export NATS_URL="$SERVICE_URL"
me=$$
# Shard stats four times a second, one JSON array per line, stamped ("null"
# while a shard does not answer: no retries, so a sample never waits long).
while kill -0 "$me" 2>/dev/null; do
  line=$("$BIN/reddit-client" --json --timeout-ms 400 --retry-ms 0 stats 2>/dev/null | tr -d '\n') || line=""
  printf '%s %s\n' "$(date +%s.%N)" "${line:-null}" >>"$out/stats.jsonl"
  sleep 0.25
done &
sampler=$!
# The run phase has begun once posts appear (no seeded corpus); kill the
# victim's engine (the supervisor's child) a third of the way in.
(
  wait_run_phase "$me" || exit 0
  started=$(date +%s.%N)
  sleep "$(python3 -c "print($seconds / 3)")"
  # By its full path: REDDIT_ENGINE_BIN may name a binary of another name
  # (and a process's short name is cut to 15 characters).
  pid=$(pgrep -P "$(cat "$run/shard-$victim.pid")" -f "^$(engine_bin) " || true)
  [ -n "$pid" ] || { echo "no engine process under shard $victim's supervisor" >&2; exit 1; }
  kill -9 "$pid"
  now=$(date +%s.%N)
  python3 -c "print($now - $started)" >"$out/killed-after"
  echo "$now" >"$out/killed-at"
  say "killed shard $victim's engine (pid $pid, kill -9)"
) &
"$BIN/reddit-client" simulate --users "$users" --processes 4 --in-flight "$in_flight" \
  --duration "$seconds" --online-mean "$online_mean" --offline-mean "$offline_mean" \
  --out "$out/sim" | tee "$out/sim.txt"
kill "$sampler" 2>/dev/null || true
cp "$run/shard-$victim.log" "$out/" 2>/dev/null || true
python3 - "$out" "$victim" <<'PY'
import json, os, sys
out, victim = sys.argv[1], int(sys.argv[2])
report = json.load(open(os.path.join(out, "sim", "report.json")))
try:
    at = float(open(os.path.join(out, "killed-after")).read())
    killed_at = float(open(os.path.join(out, "killed-at")).read())
except OSError:
    print("the shard was not killed (the run ended first?)")
    sys.exit(1)
tl = report["timeline"]
k = int(at)
def mean(xs):
    return sum(xs) / max(1, len(xs))
def row(i, s):
    m = s["latency_us_sum"] / s["ops"] / 1000 if s["ops"] else 0
    return f"{i:>4} {s['ops']:>7} {s['errors']:>6} {m:>8.1f} {s['max_us'] / 1000:>8.0f}"
# Stats samples: when the victim served again, its resync backlog, when it drained.
samples = []
for line in open(os.path.join(out, "stats.jsonl")):
    t, _, js = line.partition(" ")
    try:
        stats = json.loads(js)
    except ValueError:
        continue
    if stats:
        samples.append((float(t), {s["shard"]: s for s in stats}))
after = [(t, s) for t, s in samples if t > killed_at]
back = next((t for t, s in after if victim in s and s[victim]["uptime_ms"] < (t - killed_at) * 1000), None)
restarted = [(t, s[victim]["pending_sync"]) for t, s in after if victim in s and back and t >= back]
items = None
for line in open(os.path.join(out, f"shard-{victim}.log"), errors="replace"):
    if "resync: repeating" in line and "items=" in line:
        items = int(line.split("items=")[1].split()[0])  # the last one: the restart's
high = [t for t, p in restarted if p >= 1000]
drained = next((t for t, p in restarted if high and t > high[0] and p < 1000), None)
print(f"shard {victim} killed {at:.1f} s into the run")
print(f"  serving again: {'not seen' if back is None else f'{back - killed_at:.1f} s after the kill'}")
print(f"  resync queued at the restart: {'unknown' if items is None else f'{items:,} items'}; " + (
    f"backlog (pending_sync) seen up to {max(p for _, p in restarted):,}, under 1,000 again {drained - killed_at:.1f} s after the kill" if drained
    else f"delivered before the first sample after the restart ({(back - killed_at) if back else float('nan'):.1f} s after the kill)" if restarted and not high
    else "not delivered within the run"))
pre = tl[1:k]
print(f"  before the kill: {mean([s['ops'] for s in pre]):,.0f} ops/s, mean latency {mean([s['latency_us_sum'] / max(1, s['ops']) for s in pre]) / 1000:.1f} ms")
end_resync = int(((drained or back or killed_at) - killed_at) + at) + 1
during = tl[k:min(len(tl), end_resync + 1)]
if during:
    print(f"  from the kill until the shard served and its resync was delivered: {mean([s['ops'] for s in during]):,.0f} ops/s, mean latency {mean([s['latency_us_sum'] / max(1, s['ops']) for s in during]) / 1000:.1f} ms, errors {sum(s['errors'] for s in during)}")
post = tl[end_resync + 1:]
if post:
    print(f"  after: {mean([s['ops'] for s in post]):,.0f} ops/s, mean latency {mean([s['latency_us_sum'] / max(1, s['ops']) for s in post]) / 1000:.1f} ms")
t = report["total"]
print(f"  whole run: {t['throughput']:,.0f} ops/s, p99 {t.get('p99_ms')} ms, errors {sum(t['errors'].values())}; audit ok {report['audit']['ok']}, ledger ok {report['ledger_ok']}")
print("   sec     ops errors  mean ms   max ms")
for i, s in enumerate(tl):
    print(row(i, s) + ("   <- kill" if i == k else ""))
PY
