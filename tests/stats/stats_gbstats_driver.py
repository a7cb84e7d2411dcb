"""Run GrowthBook's gbstats on a batch of cases: JSON list on stdin, JSON dict on stdout.

Executed by test_stats_gbstats_parity.py inside the isolated ``.venv-gbstats``
(gbstats pins an old pandas, so it never enters the project's environment).
Each case: {"id", "method", "a", "b", "config"}; statistics are dicts with a
"type" of mean | proportion | ratio | ra. Output per id: the gbstats numbers
or {"error": ...}.
"""

import json
import math
import sys

from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import (
    FrequentistConfig,
    OneSidedTreatmentGreaterTTest,
    OneSidedTreatmentLesserTTest,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)
from gbstats.utils import check_srm


def build(spec):
    kind = spec["type"]
    if kind == "mean":
        return SampleMeanStatistic(n=spec["n"], sum=spec["sum"], sum_squares=spec["sum_squares"])
    if kind == "proportion":
        return ProportionStatistic(n=spec["n"], sum=spec["sum"])
    if kind == "ratio":
        return RatioStatistic(
            n=spec["n"],
            m_statistic=build(spec["m"]),
            d_statistic=build(spec["d"]),
            m_d_sum_of_products=spec["m_d_sum_of_products"],
        )
    if kind == "ra":
        return RegressionAdjustedStatistic(
            n=spec["n"],
            post_statistic=build(spec["post"]),
            pre_statistic=build(spec["pre"]),
            post_pre_sum_of_products=spec["post_pre_sum_of_products"],
            theta=0,
        )
    raise ValueError(kind)


def finite(x):
    return x if math.isfinite(x) else None


def run(case):
    method, config = case["method"], case.get("config", {})
    if method == "srm":
        return {"p_value": float(check_srm(case["counts"], case["weights"]))}
    a, b = build(case["a"]), build(case["b"])
    if method == "theta":
        return {"theta": float(compute_theta(a, b))}
    diff = "relative" if config.get("relative", True) else "absolute"
    alpha = config.get("alpha", 0.05)
    if method == "bayesian":
        prior = config.get("prior")
        gb_prior = (
            GaussianPrior(mean=prior["mean"], variance=prior["variance"], proper=True)
            if prior
            else GaussianPrior()
        )
        cfg = EffectBayesianConfig(
            difference_type=diff,
            alpha=alpha,
            inverse=config.get("lower_is_better", False),
            prior_effect=gb_prior,
            prior_type="relative" if (prior or {}).get("relative", True) else "absolute",
        )
        r = EffectBayesianABTest(a, b, cfg).compute_result()
        return {
            "expected": r.expected,
            "ci": list(r.ci),
            "stddev": r.uplift.stddev,
            "chance_to_win": r.chance_to_win,
            "risk": list(r.risk),
            "error": r.error_message,
        }
    if method == "sequential":
        cfg = SequentialConfig(
            difference_type=diff, alpha=alpha, sequential_tuning_parameter=config.get("n_star", 5000)
        )
        r = SequentialTwoSidedTTest(a, b, cfg).compute_result()
    else:
        test = {"two-sided": TwoSidedTTest, "greater": OneSidedTreatmentGreaterTTest, "less": OneSidedTreatmentLesserTTest}[
            config.get("alternative", "two-sided")
        ]
        r = test(a, b, FrequentistConfig(difference_type=diff, alpha=alpha)).compute_result()
    return {
        "expected": r.expected,
        "ci": [finite(x) for x in r.ci],
        "stddev": r.uplift.stddev,
        "p_value": r.p_value,
        "error": r.error_message,
    }


def main():
    cases = json.load(sys.stdin)
    out = {}
    for case in cases:
        try:
            out[case["id"]] = run(case)
        except Exception as exc:  # report, don't die: one bad case must not hide the others
            out[case["id"]] = {"exception": f"{type(exc).__name__}: {exc}"}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
