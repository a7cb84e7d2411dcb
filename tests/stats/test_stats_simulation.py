"""Monte Carlo checks that the engine's error rates are what it claims (seeded, a few seconds).

* A/A tests: the fixed-horizon false-positive rate is 5 ± 1.5 % at alpha = 0.05.
* Real effects: 95 % intervals cover the true effect 95 ± 1.5 % of the time.
* Peeking: with 20 interim looks at an A/A test, stopping at the first
  p < 0.05 inflates the naive test's false-positive rate far above 5 %,
  while the always-valid sequential test stays at or below 5 %.

Data are simulated per unit (skewed revenue, conversions, ratio and CUPED
metrics) and reduced to sufficient statistics, the way SQL would.
With R replications the Monte Carlo standard error of a 5 % rate is
sqrt(0.05 · 0.95 / R), 0.34 points at R = 4000, so ±1.5 points is > 4 SEs.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcp_servers.stats import (
    FrequentistConfig,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    SequentialConfig,
    compare,
    sequential_compare,
)

REPS = 4000
N = 500  # units per arm


def _mean_stats(x: np.ndarray) -> list[SampleMeanStatistic]:
    n = x.shape[1]
    return [SampleMeanStatistic(n, float(s), float(q)) for s, q in zip(x.sum(1), (x * x).sum(1), strict=True)]


def _revenue(rng, lift):
    """Skewed revenue per user (log-normal); returns control, treatment stats and the true relative lift."""
    c = rng.lognormal(1.0, 0.8, (REPS, N))
    t = rng.lognormal(1.0, 0.8, (REPS, N)) * (1 + lift)
    return _mean_stats(c), _mean_stats(t), lift, True


def _conversion(rng, lift):
    p = 0.12
    c = rng.binomial(N, p, REPS)
    t = rng.binomial(N, p * (1 + lift), REPS)
    return [ProportionStatistic(N, float(k)) for k in c], [ProportionStatistic(N, float(k)) for k in t], lift, True


def _ratio(rng, lift):
    """Clicks per session per user: the true ratio is E[clicks]/E[sessions]."""

    def arm(scale):
        sessions = 1.0 + rng.poisson(2.0, (REPS, N))
        clicks = rng.binomial(sessions.astype(int), 0.3 * scale).astype(float)
        return [
            RatioStatistic(SampleMeanStatistic(N, float(cs), float(cq)), SampleMeanStatistic(N, float(ss), float(sq)), float(p))
            for cs, cq, ss, sq, p in zip(
                clicks.sum(1), (clicks**2).sum(1), sessions.sum(1), (sessions**2).sum(1), (clicks * sessions).sum(1),
                strict=True,
            )
        ]

    return arm(1.0), arm(1.0 + lift), lift, True


def _cuped(rng, lift):
    """Absolute effect on a metric whose pre-period value explains ~64 % of its variance."""

    def arm(shift):
        pre = rng.normal(10, 3, (REPS, N))
        post = 2 + 0.8 * pre + rng.normal(0, 1.8, (REPS, N)) + shift
        return [
            RegressionAdjustedStatistic(
                SampleMeanStatistic(N, float(ys), float(yq)), SampleMeanStatistic(N, float(xs), float(xq)), float(xy)
            )
            for ys, yq, xs, xq, xy in zip(post.sum(1), (post**2).sum(1), pre.sum(1), (pre**2).sum(1), (post * pre).sum(1), strict=True)
        ]

    return arm(0.0), arm(lift), lift, False


SCENARIOS = {"revenue": _revenue, "conversion": _conversion, "ratio": _ratio, "cuped": _cuped}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_aa_false_positive_rate_is_alpha(scenario: str) -> None:
    rng = np.random.default_rng(1 + list(SCENARIOS).index(scenario))
    control, treatment, _, relative = SCENARIOS[scenario](rng, 0.0)
    config = FrequentistConfig(relative=relative, alpha=0.05)
    results = [compare(a, b, config) for a, b in zip(control, treatment, strict=True)]
    assert all(r.error is None for r in results)
    fpr = np.mean([r.p_value < 0.05 for r in results])
    assert 0.035 <= fpr <= 0.065, f"{scenario}: A/A false-positive rate {fpr:.4f}"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_confidence_intervals_cover_the_true_effect(scenario: str) -> None:
    rng = np.random.default_rng(101 + list(SCENARIOS).index(scenario))
    lift = 0.5 if scenario == "cuped" else 0.15
    control, treatment, truth, relative = SCENARIOS[scenario](rng, lift)
    config = FrequentistConfig(relative=relative, alpha=0.05)
    results = [compare(a, b, config) for a, b in zip(control, treatment, strict=True)]
    coverage = np.mean([r.ci[0] <= truth <= r.ci[1] for r in results])
    assert 0.935 <= coverage <= 0.965, f"{scenario}: 95% CI coverage {coverage:.4f}"


def test_cuped_shrinks_intervals_without_moving_them() -> None:
    rng = np.random.default_rng(7)
    control, treatment, truth, _ = _cuped(rng, 0.5)
    config = FrequentistConfig(relative=False)
    adjusted = [compare(a, b, config) for a, b in zip(control[:500], treatment[:500], strict=True)]
    plain = [compare(a.post_statistic, b.post_statistic, config) for a, b in zip(control[:500], treatment[:500], strict=True)]
    ratio = np.mean([a.se for a in adjusted]) / np.mean([p.se for p in plain])
    assert 0.55 < ratio < 0.65  # sqrt(1 − 0.64) = 0.6
    assert abs(np.mean([a.effect for a in adjusted]) - truth) < 0.02


# --- peeking -----------------------------------------------------------------------------------------

LOOKS = 20
PER_LOOK = 250  # new units per arm between looks
PEEK_REPS = 2000


def _cumulative_normal(rng):
    """Exact cumulative (n, Σx, Σx²) of N(0, 1) data per arm at each look (x̄ and s² are independent)."""
    m = PER_LOOK
    means = rng.normal(0, 1 / np.sqrt(m), (PEEK_REPS, LOOKS))
    ss = rng.chisquare(m - 1, (PEEK_REPS, LOOKS))
    sums = np.cumsum(m * means, axis=1)
    squares = np.cumsum(ss + m * means**2, axis=1)
    return [[SampleMeanStatistic(m * (k + 1), float(sums[r, k]), float(squares[r, k])) for k in range(LOOKS)] for r in range(PEEK_REPS)]


def _cumulative_conversions(rng):
    hits = np.cumsum(rng.binomial(PER_LOOK, 0.1, (PEEK_REPS, LOOKS)), axis=1)
    return [[ProportionStatistic(PER_LOOK * (k + 1), float(hits[r, k])) for k in range(LOOKS)] for r in range(PEEK_REPS)]


@pytest.mark.parametrize(("metric", "relative"), [("normal", False), ("conversion", True)])
def test_sequential_test_survives_twenty_peeks_and_naive_test_does_not(metric: str, relative: bool) -> None:
    rng = np.random.default_rng(2024 if metric == "normal" else 2025)
    make = _cumulative_normal if metric == "normal" else _cumulative_conversions
    control, treatment = make(rng), make(rng)
    final_n = 2 * PER_LOOK * LOOKS
    naive_cfg = FrequentistConfig(relative=relative)
    seq_cfg = SequentialConfig(relative=relative, n_star=final_n)

    naive_stops = seq_stops = 0
    seq_always_covers = 0
    for a_path, b_path in zip(control, treatment, strict=True):
        naive_hit = seq_hit = False
        covered = True
        for a, b in zip(a_path, b_path, strict=True):
            naive_hit = naive_hit or compare(a, b, naive_cfg).p_value < 0.05
            s = sequential_compare(a, b, seq_cfg)
            seq_hit = seq_hit or s.p_value < 0.05
            covered = covered and s.ci[0] <= 0.0 <= s.ci[1]
        naive_stops += naive_hit
        seq_stops += seq_hit
        seq_always_covers += covered

    naive_fpr, seq_fpr = naive_stops / PEEK_REPS, seq_stops / PEEK_REPS
    assert naive_fpr > 0.10, f"naive peeking FPR {naive_fpr:.4f} should be well above 5%"
    assert seq_fpr <= 0.05, f"sequential FPR under 20 peeks {seq_fpr:.4f}"
    # the guarantee behind it: the confidence sequence covers the truth at every look at once
    assert seq_always_covers / PEEK_REPS >= 0.95
