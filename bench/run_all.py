"""Run every benchmark and write a markdown report (bench/results/latest.md).

Each bench script prints its own figures; this runs them one after another (never in
parallel: they would measure each other), with a time limit each, records the machine,
its load before each run, and every figure line.

    python bench/run_all.py            # full sizes (tens of minutes on 2 cores)
    python bench/run_all.py --quick    # smaller sizes, same code paths
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script, full arguments, quick arguments, what the issue asks for
BENCHES = [
    ("bench_stats.py", [], ["--seconds", "1", "--rounds", "1"], "analyses/s, 3 arms × 5 metrics (goal ≥2,000/s)"),
    ("bench_assignment.py", [], ["--calls", "500", "--batch", "200000", "--sdk", "50000"],
     "get_variant over stdio p50/p99 (goal p50 ≤1.5 ms); batch assignments/s vs growthbook SDK (goal ≥5×)"),
    ("bench_router.py", [], ["-n", "1000"], "router/direct latency ratio (goal ≤1.10); stdio round trip p50"),
    ("bench_clickhouse.py", [], ["--events", "1000000", "--json-events", "100000", "--repeat", "2"],
     "ingest rows/s (goal ≥1M/s Arrow, 50k batches); get_variant_statistics on 10M events (goal ≤0.5 s)"),
    ("bench_chroma.py", [], ["--sizes", "10000", "--real-docs", "1000", "--queries", "50", "--stress-size", "0"],
     "add docs/s, query p50/p99, recall@10 at 10k/100k (goal at 100k: p50 ≤25 ms, recall ≥0.95)"),
    ("bench_intelligence.py", [], ["--events", "1000000", "--repeat", "2", "--journeys", "300", "--held-out", "100"],
     "analyze_experiment_performance on 10M events, 3 arms + CUPED (goal ≤1 s); journey prediction accuracy"),
    ("bench_stream.py", [], ["--users", "20000"],
     "end-to-end events/s beside a bare baseline (goal ≥150k/s and ≥0.8× baseline)"),
    ("bench_rest.py", [], ["--requests", "2000", "--seconds", "10"], "REST get-variant requests/s and p99"),
    ("bench_broker.py", [], ["--events", "50000"], "embedded broker produce/consume events/s per storage engine"),
]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", nargs="*", help="run only these scripts (e.g. bench_stats.py)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per benchmark")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()

    rows = []
    for script, full, quick, goal in BENCHES:
        if args.only and script not in args.only:
            continue
        load = os.getloadavg()[0]
        started = time.monotonic()
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"== {script} (load {load:.1f})", file=sys.stderr, flush=True)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            figures = [line.rstrip() for line in done.stdout.splitlines() if line.strip()]
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            figures, status = [], f"timed out after {args.timeout:.0f}s"
        rows.append((script, goal, load, time.monotonic() - started, status, figures))
        print("\n".join(figures), file=sys.stderr, flush=True)

    lines = [f"# NeonBlue benchmarks — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "",
             f"Machine: {machine()}. Mode: {'quick' if args.quick else 'full'}.", "",
             "| benchmark | what the issue asks | load before | seconds | status |", "|---|---|---|---|---|"]
    lines += [f"| {s} | {g} | {ld:.1f} | {t:.0f} | {st.splitlines()[0] if st else ''} |" for s, g, ld, t, st, _ in rows]
    for script, _, _, _, _, figures in rows:
        lines += ["", f"## {script}", "", "```", *figures, "```"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0 if all(r[4] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
