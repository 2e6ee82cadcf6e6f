#!/usr/bin/env bash
# The cluster benchmark: the mixed simulator workload (4 durable shards, each
# with one warm standby; 4 client processes, closed loop) on one nats-server and
# then on a 3-node NATS cluster with the logs replicated on all three (R3), in
# one run, and the ratio. Every half second it samples each standby's lag (log
# records behind its owner, from shard.stats) and reports the distribution.
# A third run repeats the cluster one and kills one NATS node (kill -9) a third
# of the way into the run phase: it reports the throughput dip (worst second
# against the mean before the kill) and the seconds until throughput is back
# to 90% of it. Starts and stops everything itself.
#
#   scripts/bench-cluster.sh [--seconds S] [--users N] [--in-flight N]
#
# Results go to run/bench-cluster-<time>/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=20 users=10000 in_flight=64 shards=4
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --in-flight) in_flight=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
out="$ROOT/run/bench-cluster-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
{
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "command: scripts/bench-cluster.sh --seconds $seconds --users $users --in-flight $in_flight"
} | tee "$out/machine.txt" >&2
export REDDIT_STORAGE=jetstream
for case in 1 3 3-kill; do
  nodes=${case%%-*}
  run="$ROOT/run/bench-cluster-run-$$-$case"
  (
    start_throwaway_system "$shards" "$run" 0 0 "$nodes" 1
    export NATS_URL="$SERVICE_URL"
    say "== $nodes NATS node(s): mixed workload, $users users, 4 client processes, $in_flight in flight each, ${seconds}s"
    me=$BASHPID
    # Standby lag samples, one JSON array of shard stats per line (ends with
    # this subshell at the latest).
    while kill -0 "$me" 2>/dev/null; do
      "$BIN/reddit-client" --json stats 2>/dev/null | tr -d '\n' >>"$out/lag-$case.jsonl" && echo >>"$out/lag-$case.jsonl"
      sleep 0.5
    done &
    sampler=$!
    if [ "$case" = 3-kill ]; then
      # The run phase has begun once posts appear; kill node 2 a third in.
      (
        wait_run_phase "$me" || exit 0
        started=$(date +%s.%N)
        sleep "$(python3 -c "print($seconds / 3)")"
        kill -9 "$(cat "$run/nats-2.pid")"
        python3 -c "print($(date +%s.%N) - $started)" >"$out/killed-after"
        say "killed NATS node 2 (kill -9)"
      ) &
    fi
    "$BIN/reddit-client" simulate --users "$users" --processes 4 --in-flight "$in_flight" \
      --duration "$seconds" --offline-mean 10 --online-mean 30 --out "$out/nodes-$case" |
      tee "$out/nodes-$case.txt"
    kill "$sampler" 2>/dev/null || true
  )
done
python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(n):
    with open(os.path.join(out, f"nodes-{n}", "report.json")) as f:
        return json.load(f)
one, three = load(1), load(3)
def line(r):
    t = r["total"]
    return t["throughput"], t.get("p99_ms"), t["ok"], sum(t["errors"].values())
(o1, p1, ok1, e1), (o3, p3, ok3, e3) = line(one), line(three)
print(f"single server:          {o1:,.0f} ops/s, p99 {p1} ms, {ok1} ok, {e1} errors")
print(f"3-node cluster (R3):    {o3:,.0f} ops/s, p99 {p3} ms, {ok3} ok, {e3} errors")
print(f"ratio cluster / single: {o3 / o1:.2f}")
for n, r in ((1, one), (3, three)):
    print(f"nodes {n}: audit ok {r['audit']['ok']}, ledger ok {r['ledger_ok']}")
def lags(n):
    found = []
    try:
        with open(os.path.join(out, f"lag-{n}.jsonl")) as f:
            for line in f:
                try:
                    shards = json.loads(line)
                except ValueError:
                    continue
                for s in shards:
                    for sb in ((s.get("lease") or {}).get("standbys") or []):
                        found.append(sb["lag"])
    except OSError:
        pass
    return sorted(found)
try:
    kill = load("3-kill")
    at = float(open(os.path.join(out, "killed-after")).read())
    ops = [s["ops"] for s in kill["timeline"]]
    k = int(at)
    before = sum(ops[1:k]) / max(1, len(ops[1:k]))
    worst = min(ops[k:]) if ops[k:] else 0
    low = ops.index(worst, k)
    back = next((i for i in range(low, len(ops)) if ops[i] >= 0.9 * before), None)
    t = kill["total"]
    print(f"3 nodes, node 2 killed {at:.1f} s into the run: {t['throughput']:,.0f} ops/s overall, p99 {t.get('p99_ms')} ms, {sum(t['errors'].values())} errors")
    print(f"  before the kill {before:,.0f} ops/s; worst second after it {worst:,} ops/s ({worst / before:.2f}x), {low - k} s after the kill")
    print(f"  back to 90%: {'never within the run' if back is None else f'{back - at:.0f} s after the kill'}")
    print(f"  audit ok {kill['audit']['ok']}, ledger ok {kill['ledger_ok']}")
    print("  ops/s per second: " + " ".join(str(o) for o in ops))
except (OSError, KeyError, ValueError) as e:
    print(f"node-kill run: no result ({e})")
for n in (1, 3):
    l = lags(n)
    if l:
        q = lambda p: l[min(len(l) - 1, int(len(l) * p))]
        print(f"nodes {n}: standby lag over {len(l)} samples (records behind the owner): median {q(0.5)}, p99 {q(0.99)}, max {l[-1]}")
    else:
        print(f"nodes {n}: no standby lag samples")
PY
say "results in $out"
