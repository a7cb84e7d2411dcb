"""Statistics engine throughput: analyses per second of a 3-arm, 5-metric experiment.

One *analysis* is what the intelligence server computes for one read of an
experiment, with the experiment's configured engine (GrowthBook's unit):
  * SRM check of the 3-arm split;
  * for each of the 2 treatment arms x 5 metrics (conversion, revenue, clicks per
    session [ratio], revenue with CUPED, latency [lower is better]) the engine's
    comparison (relative lift): Welch, sequential or Bayesian;
  * a non-inferiority guardrail on latency for both arms;
  * for the frequentist engines, Holm over the 10 results with adjusted CIs.
"all engines" runs Welch + sequential + Bayesian for every pair, plus Holm and
Benjamini-Hochberg. Inputs are sufficient statistics (as ClickHouse returns
them), so the cost does not depend on the number of users. The engine memoises
effect moments for the last 128 pairs; 200 distinct experiments rotate, so only
reuse within one analysis can hit.
Rates are analyses per CPU-second of this process (robust to other load on
the machine), with the wall-clock rate alongside.
Goal (issue 6): >= 2,000 analyses/s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mcp_servers.stats import (
    BayesianConfig,
    FrequentistConfig,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    SequentialConfig,
    bayesian_compare,
    benjamini_hochberg,
    compare,
    holm,
    non_inferiority,
    sequential_compare,
    srm_check,
)

WEIGHTS = [1 / 3, 1 / 3, 1 / 3]


def _mean(rng, n, mu, sd) -> SampleMeanStatistic:
    s = n * rng.normal(mu, sd / np.sqrt(n))
    return SampleMeanStatistic(n, float(s), float((n - 1) * sd * sd + s * s / n))


def make_experiment(rng) -> tuple[list[int], dict[str, list]]:
    counts = rng.multinomial(60_000, WEIGHTS).tolist()
    metrics: dict[str, list] = {name: [] for name in ("conversion", "revenue", "ctr", "revenue_cuped", "latency")}
    for n in counts:
        metrics["conversion"].append(ProportionStatistic(n, float(rng.binomial(n, 0.11))))
        metrics["revenue"].append(_mean(rng, n, 12.0, 30.0))
        sessions, clicks = _mean(rng, n, 3.0, 1.5), _mean(rng, n, 0.9, 1.1)
        metrics["ctr"].append(RatioStatistic(clicks, sessions, float(n * (0.4 * 1.1 * 1.5 + 2.7))))
        post, pre = _mean(rng, n, 12.0, 30.0), _mean(rng, n, 11.0, 28.0)
        metrics["revenue_cuped"].append(RegressionAdjustedStatistic(post, pre, float(n * (0.6 * 30 * 28 + 132.0))))
        metrics["latency"].append(_mean(rng, n, 180.0, 60.0))
    return counts, metrics


FREQ = FrequentistConfig()
SEQ = SequentialConfig(n_star=40_000)
BAYES = BayesianConfig()
DOWN = {
    "frequentist": FrequentistConfig(lower_is_better=True),
    "sequential": SequentialConfig(lower_is_better=True, n_star=40_000),
    "bayesian": BayesianConfig(lower_is_better=True),
}
UP = {"frequentist": FREQ, "sequential": SEQ, "bayesian": BAYES}
ENGINE = {"frequentist": compare, "sequential": sequential_compare, "bayesian": bayesian_compare}


def analyse(counts: list[int], metrics: dict[str, list], engine: str) -> dict:
    """One read of the experiment with one engine ('all' runs the three)."""
    srm = srm_check(counts, WEIGHTS)
    engines = list(ENGINE) if engine == "all" else [engine]
    out: dict = {"srm": srm}
    frequentist = []
    for name, arms in metrics.items():
        down = name == "latency"
        control = arms[0]
        for arm, treatment in enumerate(arms[1:], start=1):
            for e in engines:
                result = ENGINE[e](control, treatment, (DOWN if down else UP)[e])
                out[(name, arm, e)] = result
                if e != "bayesian":
                    frequentist.append(result)
            if down:
                out[(name, arm, "guardrail")] = non_inferiority(
                    control, treatment, 0.02, lower_is_better=True, sequential=engine == "sequential"
                )
    if frequentist:
        out["holm"] = holm(frequentist)
        if engine == "all":
            out["bh"] = benjamini_hochberg(frequentist)
    return out


def rate(experiments: list, engine: str, seconds: float) -> tuple[float, float]:
    done = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.process_time() - cpu < seconds:
        for e in experiments:
            analyse(*e, engine)
        done += len(experiments)
    return done / (time.process_time() - cpu), done / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds measured per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    experiments = [make_experiment(rng) for _ in range(200)]
    check = analyse(*experiments[0], "all")
    assert not check["srm"].error
    assert all(getattr(r, "error", None) is None for k, r in check.items() if isinstance(k, tuple)), "bench inputs invalid"

    print("statistics engine: 3 arms x 5 metrics, sufficient statistics in, one analysis per experiment read")
    c, m = experiments[0]
    pieces = {  # the same pair repeatedly: the comparisons run on memoised moments
        "compare (Welch)": lambda: compare(m["revenue"][0], m["revenue"][1]),
        "sequential_compare": lambda: sequential_compare(m["revenue"][0], m["revenue"][1]),
        "bayesian_compare": lambda: bayesian_compare(m["revenue"][0], m["revenue"][1]),
        "srm_check": lambda: srm_check(c, WEIGHTS),
    }
    for name, fn in pieces.items():
        reps, t0 = 20_000, time.process_time()
        for _ in range(reps):
            fn()
        print(f"  {name:<20} {1e6 * (time.process_time() - t0) / reps:6.1f} us/call")
    for engine in ("frequentist", "sequential", "bayesian", "all"):
        for e in experiments[:50]:  # warm up
            analyse(*e, engine)
        rounds = [rate(experiments, engine, args.seconds) for _ in range(args.rounds)]
        cpu_rate = statistics.median(r[0] for r in rounds)
        wall_rate = statistics.median(r[1] for r in rounds)
        label = "all engines" if engine == "all" else f"{engine} engine"
        print(f"analyses/s, {label:<20} {cpu_rate:8,.0f} per CPU-second ({wall_rate:,.0f} wall-clock)")
    print("goal: >= 2,000 analyses/s")


if __name__ == "__main__":
    main()
