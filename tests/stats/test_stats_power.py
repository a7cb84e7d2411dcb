"""Power, MDE, sample size, duration, days left and conditional power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcp_servers.stats import (
    FrequentistConfig,
    ProportionStatistic,
    SampleMeanStatistic,
    SequentialConfig,
    compare,
    conditional_power,
    days_left,
    mde,
    power,
    sample_size,
    sequential_compare,
)
from mcp_servers.stats import messages as m
from mcp_servers.stats._numeric import norm_ppf


def test_sample_size_matches_the_textbook_formula_for_a_mean() -> None:
    """n = 2σ²(z_{1−α/2} + z_{power})²/δ², up to the negligible far tail."""
    sigma2, delta = 4.0, 0.1
    textbook = 2 * sigma2 * (norm_ppf(0.975) + norm_ppf(0.8)) ** 2 / delta**2
    result = sample_size(delta, mean=10.0, variance=sigma2, relative=False)
    assert result.error is None
    assert result.n_per_variant == math.ceil(textbook)  # the far tail adds < 1 unit here
    assert result.total_n == 2 * result.n_per_variant


def test_power_mde_and_sample_size_are_mutually_consistent() -> None:
    plan = sample_size(0.05, mean=0.1, target_power=0.8, units_per_day=3000, n_variants=3)
    assert plan.error is None and plan.power >= 0.8
    assert plan.days == math.ceil(plan.total_n / 3000)
    assert power(0.05, plan.n_per_variant, 0.1).power >= 0.8
    assert power(0.05, plan.n_per_variant - 1, 0.1).power < 0.8
    detectable = mde(plan.n_per_variant, 0.1)
    assert detectable.power == pytest.approx(0.8, abs=1e-9)
    assert detectable.mde == pytest.approx(0.05, rel=1e-3)


def test_power_agrees_with_a_simulated_experiment() -> None:
    rng = np.random.default_rng(4)
    n, p, lift, reps = 20_000, 0.1, 0.05, 3000
    predicted = power(lift, n, p).power
    hits = 0
    for c, t in zip(rng.binomial(n, p, reps), rng.binomial(n, p * (1 + lift), reps), strict=True):
        hits += compare(ProportionStatistic(n, float(c)), ProportionStatistic(n, float(t))).significant
    assert hits / reps == pytest.approx(predicted, abs=0.03)


def test_stricter_designs_need_more_units() -> None:
    base = sample_size(0.03, mean=0.2).n_per_variant
    assert sample_size(0.03, mean=0.2, sequential=True).n_per_variant > base
    assert sample_size(0.03, mean=0.2, n_comparisons=4).n_per_variant > base
    assert sample_size(0.03, mean=0.2, target_power=0.9).n_per_variant > base
    assert sample_size(0.03, mean=0.2, alternative="greater").n_per_variant < base
    assert sample_size(0.06, mean=0.2).n_per_variant < base


def test_power_grows_with_n_and_effect() -> None:
    powers = [power(0.02, n, 0.3).power for n in (1000, 5000, 20_000, 100_000)]
    assert powers == sorted(powers) and powers[0] < 0.5 < powers[-1]
    assert power(0.04, 5000, 0.3).power > power(0.02, 5000, 0.3).power


def test_mde_of_a_conversion_rate_cannot_leave_the_unit_interval() -> None:
    result = mde(10, 0.95, relative=True)
    assert result.error == m.MDE_NOT_ATTAINABLE


def test_days_left_shrinks_to_zero_once_powered() -> None:
    control = SampleMeanStatistic(4000, 4000 * 10.0, 3999 * 9.0 + 4000 * 100.0)
    treatment = SampleMeanStatistic(4000, 4000 * 10.1, 3999 * 9.0 + 4000 * 10.1**2)
    running = days_left(control, treatment, mde=0.01, units_per_day=1000)
    assert running.error is None and running.days_left > 0 and not running.powered
    assert running.current_power < 0.8
    assert running.days_left == pytest.approx(running.additional_units / 1000, abs=1e-3)
    # adding exactly the units it asked for makes the comparison powered
    extra = running.additional_units // 2
    later = days_left(
        SampleMeanStatistic(4000 + extra, (4000 + extra) * 10.0, (3999 + extra) * 9.0 + (4000 + extra) * 100.0),
        SampleMeanStatistic(4000 + extra, (4000 + extra) * 10.1, (3999 + extra) * 9.0 + (4000 + extra) * 10.1**2),
        mde=0.01,
        units_per_day=1000,
    )
    assert later.days_left < 1e-2 or later.powered
    sequential = days_left(control, treatment, mde=0.01, units_per_day=1000, sequential=True)
    assert sequential.days_left > running.days_left


def test_days_left_is_zero_when_already_powered() -> None:
    big = SampleMeanStatistic(10**6, 10**7, 9 * (10**6 - 1) + 10**8)
    result = days_left(big, big, mde=0.05, units_per_day=100)
    assert result.powered and result.days_left == 0.0 and result.current_power > 0.8


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: power(0.0, 1000, 0.1), m.INVALID_MDE),
        (lambda: power(0.05, 1, 0.1), m.INVALID_SAMPLE_SIZE),
        (lambda: power(0.05, 1000, 1.5), m.INVALID_BASELINE),
        (lambda: power(0.05, 1000, 0.0, 1.0), m.INVALID_BASELINE),
        (lambda: power(0.05, 1000, 5.0, -1.0), m.INVALID_BASELINE),
        (lambda: power(0.05, 1000, 0.1, alpha=0.0), m.INVALID_ALPHA),
        (lambda: power(0.05, 1000, 0.1, n_comparisons=0), m.INVALID_COMPARISONS),
        (lambda: mde(1000, 0.1, target_power=1.0), m.INVALID_POWER),
        (lambda: sample_size(0.05, 0.1, units_per_day=0), m.INVALID_TRAFFIC),
        (lambda: sample_size(0.05, 0.1, n_variants=1), m.INVALID_VARIANT_COUNT),
        (lambda: sample_size(1e-9, 0.1), m.SAMPLE_SIZE_NOT_ATTAINABLE),
        (lambda: days_left(ProportionStatistic(10, 5), ProportionStatistic(10, 5), 0.05, units_per_day=-1), m.INVALID_TRAFFIC),
        (lambda: days_left(ProportionStatistic(10, 0), ProportionStatistic(10, 5), 0.05, units_per_day=10), m.ZERO_VARIANCE),
    ],
)
def test_planning_errors(call, error) -> None:
    assert call().error == error



def _continue(stat: SampleMeanStatistic, more: np.ndarray) -> SampleMeanStatistic:
    return SampleMeanStatistic(stat.n + len(more), stat.sum + float(more.sum()), stat.sum_squares + float((more**2).sum()))


@pytest.mark.parametrize("true_lift", [0.0, 0.02, 0.04])
def test_conditional_power_agrees_with_simulated_continuations(true_lift: float) -> None:
    """Simulate the rest of the experiment with the current estimate as the truth; count significant ends."""
    rng = np.random.default_rng(int(true_lift * 1000) + 5)
    n_now, n_more, sd = 3000, 3000, 2.0
    c0, t0 = rng.normal(10.0, sd, n_now), rng.normal(10.0 * (1 + true_lift), sd, n_now)
    control = SampleMeanStatistic(n_now, float(c0.sum()), float((c0**2).sum()))
    treatment = SampleMeanStatistic(n_now, float(t0.sum()), float((t0**2).sum()))
    for sequential in (False, True):
        predicted = conditional_power(control, treatment, 2 * n_more, relative=False, sequential=sequential)
        assert predicted.ok
        hits, reps = 0, 2000
        mean_c, mean_t = c0.mean(), t0.mean()  # the current trend, taken as the truth
        for _ in range(reps):
            final_c = _continue(control, rng.normal(mean_c, sd, n_more))
            final_t = _continue(treatment, rng.normal(mean_t, sd, n_more))
            if sequential:
                hits += sequential_compare(final_c, final_t, SequentialConfig(relative=False)).significant
            else:
                hits += compare(final_c, final_t, FrequentistConfig(relative=False)).significant
        assert hits / reps == pytest.approx(predicted.conditional_power, abs=0.035), (true_lift, sequential)


def test_conditional_power_separates_a_promising_arm_from_a_flat_one() -> None:
    flat = conditional_power(ProportionStatistic(20_000, 2000.0), ProportionStatistic(20_000, 2010.0), 40_000)
    promising = conditional_power(ProportionStatistic(20_000, 2000.0), ProportionStatistic(20_000, 2100.0), 40_000)
    assert flat.conditional_power < 0.1 < 0.6 < promising.conditional_power
    # Nothing more to come: significant now or never.
    now = compare(ProportionStatistic(20_000, 2000.0), ProportionStatistic(20_000, 2100.0))
    done = conditional_power(ProportionStatistic(20_000, 2000.0), ProportionStatistic(20_000, 2100.0), 0)
    assert done.conditional_power == float(now.significant)
    assert conditional_power(ProportionStatistic(10, 1.0), ProportionStatistic(10, 2.0), -5).error == m.INVALID_TRAFFIC
