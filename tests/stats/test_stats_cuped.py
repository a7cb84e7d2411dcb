"""CUPED: pooled θ, variance reduction, ratio metrics, and its failure modes."""

from __future__ import annotations

import numpy as np
import pytest

from mcp_servers.stats import (
    FrequentistConfig,
    RatioStatistic,
    RegressionAdjustedRatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compare,
    cuped_adjust,
)
from mcp_servers.stats import messages as m


def _s(x: np.ndarray) -> SampleMeanStatistic:
    return SampleMeanStatistic(len(x), float(x.sum()), float((x * x).sum()))


def _arm(rng, n, shift, noise=2.0):
    pre = rng.normal(20, 4, n)
    post = 5 + 0.75 * pre + rng.normal(0, noise, n) + shift
    return pre, post, RegressionAdjustedStatistic(_s(post), _s(pre), float((post * pre).sum()))


def test_theta_is_the_pooled_regression_slope_and_variance_drops_by_rho_squared() -> None:
    rng = np.random.default_rng(0)
    pre_a, post_a, a = _arm(rng, 20_000, 0.0)
    pre_b, post_b, b = _arm(rng, 20_000, 0.3)
    result = cuped_adjust(a, b)
    assert result.error is None
    pre, post = np.concatenate([pre_a, pre_b]), np.concatenate([post_a, post_b])
    assert result.theta == pytest.approx(np.cov(post, pre)[0, 1] / pre.var(ddof=1), rel=1e-9)
    rho2 = np.corrcoef(post, pre)[0, 1] ** 2
    assert result.variance_reduction == pytest.approx(rho2, abs=0.01)
    assert result.control.theta == result.treatment.theta == result.theta


def test_compare_fills_theta_itself_and_stays_unbiased() -> None:
    rng = np.random.default_rng(1)
    _, post_a, a = _arm(rng, 5_000, 0.0)
    _, post_b, b = _arm(rng, 5_000, 0.3)
    adjusted = compare(a, b, FrequentistConfig(relative=False))
    plain = compare(_s(post_a), _s(post_b), FrequentistConfig(relative=False))
    assert adjusted.se < 0.7 * plain.se
    assert adjusted.ci[0] < 0.3 < adjusted.ci[1]
    # relative lift is measured against the unadjusted control mean
    rel = compare(a, b)
    assert rel.control_mean == pytest.approx(a.post_statistic.mean - cuped_adjust(a, b).theta * a.pre_statistic.mean)
    assert rel.effect == pytest.approx(adjusted.effect / a.post_statistic.mean)


def test_a_useless_covariate_changes_almost_nothing() -> None:
    rng = np.random.default_rng(2)
    stats = []
    for shift in (0.0, 0.2):
        pre, post = rng.normal(0, 1, 10_000), rng.normal(3 + shift, 1, 10_000)
        stats.append(RegressionAdjustedStatistic(_s(post), _s(pre), float((post * pre).sum())))
    adjusted = compare(*stats)
    plain = compare(stats[0].post_statistic, stats[1].post_statistic)
    assert adjusted.se == pytest.approx(plain.se, rel=0.01)
    assert cuped_adjust(*stats).variance_reduction < 0.01


def test_constant_covariate_means_no_adjustment() -> None:
    post = SampleMeanStatistic(100, 500.0, 2600.0)
    flat_pre = SampleMeanStatistic(100, 100.0, 100.0)
    a = RegressionAdjustedStatistic(post, flat_pre, 500.0)
    result = cuped_adjust(a, a)
    assert result.theta == 0.0 and result.variance_reduction == 0.0
    assert compare(a, a, FrequentistConfig(relative=False)).se == pytest.approx(
        compare(post, post, FrequentistConfig(relative=False)).se
    )


def _ratio_arm(rng, n, lift):
    propensity = rng.beta(2, 5, n)  # each user's own click-through rate, stable over time
    d_pre = 1.0 + rng.poisson(3, n)
    m_pre = rng.binomial(d_pre.astype(int), propensity).astype(float)
    d_post = d_pre + rng.poisson(1, n)
    m_post = rng.binomial(d_post.astype(int), propensity * (1 + lift)).astype(float)
    return RegressionAdjustedRatioStatistic(
        _s(m_post), _s(d_post), _s(m_pre), _s(d_pre),
        m_post_m_pre_sum_of_products=float((m_post * m_pre).sum()),
        d_post_d_pre_sum_of_products=float((d_post * d_pre).sum()),
        m_pre_d_pre_sum_of_products=float((m_pre * d_pre).sum()),
        m_post_d_post_sum_of_products=float((m_post * d_post).sum()),
        m_post_d_pre_sum_of_products=float((m_post * d_pre).sum()),
        m_pre_d_post_sum_of_products=float((m_pre * d_post).sum()),
    )


def test_cuped_ratio_metric_reduces_variance_and_reverts_to_plain_ratio_at_theta_zero() -> None:
    rng = np.random.default_rng(3)
    a, b = _ratio_arm(rng, 20_000, 0.0), _ratio_arm(rng, 20_000, 0.05)
    adjusted = compare(a, b)
    as_ratio = [
        RatioStatistic(s.m_statistic_post, s.d_statistic_post, s.m_post_d_post_sum_of_products) for s in (a, b)
    ]
    plain = compare(*as_ratio)
    assert adjusted.se < 0.95 * plain.se
    assert cuped_adjust(a, b).variance_reduction > 0.1
    assert adjusted.ci[0] < 0.05 < adjusted.ci[1]
    forced_zero = compare(a.with_theta(0.0), b.with_theta(0.0))
    assert forced_zero.effect == pytest.approx(plain.effect)
    assert forced_zero.se == pytest.approx(plain.se, rel=1e-9)


@pytest.mark.parametrize(
    ("control", "treatment", "error"),
    [
        (
            RegressionAdjustedStatistic(SampleMeanStatistic(10, 10, 30), SampleMeanStatistic(10, 5, 9), 12),
            SampleMeanStatistic(10, 10, 30),
            m.MIXED_STATISTIC_TYPES,
        ),
        (
            RegressionAdjustedStatistic(SampleMeanStatistic(10, 10, 30), SampleMeanStatistic(9, 5, 9), 12),
            RegressionAdjustedStatistic(SampleMeanStatistic(10, 10, 30), SampleMeanStatistic(10, 5, 9), 12),
            m.INCONSISTENT_N,
        ),
        (
            RegressionAdjustedStatistic(SampleMeanStatistic(10, 10, 10), SampleMeanStatistic(10, 5, 9), 5),
            RegressionAdjustedStatistic(SampleMeanStatistic(10, 10, 10), SampleMeanStatistic(10, 5, 9), 5),
            m.ZERO_VARIANCE,
        ),
    ],
)
def test_cuped_errors(control, treatment, error) -> None:
    result = cuped_adjust(control, treatment)
    assert result.error == error and result.theta == 0.0
    assert compare(control, treatment).error == error
