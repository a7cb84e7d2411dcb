"""Sufficient statistics, the Welch test and the sequential test, as behaviour.

Oracles independent of our code: numpy on raw data for moments, scipy's
``ttest_ind(equal_var=False)`` for Welch, and the duality between p-values and
intervals that each method must satisfy.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from mcp_servers.stats import (
    BayesianConfig,
    FrequentistConfig,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    SequentialConfig,
    bayesian_compare,
    compare,
    sequential_compare,
)
from mcp_servers.stats import messages as m

# --- sufficient statistics ------------------------------------------------------------------------


def _stat(x: np.ndarray) -> SampleMeanStatistic:
    return SampleMeanStatistic(len(x), float(x.sum()), float((x * x).sum()))


def test_sample_mean_statistic_matches_numpy_on_raw_data() -> None:
    x = np.random.default_rng(0).lognormal(0, 1, 1000)
    stat = _stat(x)
    assert stat.mean == pytest.approx(x.mean(), rel=1e-12)
    assert stat.variance == pytest.approx(x.var(ddof=1), rel=1e-9)


def test_proportion_statistic_is_a_bernoulli_mean() -> None:
    stat = ProportionStatistic(n=200, sum=50)
    assert (stat.mean, stat.variance, stat.sum_squares) == (0.25, 0.25 * 0.75, 50)


def test_ratio_statistic_covariance_and_delta_method_variance() -> None:
    rng = np.random.default_rng(1)
    d = 1.0 + rng.poisson(3, 5000)
    m = rng.binomial(d.astype(int), 0.4).astype(float)
    stat = RatioStatistic(_stat(m), _stat(d), float((m * d).sum()))
    assert stat.covariance == pytest.approx(np.cov(m, d)[0, 1], rel=1e-9)
    assert stat.mean == pytest.approx(m.sum() / d.sum())
    # delta method: Var(m̄/d̄)·n ≈ bootstrap variance of the ratio of means · n
    idx = rng.integers(0, len(m), (2000, len(m)))
    boot = m[idx].sum(1) / d[idx].sum(1)
    assert stat.variance / len(m) == pytest.approx(boot.var(), rel=0.1)


means = st.floats(-1e3, 1e3, allow_nan=False)
samples = st.lists(means, min_size=2, max_size=40)


@given(samples, samples)
def test_statistics_merge_like_concatenated_data(x: list[float], y: list[float]) -> None:
    merged = _stat(np.array(x)) + _stat(np.array(y))
    whole = _stat(np.array(x + y))
    assert merged.n == whole.n
    assert merged.sum == pytest.approx(whole.sum, abs=1e-6)
    assert merged.sum_squares == pytest.approx(whole.sum_squares, rel=1e-9, abs=1e-6)


def test_merging_proportions_keeps_a_proportion_and_cuped_drops_theta() -> None:
    assert ProportionStatistic(10, 3) + ProportionStatistic(20, 5) == ProportionStatistic(30, 8)
    a = RegressionAdjustedStatistic(SampleMeanStatistic(5, 10, 30), SampleMeanStatistic(5, 8, 20), 17, theta=0.4)
    assert (a + a).theta is None and (a + a).n == 10


# --- Welch test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_scipy_on_raw_data(alternative: str) -> None:
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(10, 3, 400), rng.normal(10.4, 5, 250)
    ours = compare(_stat(control), _stat(treatment), FrequentistConfig(relative=False, alternative=alternative))
    ref = scipy_stats.ttest_ind(treatment, control, equal_var=False, alternative=alternative)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.effect == pytest.approx(treatment.mean() - control.mean(), rel=1e-12)
    ref_ci = ref.confidence_interval(0.95)
    assert ours.ci[0] == pytest.approx(ref_ci.low, rel=1e-9)
    assert ours.ci[1] == pytest.approx(ref_ci.high, rel=1e-9)


finite_stats = st.builds(
    lambda n, mean, sd: SampleMeanStatistic(n, n * mean, (n - 1) * sd * sd + n * mean * mean),
    st.integers(5, 100_000),
    st.floats(0.1, 1e4),
    st.floats(0.01, 1e3),
)


@settings(max_examples=150, deadline=None)
@given(finite_stats, finite_stats, st.sampled_from([0.01, 0.05, 0.1]), st.booleans())
def test_welch_interval_and_p_value_agree(a, b, alpha, relative) -> None:
    two = compare(a, b, FrequentistConfig(relative=relative, alpha=alpha))
    assume(two.error is None)
    lo, hi = two.ci
    assert lo <= two.effect <= hi
    assert (two.p_value < alpha) == (lo > 0 or hi < 0) or min(abs(lo), abs(hi)) < 1e-9 * (hi - lo)
    greater = compare(a, b, FrequentistConfig(relative=relative, alpha=alpha / 2, alternative="greater"))
    less = compare(a, b, FrequentistConfig(relative=relative, alpha=alpha / 2, alternative="less"))
    # a two-sided interval is the two one-sided bounds at half the level
    assert greater.ci[0] == pytest.approx(lo, rel=1e-9, abs=1e-12)
    assert less.ci[1] == pytest.approx(hi, rel=1e-9, abs=1e-12)
    assert two.p_value == pytest.approx(2 * min(greater.p_value, less.p_value), rel=1e-9, abs=1e-15)
    # the interval can be recomputed at its own level
    assert two.interval(alpha) == pytest.approx(two.ci)


@settings(max_examples=100, deadline=None)
@given(finite_stats, finite_stats)
def test_swapping_arms_negates_the_absolute_effect(a, b) -> None:
    ab = compare(a, b, FrequentistConfig(relative=False))
    ba = compare(b, a, FrequentistConfig(relative=False))
    assume(ab.error is None)
    assert ba.effect == pytest.approx(-ab.effect, rel=1e-9, abs=1e-12)
    assert ba.p_value == pytest.approx(ab.p_value, rel=1e-9, abs=1e-15)
    assert ba.se == pytest.approx(ab.se)


def test_relative_lift_keeps_its_sign_with_a_negative_baseline() -> None:
    control = SampleMeanStatistic(100, -1000.0, 10_500.0)  # mean −10
    treatment = SampleMeanStatistic(100, -500.0, 3_000.0)  # mean −5: an increase
    result = compare(control, treatment)
    assert result.effect == pytest.approx(0.5)
    assert result.ci[0] < result.effect < result.ci[1]


def test_lower_is_better_changes_the_verdict_not_the_numbers() -> None:
    control, treatment = SampleMeanStatistic(5000, 5000.0, 10_000.0), SampleMeanStatistic(5000, 5400.0, 11_000.0)
    up = compare(control, treatment)
    down = compare(control, treatment, FrequentistConfig(lower_is_better=True))
    assert (up.effect, up.ci, up.p_value) == (down.effect, down.ci, down.p_value)
    assert up.significant and (up.verdict, down.verdict) == ("better", "worse")


# --- impossible input -----------------------------------------------------------------------------

GOOD = SampleMeanStatistic(100, 100.0, 300.0)


@pytest.mark.parametrize(
    ("control", "treatment", "config", "error"),
    [
        (SampleMeanStatistic(1, 1.0, 1.0), GOOD, FrequentistConfig(), m.N_TOO_SMALL),
        (SampleMeanStatistic(0, 0.0, 0.0), GOOD, FrequentistConfig(), m.N_TOO_SMALL),
        (SampleMeanStatistic(100, 100.0, 100.0), GOOD, FrequentistConfig(), m.ZERO_VARIANCE),
        (ProportionStatistic(100, 0), ProportionStatistic(100, 10), FrequentistConfig(), m.ZERO_VARIANCE),
        (SampleMeanStatistic(100, 0.0, 50.0), GOOD, FrequentistConfig(relative=True), m.ZERO_BASELINE),
        (SampleMeanStatistic(100, math.nan, 50.0), GOOD, FrequentistConfig(), m.NON_FINITE_INPUT),
        (SampleMeanStatistic(100, 1.0, math.inf), GOOD, FrequentistConfig(), m.NON_FINITE_INPUT),
        (SampleMeanStatistic(10.5, 1.0, 5.0), GOOD, FrequentistConfig(), m.NON_INTEGER_N),  # type: ignore[arg-type]
        (ProportionStatistic(10, 11), ProportionStatistic(10, 5), FrequentistConfig(), m.INVALID_PROPORTION),
        (GOOD, RatioStatistic(GOOD, GOOD, 300.0), FrequentistConfig(), m.MIXED_STATISTIC_TYPES),
        ("not a statistic", GOOD, FrequentistConfig(), m.UNSUPPORTED_STATISTIC),
        ([100, 100.0, 300.0], GOOD, FrequentistConfig(), m.UNSUPPORTED_STATISTIC),  # unhashable, too
        (GOOD, GOOD, FrequentistConfig(alpha=1.5), m.INVALID_ALPHA),
        (GOOD, GOOD, FrequentistConfig(alternative="sideways"), m.INVALID_ALTERNATIVE),  # type: ignore[arg-type]
        (GOOD, GOOD, FrequentistConfig(test_value=math.nan), m.INVALID_TEST_VALUE),
        (
            RatioStatistic(GOOD, SampleMeanStatistic(100, 0.0, 10.0), 0.0),
            RatioStatistic(GOOD, GOOD, 300.0),
            FrequentistConfig(),
            m.ZERO_DENOMINATOR,
        ),
        (
            RatioStatistic(GOOD, SampleMeanStatistic(99, 100.0, 300.0), 300.0),
            RatioStatistic(GOOD, GOOD, 300.0),
            FrequentistConfig(),
            m.INCONSISTENT_N,
        ),
    ],
)
def test_impossible_input_returns_a_reason_not_a_crash(control, treatment, config, error) -> None:
    for fn, cfg in ((compare, config), (sequential_compare, SequentialConfig(**_seq_kwargs(config)))):
        result = fn(control, treatment, cfg)
        assert result.error == error
        assert (result.effect, result.ci, result.p_value, result.se) == (0.0, (0.0, 0.0), 1.0, 0.0)
        assert not result.significant and result.verdict == "inconclusive"


def _seq_kwargs(config: FrequentistConfig) -> dict:
    return {f: getattr(config, f) for f in ("relative", "alpha", "alternative", "test_value", "lower_is_better")}


def test_zero_baseline_is_fine_for_an_absolute_effect() -> None:
    result = compare(SampleMeanStatistic(100, 0.0, 50.0), GOOD, FrequentistConfig(relative=False))
    assert result.error is None and result.effect == 1.0


junk = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))


@settings(max_examples=250, deadline=None)
@given(junk, junk, junk, junk, junk, junk, st.booleans(), st.sampled_from(["two-sided", "greater", "less"]))
def test_no_input_makes_the_engine_raise_or_leak_nan(n1, s1, q1, n2, s2, q2, relative, alternative) -> None:
    a, b = SampleMeanStatistic(n1, s1, q1), SampleMeanStatistic(n2, s2, q2)
    for result in (
        compare(a, b, FrequentistConfig(relative=relative, alternative=alternative)),
        sequential_compare(a, b, SequentialConfig(relative=relative, alternative=alternative)),
    ):
        numbers = [result.effect, result.p_value, result.se, *result.ci]
        assert not any(math.isnan(x) for x in numbers)
        assert 0.0 <= result.p_value <= 1.0
        json.dumps(result.as_dict(), allow_nan=False)
    bayes = bayesian_compare(a, b, BayesianConfig(relative=relative))
    numbers = [bayes.effect, bayes.se, bayes.chance_to_win, *bayes.ci, *bayes.risk]
    assert not any(math.isnan(x) for x in numbers)
    assert 0.0 <= bayes.chance_to_win <= 1.0
    json.dumps(bayes.as_dict(), allow_nan=False)


def test_as_dict_turns_unbounded_sides_into_none() -> None:
    result = compare(GOOD, SampleMeanStatistic(100, 120.0, 400.0), FrequentistConfig(alternative="greater"))
    d = result.as_dict()
    assert d["ci"][1] is None and isinstance(d["ci"][0], float)
    assert d["verdict"] in ("better", "worse", "inconclusive")


# --- sequential -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(finite_stats, finite_stats, st.sampled_from([0.01, 0.05, 0.1]), st.sampled_from(["two-sided", "greater", "less"]))
def test_sequential_p_value_is_dual_to_its_confidence_sequence(a, b, alpha, alternative) -> None:
    result = sequential_compare(a, b, SequentialConfig(relative=False, alpha=alpha, alternative=alternative))
    assume(result.error is None)
    excludes_zero = result.ci[0] > 0 or result.ci[1] < 0
    margin = 1e-7 * (abs(result.effect) + result.se)
    assume(min(abs(result.ci[0]), abs(result.ci[1])) > margin)  # not on the boundary
    assert (result.p_value < alpha) == excludes_zero
    assert result.ci[0] <= result.effect <= result.ci[1]


large_stats = st.builds(
    lambda n, mean, sd: SampleMeanStatistic(n, n * mean, (n - 1) * sd * sd + n * mean * mean),
    st.integers(100, 100_000),
    st.floats(0.1, 1e4),
    st.floats(0.01, 1e3),
)


@settings(max_examples=100, deadline=None)
@given(large_stats, large_stats)
def test_confidence_sequence_is_wider_than_the_fixed_horizon_interval(a, b) -> None:
    """At realistic sizes (the sequence is asymptotic; with n = 5 Student's t tails are heavier)."""
    fixed = compare(a, b)
    seq = sequential_compare(a, b, SequentialConfig(n_star=a.n + b.n))
    assume(fixed.error is None)
    assert seq.ci[0] < fixed.ci[0] and seq.ci[1] > fixed.ci[1]
    if fixed.p_value > 1e-6:  # far in the tails Student's t is heavier than any Gaussian bound
        assert seq.p_value >= fixed.p_value
    assert seq.df is None and seq.rho is not None


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (SequentialConfig(n_star=0), m.INVALID_TUNING),
        (SequentialConfig(n_star=math.inf), m.INVALID_TUNING),
        (SequentialConfig(alternative="greater", alpha=0.5), m.ONE_SIDED_ALPHA_TOO_BIG),
    ],
)
def test_sequential_configuration_errors(config, error) -> None:
    assert sequential_compare(GOOD, SampleMeanStatistic(100, 120.0, 400.0), config).error == error
