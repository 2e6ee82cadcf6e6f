#!/usr/bin/env bash
# Two engine binaries side by side: runs the mixed simulator workload
# (scripts/bench.sh --sim-only, one storage mode) with binary A, then B, then
# A, ..., each on a fresh system, and reports each pair and the ratio of the
# means. This box's speed drifts between runs by more than most changes move
# it, so a change is measured only against runs made beside it.
#
#   scripts/bench-ab.sh --a BIN --b BIN [--pairs N] [-- bench.sh options]
#
# The bench.sh options default to `--sim-only --sim-seconds 20 --memory-users 0
# --storage jetstream`; give `--sim-only` and one `--storage` if you pass your
# own. Keep a binary before a change with
# `cp target/release/reddit-engine /tmp/engine-before`. Everything but the
# engine (clients, NATS) is the current build.
#
# Results: run/bench-ab-<time>/summary.txt, and each run's bench.sh directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

a="" b="" pairs=4
while [ $# -gt 0 ]; do
  case "$1" in
    --a) a=$2; shift 2 ;;
    --b) b=$2; shift 2 ;;
    --pairs) pairs=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown option $1" ;;
  esac
done
[ -x "$a" ] && [ -x "$b" ] || die "--a and --b must name engine binaries (got ${a:-nothing} and ${b:-nothing})"
[[ "$pairs" =~ ^[1-9][0-9]*$ ]] || die "--pairs must be a positive number (got $pairs)"
opts=("$@")
[ ${#opts[@]} -gt 0 ] || opts=(--sim-only --sim-seconds 20 --memory-users 0 --storage jetstream)
storage=jetstream
for ((i = 0; i < ${#opts[@]}; i++)); do
  [ "${opts[$i]}" = --storage ] && storage=${opts[$((i + 1))]:-}
done
[[ "$storage" =~ ^(jetstream|memory)$ ]] || die "give one --storage (jetstream or memory), not \"$storage\""

out="$ROOT/run/bench-ab-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
cp "$a" "$out/engine-a"
cp "$b" "$out/engine-b"
summary="$out/summary.txt"
{
  echo "A: $a ($(sha256sum "$a" | cut -c1-12))"
  echo "B: $b ($(sha256sum "$b" | cut -c1-12))"
  echo "each run: scripts/bench.sh ${opts[*]}"
  printf '%-5s %-4s %10s %9s %9s %8s  %s\n' pair bin ops/s "p50 ms" "p99 ms" B/write run
} | tee "$summary"

# One run of binary $2 (a or b) in pair $1: its ops/s, p50, p99, and the
# log bytes per write (the mean over the shards).
run_one() {
  local pair=$1 which=$2 log dir sim
  log="$out/$pair-$which.log"
  REDDIT_ENGINE_BIN="$out/engine-$which" "$ROOT/scripts/bench.sh" "${opts[@]}" >"$log" 2>&1 ||
    die "run $pair $which failed: see $log"
  dir=$(sed -n 's/^results in //p' "$log" | tail -1)
  sim="$dir/$storage/sim.txt"
  [ -f "$sim" ] || die "run $pair $which wrote no $sim: see $log"
  grep -q "ledger.*-> OK" "$sim" && grep -q "^audit: OK" "$sim" ||
    die "run $pair $which: the ledger or the audit failed ($sim)"
  awk -v pair="$pair" -v which="$which" -v dir="$dir" -v stats="$dir/$storage/stats.txt" '
    /^ ALL / { ops = $4; p50 = $5; p99 = $7 }
    END {
      bytes = "-"
      while ((getline line < stats) > 0) {
        n = split(line, f, " ")
        if (f[1] ~ /^[0-9]+$/ && f[n] ~ /^[0-9]+$/) { sum += f[n]; shards++ }
      }
      if (shards > 0) bytes = sprintf("%.0f", sum / shards)
      printf "%-5s %-4s %10s %9s %9s %8s  %s\n", pair, which, ops, p50, p99, bytes, dir
    }' "$sim"
}

for ((p = 1; p <= pairs; p++)); do
  say "pair $p of $pairs: A, then B"
  run_one "$p" a | tee -a "$summary"
  run_one "$p" b | tee -a "$summary"
done

awk '
  $2 == "a" && $3 ~ /^[0-9]+$/ { sa += $3; na++; ra[$1] = $3 }
  $2 == "b" && $3 ~ /^[0-9]+$/ { sb += $3; nb++; if ($1 in ra) { r = $3 / ra[$1]; ratios = ratios sprintf(" %.2f", r) } }
  END {
    printf "mean ops/s: A %.0f, B %.0f; B/A %.3f (per pair:%s)\n", sa / na, sb / nb, (sb / nb) / (sa / na), ratios
  }' "$summary" | tee -a "$summary"
say "results in $out"
