"""GrowthBook gbstats' published test vectors, reproduced to the published 5 decimals.

Source: growthbook/growthbook ``packages/stats/tests`` (frequentist/test_tests.py,
bayesian/test_tests.py, test_shared_models.py, test_midexperimentpower.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcp_servers.stats import (
    BayesianConfig,
    FrequentistConfig,
    GaussianPrior,
    ProportionStatistic,
    RegressionAdjustedRatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    SequentialConfig,
    bayesian_compare,
    compare,
    days_left,
    sequential_compare,
)
from mcp_servers.stats.bayesian import expected_losses
from mcp_servers.stats.cuped import pooled_theta
from mcp_servers.stats.messages import ZERO_VARIANCE

S = SampleMeanStatistic


def r5(x: float) -> float:
    return round(x, 5) if math.isfinite(x) else x


def assert_vector(result, effect, ci, se, p_value=None) -> None:
    assert result.error is None
    assert r5(result.effect) == effect
    assert (r5(result.ci[0]), r5(result.ci[1])) == ci
    assert r5(result.se) == se
    if p_value is not None:
        assert r5(result.p_value) == p_value


# Welch, the anchor vector and its siblings
CONTROL = S(n=3407, sum=1396.87, sum_squares=52377.9767)
TREATMENT = S(n=3461, sum=2422.7, sum_squares=134698.29)
CONTROL_3000 = S(n=3000, sum=1396.87, sum_squares=52377.9767)


def test_welch_relative_lift() -> None:
    assert_vector(compare(CONTROL, TREATMENT), 0.70732, (-0.03526, 1.44989), 0.37879, 0.06191)


def test_welch_absolute_difference() -> None:
    result = compare(CONTROL, TREATMENT, FrequentistConfig(relative=False))
    assert_vector(result, 0.29, (0.04538, 0.53462), 0.12478, 0.02016)


def test_two_proportions_relative() -> None:
    result = compare(ProportionStatistic(n=28, sum=14), ProportionStatistic(n=30, sum=16))
    assert_vector(result, 0.06667, (-0.47767, 0.61101), 0.2717, 0.80707)


def test_negative_variance_from_inconsistent_sums_is_an_error() -> None:
    result = compare(S(n=2, sum=1396.87, sum_squares=52377.9767), TREATMENT)
    assert result.error == ZERO_VARIANCE
    assert (result.effect, result.ci, result.p_value) == (0.0, (0.0, 0.0), 1.0)


@pytest.mark.parametrize(
    ("relative", "alternative", "effect", "ci", "se", "p"),
    [
        (True, "greater", 0.5033610858562358, (-0.045136675850396046, math.inf), 0.3334122146400735, 0.06558262868467746),
        (False, "greater", 0.23437666666666668, (0.020791480063255735, math.inf), 0.12983081254184736, 0.03554272489873023),
        (True, "less", 0.5033610858562358, (-math.inf, 1.0518588475628676), 0.3334122146400735, 0.9344173713153225),
        (False, "less", 0.23437666666666668, (-math.inf, 0.44796185327007765), 0.12983081254184736, 0.9644572751012698),
    ],
)
def test_one_sided_welch(relative, alternative, effect, ci, se, p) -> None:
    result = compare(CONTROL_3000, TREATMENT, FrequentistConfig(relative=relative, alternative=alternative))
    assert_vector(result, r5(effect), (r5(ci[0]), r5(ci[1])), r5(se), r5(p))


# Sequential (asymptotic confidence sequences)
def test_sequential_with_tuning_1000() -> None:
    result = sequential_compare(CONTROL_3000, TREATMENT, SequentialConfig(n_star=1000))
    assert_vector(result, 0.50336, (-0.55844, 1.56516), 0.33341, 1.0)


def test_sequential_proportions() -> None:
    result = sequential_compare(ProportionStatistic(n=3000, sum=1396), ProportionStatistic(n=3461, sum=2422))
    assert_vector(result, 0.50386, (0.40098, 0.60675), 0.03386, 0.0)


def test_sequential_cuped_relative() -> None:
    a = RegressionAdjustedStatistic(CONTROL_3000, S(n=3000, sum=16.87, sum_squares=527.9767), 1)
    b = RegressionAdjustedStatistic(TREATMENT, S(n=3461, sum=22.7, sum_squares=1348.29), 1)
    assert_vector(sequential_compare(a, b), 0.50338, (-0.50969, 1.51646), 0.33341, 1.0)


@pytest.mark.parametrize(
    ("relative", "alternative", "bound"),
    [
        (True, "greater", -0.42356454602790883),
        (False, "greater", -0.12656844172804982),
        (True, "less", 1.4302867177403806),
        (False, "less", 0.5953217750613832),
    ],
)
def test_sequential_one_sided_bounds(relative, alternative, bound) -> None:
    result = sequential_compare(CONTROL_3000, TREATMENT, SequentialConfig(relative=relative, alternative=alternative))
    finite_bound = result.ci[0] if alternative == "greater" else result.ci[1]
    assert r5(finite_bound) == r5(bound)
    assert math.isinf(result.ci[1] if alternative == "greater" else result.ci[0])


def test_sequential_interval_is_tightest_near_n_star() -> None:
    """gbstats' tuning test: N* far below n is worst, N* ≈ n best."""
    widths = {}
    for n_star in (10, 6461, 10000):
        ci = sequential_compare(CONTROL_3000, TREATMENT, SequentialConfig(n_star=n_star)).ci
        widths[n_star] = ci[1] - ci[0]
    assert widths[6461] < widths[10000] < widths[10]


