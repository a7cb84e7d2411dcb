"""Thompson-sampling bandit weights and non-inferiority guardrails."""

from __future__ import annotations

import math

import pytest

from mcp_servers.stats import (
    GaussianPrior,
    ProportionStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    non_inferiority,
    thompson_weights,
)
from mcp_servers.stats import messages as m
from mcp_servers.stats._numeric import norm_cdf

ARMS = [ProportionStatistic(2000, 200), ProportionStatistic(2000, 230), ProportionStatistic(2000, 260)]

# --- bandits --------------------------------------------------------------------------------------


def test_weights_are_reproducible_for_a_seed() -> None:
    first, again = thompson_weights(ARMS, seed=42), thompson_weights(ARMS, seed=42)
    assert first == again and first.updated and first.seed == 42
    assert thompson_weights(ARMS, seed=43).weights != first.weights


def test_weights_form_a_distribution_with_a_floor_and_favour_the_best_arm() -> None:
    result = thompson_weights(ARMS, seed=1, min_weight=0.05)
    assert math.fsum(result.weights) == pytest.approx(1.0)
    assert min(result.weights) >= 0.05 - 1e-12
    assert result.weights[2] == max(result.weights)
    assert list(result.weights) == sorted(result.weights)


def test_two_arm_best_probability_matches_the_gaussian_closed_form() -> None:
    a, b = SampleMeanStatistic(500, 500 * 10.0, 499 * 4.0 + 500 * 100.0), SampleMeanStatistic(500, 500 * 10.1, 499 * 4.0 + 500 * 10.1**2)
    result = thompson_weights([a, b], seed=7, min_weight=0.0, n_samples=200_000)
    exact = norm_cdf((b.mean - a.mean) / math.sqrt(a.variance / a.n + b.variance / b.n))
    assert result.best_arm_probabilities[1] == pytest.approx(exact, abs=0.005)
    assert result.weights == pytest.approx(result.best_arm_probabilities)


def test_lower_is_better_sends_traffic_to_the_lowest_arm() -> None:
    result = thompson_weights(ARMS, seed=3, lower_is_better=True)
    assert result.weights[0] == max(result.weights)


def test_no_update_before_every_arm_has_min_n_units() -> None:
    young = [ProportionStatistic(50, 5), *ARMS[1:]]
    result = thompson_weights(young, seed=1, current_weights=[0.2, 0.3, 0.5])
    assert not result.updated and result.reason == m.BANDIT_MIN_N_NOT_REACHED
    assert result.weights == (0.2, 0.3, 0.5) and result.error is None
    assert thompson_weights(young, seed=1).weights == pytest.approx((1 / 3,) * 3)
    assert thompson_weights(young, seed=1, min_n=50).updated


def test_a_strong_prior_pulls_arms_together() -> None:
    free = thompson_weights(ARMS, seed=5, min_weight=0.0)
    held = thompson_weights(ARMS, seed=5, min_weight=0.0, prior=GaussianPrior(mean=0.1, variance=1e-7))
    assert max(held.weights) < max(free.weights)
    assert all(abs(mu - 0.1) < abs(raw.mean - 0.1) + 1e-12 for mu, raw in zip(held.posterior_means, ARMS, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"stats": ARMS[:1]}, m.TOO_FEW_VARIANTS),
        ({"min_weight": 0.34}, m.INVALID_FLOOR),
        ({"min_weight": -0.1}, m.INVALID_FLOOR),
        ({"n_samples": 10}, m.INVALID_N_SAMPLES),
        ({"min_n": 1}, m.INVALID_MIN_N),
        ({"current_weights": [0.5, 0.5, 0.5]}, m.INVALID_CURRENT_WEIGHTS),
        ({"prior": GaussianPrior(0, -1)}, m.INVALID_PRIOR),
        ({"stats": [ProportionStatistic(200, 300), *ARMS[1:]]}, m.INVALID_PROPORTION),
        (
            {"stats": [RegressionAdjustedStatistic(SampleMeanStatistic(200, 1, 2), SampleMeanStatistic(200, 1, 2), 1)] * 2},
            m.MIXED_STATISTIC_TYPES,
        ),
    ],
)
def test_bandit_impossible_input(kwargs, error) -> None:
    args = {"stats": ARMS, "seed": 1, **kwargs}
    result = thompson_weights(**args)
    assert result.error == error and not result.updated
    assert math.fsum(result.weights) == pytest.approx(1.0)  # traffic stays on a valid split


# --- guardrails -----------------------------------------------------------------------------------


def _latency(n: int, mean: float) -> SampleMeanStatistic:
    return SampleMeanStatistic(n, n * mean, (n - 1) * 40.0**2 + n * mean**2)


def test_a_harmless_change_passes_and_a_harmful_one_fails() -> None:
    control = _latency(20_000, 200.0)
    same = non_inferiority(control, _latency(20_000, 200.5), margin=0.02, lower_is_better=True)
    worse = non_inferiority(control, _latency(20_000, 206.0), margin=0.02, lower_is_better=True)
    assert same.non_inferior and same.bound < 0.02 and same.p_value < 0.05
    assert not worse.non_inferior and worse.bound > 0.02


def test_higher_is_better_mirrors_lower_is_better() -> None:
    control = _latency(20_000, 200.0)
    for treatment_mean in (199.0, 197.0, 204.0):
        down = non_inferiority(control, _latency(20_000, treatment_mean), 2.0, relative=False, lower_is_better=True)
        # the same data with the metric negated: higher-is-better with the mirrored effect
        neg = SampleMeanStatistic(control.n, -control.sum, control.sum_squares)
        neg_t = _latency(20_000, treatment_mean)
        up = non_inferiority(neg, SampleMeanStatistic(neg_t.n, -neg_t.sum, neg_t.sum_squares), 2.0, relative=False)
        assert up.non_inferior == down.non_inferior
        assert up.bound == pytest.approx(-down.bound)
        assert up.p_value == pytest.approx(down.p_value)


def test_no_evidence_is_not_safety() -> None:
    """A tiny sample with no visible change must not pass the guardrail."""
    result = non_inferiority(_latency(30, 200.0), _latency(30, 200.0), margin=0.01, lower_is_better=True)
    assert result.error is None and not result.non_inferior


def test_sequential_guardrail_is_more_cautious() -> None:
    control, treatment = _latency(5000, 200.0), _latency(5000, 201.0)
    fixed = non_inferiority(control, treatment, margin=0.02, lower_is_better=True)
    seq = non_inferiority(control, treatment, margin=0.02, lower_is_better=True, sequential=True, n_star=10_000)
    assert seq.bound > fixed.bound and seq.p_value >= fixed.p_value
    assert fixed.non_inferior == (fixed.p_value < 0.05)
    assert seq.non_inferior == (seq.p_value < 0.05)


@pytest.mark.parametrize("margin", [0.0, -0.1, math.nan, math.inf])
def test_guardrail_needs_a_positive_margin(margin: float) -> None:
    result = non_inferiority(_latency(100, 1.0), _latency(100, 1.0), margin)
    assert result.error == m.INVALID_MARGIN and not result.non_inferior


def test_guardrail_passes_errors_through() -> None:
    result = non_inferiority(_latency(1, 1.0), _latency(100, 1.0), 0.1)
    assert result.error == m.N_TOO_SMALL and not result.non_inferior
