"""route_query on the labelled corpus: the share of questions planned with the right tool and arguments.

    .venv/bin/python bench/bench_nl.py            # both splits, every miss listed
    .venv/bin/python bench/bench_nl.py --split test

Runs the real router (embedded PostgreSQL in a temp dir, chDB, Chroma) with the demo's five
experiments in the registry, asks route_query every question of tests/nl/corpus.yaml through an
MCP client and scores the plans (mcp_router/gateway/nl/evaluation.py). The test split is what
the classifier never saw (its examples are the train split). Also prints the calibration of the
confidence on the test split (mean confidence vs accuracy) and the planning latency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "nl"))

from mcp_router.apps.demo import portfolio  # noqa: E402
from mcp_router.gateway.nl.evaluation import load_corpus, score, summary  # noqa: E402
from mcp_router.runtime.embedded import EmbeddedPostgres, free_port  # noqa: E402
from mcp_router.runtime.serving import open_router  # noqa: E402
from schemas.logs import configure_logging  # noqa: E402
from schemas.settings import Settings  # noqa: E402

CORPUS = ROOT / "tests" / "nl" / "corpus.yaml"
EXPERIMENTS = ("checkout-1step", "homepage-aa", "pricing-premium", "support-bot-prompt", "onboarding-bandit")


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="nb-bench-nl-"))
    pg = EmbeddedPostgres(home / "pgdata", port=free_port())
    pg.start()
    try:
        settings = Settings(_env_file=None, neonblue_home=home, database_url=pg.dsn, clickhouse_url=None,
                            chroma_url=None, log_level="WARNING", tool_profile="full")
        print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; corpus {CORPUS.relative_to(ROOT)}")
        async with open_router(settings) as router, Client(router.server) as client:
            for exp in portfolio(scale=0.05):
                if exp.key in EXPERIMENTS:
                    await client.call_tool("create_experiment", {"experiment": exp.definition})
                    await client.call_tool("start_experiment", {"experiment": exp.key})
            started = time.perf_counter()
            await client.call_tool("route_query", {"query": "warm up: is the checkout experiment significant?"})
            print(f"first question (fits the classifier, loads the model when nothing did): "
                  f"{time.perf_counter() - started:.1f} s")
            for split in args.split:
                items = [i for i in load_corpus(CORPUS) if i["split"] == split]
                scores, latencies, calibration = [], [], []
                for item in items:
                    started = time.perf_counter()
                    result = await client.call_tool("route_query", {"query": item["q"]})
                    latencies.append((time.perf_counter() - started) * 1000)
                    plan = result.structured_content or {}
                    s = score(item, plan)
                    scores.append(s)
                    calibration.append((plan.get("confidence", 0.0), s.intent_ok))
                print(f"\n{split} split, {len(items)} questions: {summary(scores)}")
                print(f"  planning latency p50 {statistics.median(latencies):.0f} ms, "
                      f"max {max(latencies):.0f} ms")
                for low, high in ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01)):
                    bucket = [ok for confidence, ok in calibration if low <= confidence < high]
                    if bucket:
                        print(f"  confidence {low:.2f}-{min(high, 1):.2f}: {len(bucket):3d} questions, "
                              f"intent right {sum(bucket) / len(bucket):.0%}")
                for s in scores:
                    if not s.ok:
                        print(f"  miss: {s.question!r}: {s.why}")
    finally:
        pg.stop()


if __name__ == "__main__":
    configure_logging("WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", nargs="+", default=["test", "train"], choices=["test", "train"])
    anyio.run(main, parser.parse_args())