# CUPED ratio metric
def _ra_ratio(n, mp, dp, mq, dq, *products) -> RegressionAdjustedRatioStatistic:
    return RegressionAdjustedRatioStatistic(S(n, *mp), S(n, *dp), S(n, *mq), S(n, *dq), *products)


RA_RATIO_A = _ra_ratio(
    100, (485.112236689623, 2715.484666118136), (679.9093275844917, 4939.424001640236),
    (192.59138069991536, 460.076026390857), (290.1398399750233, 920.9461385038898),
    1113.6215759318352, 2130.9404074446747, 634.239482353647, 3602.146836776702,
    1559.2878434944676, 1460.3181079276983,
)
RA_RATIO_B = _ra_ratio(
    100, (514.7757826608777, 2994.897482705013), (705.4090874383759, 5291.36604146392),
    (206.94157227402536, 514.2903702246757), (302.54389139107326, 994.4506208125663),
    1237.0953021125997, 2292.081739775257, 698.4173425817908, 3918.1561431600717,
    1701.0287270040265, 1604.0759503266522,
)


def test_cuped_ratio_welch() -> None:
    assert_vector(compare(RA_RATIO_A, RA_RATIO_B), -0.0007, (-0.00841, 0.007), 0.00391, 0.85771)


def test_cuped_ratio_sequential() -> None:
    assert_vector(sequential_compare(RA_RATIO_A, RA_RATIO_B), -0.0007, (-0.02063, 0.01923), 0.00391, 1.0)


def test_pooled_theta() -> None:
    m1, m3 = np.array([0.3, 0.5, 0.9, 22]), np.array([2, 1, 5, 3.0])
    stat = RegressionAdjustedStatistic(
        post_statistic=S(4, float(m3.sum()), float((m3**2).sum())),
        pre_statistic=S(4, float(m1.sum()), float((m1**2).sum())),
        post_pre_sum_of_products=float((m1 * m3).sum()),
    )
    assert round(pooled_theta(stat, stat), 5) == 0.01864
    flat_pre = RegressionAdjustedStatistic(stat.post_statistic, S(4, 0.0, 0.0), 0.0)
    assert pooled_theta(flat_pre, flat_pre) == 0


# Bayesian
def test_bayesian_proportions() -> None:
    result = bayesian_compare(ProportionStatistic(n=100, sum=49), ProportionStatistic(n=100, sum=51))
    assert_vector(result, 0.04082, (-0.24779, 0.32943), 0.14725)
    assert r5(result.chance_to_win) == 0.60918
    assert tuple(map(r5, result.risk)) == (0.0814, 0.04058)


def test_bayesian_gaussian_flat_prior() -> None:
    result = bayesian_compare(S(10, 100, 1002.25), S(10, 105, 1111.5))
    assert_vector(result, 0.05, (-0.02, 0.12), 0.03572)
    assert r5(result.chance_to_win) == 0.91923
    assert tuple(map(r5, result.risk)) == (0.05131, 0.00131)


def test_bayesian_gaussian_informative_prior() -> None:
    result = bayesian_compare(
        S(10, 100, 1002.25), S(10, 105, 1111.5), BayesianConfig(prior=GaussianPrior(mean=0.1, variance=0.1))
    )
    assert_vector(result, 0.05063, (-0.01893, 0.12019), 0.03549)
    assert r5(result.chance_to_win) == 0.92315
    assert tuple(map(r5, result.risk)) == (0.05186, 0.00123)


def test_risk_closed_form() -> None:
    assert [round(x, 10) for x in expected_losses(0.1, 0.05)] == [0.1004245351, 0.0004245351]
    # far tails: no overflow, the analytic limits
    assert expected_losses(0.01, 4.5e-9) == (0.01, 0.0)
    assert expected_losses(-0.01, 4.5e-9) == (0.0, 0.01)


# Mid-experiment power: gbstats' "scaling factor" = additional units / current units.
# gbstats bisects until power is within 1e-5 of the target, so its factor is known to ~1e-4.
@pytest.mark.parametrize(("sequential", "factor"), [(False, 25.45703125), (True, 55.66796875)])
def test_days_left_matches_midexperiment_scaling_factor(sequential: bool, factor: float) -> None:
    a = S(n=500, sum=499.99999999999994, sum_squares=1499.999999999999)
    b = S(n=500, sum=525.0000000000008, sum_squares=1551.2499999999998)
    current_units = a.n + b.n
    result = days_left(a, b, mde=0.05, units_per_day=current_units, sequential=sequential)
    assert result.error is None
    assert result.days_left == pytest.approx(factor, rel=1e-4)
