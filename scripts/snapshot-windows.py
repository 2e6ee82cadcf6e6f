#!/usr/bin/env python3
"""Lines up a simulation's per-second timeline with the snapshots its shards
made during the run, and compares the seconds inside a snapshot's window
(encoding, then storing) with the seconds outside any.

    scripts/snapshot-windows.py REPORT_JSON RUN_DIR

REPORT_JSON is the simulation's report.json (its `run_started_ms` puts second
0 of `timeline` on the clock); RUN_DIR holds the shards' logs (shard-N.log),
whose "snapshot encoded" and "snapshot stored" lines give each window.
scripts/bench.sh runs it after every durable simulation (snapshot-windows.txt).
Standard library only.
"""

import json
import re
import sys
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^(\S+Z)\s+\w+\s.*?(snapshot encoded; storing it|snapshot stored)(.*)$")
FIELD = re.compile(r"(\w+)=(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stamp_ms(text):
    """RFC 3339 UTC timestamp (tracing's default) to Unix milliseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def windows(run_dir):
    """(shard, start ms, encoded ms, end ms, bytes) for each stored snapshot."""
    found = []
    for log in sorted(Path(run_dir).glob("shard-*.log")):
        shard = log.stem.split("-", 1)[1]
        open_window = None
        for raw in log.read_text(errors="replace").splitlines():
            m = LINE.match(ANSI.sub("", raw))
            if not m:
                continue
            at = stamp_ms(m.group(1))
            fields = {k: int(v) for k, v in FIELD.findall(m.group(3))}
            if m.group(2).startswith("snapshot encoded"):
                open_window = (at - fields.get("encode_ms", 0), at, fields.get("bytes", 0))
            elif open_window is not None:
                start, encoded, size = open_window
                found.append((shard, start, encoded, at, size))
                open_window = None
    return found


def summary(name, seconds):
    if not seconds:
        return f"{name:>8}: no seconds"
    ops = sum(s["ops"] for s in seconds)
    lat = sum(s.get("latency_us_sum", 0) for s in seconds)
    maxes = sorted(s.get("max_us", 0) / 1000 for s in seconds)
    median_max = maxes[len(maxes) // 2]
    return (
        f"{name:>8}: {len(seconds):4d} s, {ops / len(seconds):9,.0f} ops/s, "
        f"mean latency {lat / max(ops, 1) / 1000:6.1f} ms, "
        f"per-second max: median {median_max:6.1f} ms, highest {maxes[-1]:6.1f} ms"
    )


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report = json.loads(Path(sys.argv[1]).read_text())
    start = report.get("run_started_ms", 0)
    if not start:
        sys.exit("the report has no run_started_ms (made by an older simulator)")
    timeline = report["timeline"]
    ws = windows(sys.argv[2])
    if not list(Path(sys.argv[2]).glob("shard-*.log")):
        sys.exit(f"no shard logs (shard-N.log) in {sys.argv[2]}")
    if not ws:
        # Either no snapshot was stored, or the log lines this script reads
        # ("snapshot encoded; storing it", "snapshot stored") have changed.
        print("no snapshot stored in the shards' logs; every second is outside")
    print(f"run of {len(timeline)} s from {start} (Unix ms); snapshots stored during it:")
    inside = set()
    for shard, begin, encoded, end, size in ws:
        a, b = (begin - start) / 1000, (end - start) / 1000
        if b < 0 or a > len(timeline):
            continue
        print(
            f"  shard {shard}: {a:7.1f} s to {b:7.1f} s, encoding {(encoded - begin) / 1000:4.1f} s, "
            f"storing {(end - encoded) / 1000:4.1f} s, {size / 2**20:6.1f} MiB"
        )
        # A second is inside if any part of it overlaps the window.
        inside.update(range(max(int(a), 0), min(int(b) + 1, len(timeline))))
    print(summary("inside", [timeline[i] for i in sorted(inside)]))
    print(summary("outside", [s for i, s in enumerate(timeline) if i not in inside]))


if __name__ == "__main__":
    main()
