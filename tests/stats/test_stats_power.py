"""Power, MDE, sample size, duration and days left."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcp_servers.intelligence.stats import (
    ProportionStatistic,
    SampleMeanStatistic,
    compare,
    days_left,
    mde,
    power,
    sample_size,
)
from mcp_servers.intelligence.stats import messages as m
from mcp_servers.intelligence.stats._numeric import norm_ppf


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

