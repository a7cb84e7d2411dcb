"""Bayesian comparison: posterior, chance to win, risk, priors, lower-is-better."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_servers.stats import (
    BayesianConfig,
    FrequentistConfig,
    GaussianPrior,
    ProportionStatistic,
    SampleMeanStatistic,
    bayesian_compare,
    compare,
)
from mcp_servers.stats import messages as m
from mcp_servers.stats.bayesian import expected_losses

CONTROL = ProportionStatistic(n=5000, sum=500)
TREATMENT = ProportionStatistic(n=5000, sum=540)


def test_flat_prior_posterior_is_the_likelihood() -> None:
    bayes = bayesian_compare(CONTROL, TREATMENT)
    freq = compare(CONTROL, TREATMENT)
    assert bayes.effect == freq.effect and bayes.se == freq.se
    assert not bayes.prior_applied
    z = (bayes.ci[1] - bayes.effect) / bayes.se
    assert z == pytest.approx(1.959963984540054)


def test_chance_to_win_and_risk_against_monte_carlo() -> None:
    result = bayesian_compare(CONTROL, TREATMENT)
    draws = np.random.default_rng(0).normal(result.effect, result.se, 2_000_000)
    assert result.chance_to_win == pytest.approx(np.mean(draws > 0), abs=2e-3)
    assert result.risk[0] == pytest.approx(np.mean(np.maximum(draws, 0)), rel=1e-2)
    assert result.risk[1] == pytest.approx(np.mean(np.maximum(-draws, 0)), rel=2e-2)


@settings(max_examples=200, deadline=None)
@given(st.floats(-1e3, 1e3), st.floats(1e-6, 1e3))
def test_risks_differ_by_the_posterior_mean(mu: float, sigma: float) -> None:
    """E[max(Δ,0)] − E[max(−Δ,0)] = E[Δ]; both losses are non-negative."""
    loss_control, loss_treatment = expected_losses(mu, sigma)
    assert loss_control >= 0 and loss_treatment >= 0
    assert loss_control - loss_treatment == pytest.approx(mu, rel=1e-9, abs=1e-9 * sigma)


def test_lower_is_better_flips_chance_to_win_and_swaps_risk() -> None:
    up = bayesian_compare(CONTROL, TREATMENT)
    down = bayesian_compare(CONTROL, TREATMENT, BayesianConfig(lower_is_better=True))
    assert down.chance_to_win == pytest.approx(1 - up.chance_to_win, abs=1e-15)
    assert down.risk == (up.risk[1], up.risk[0])
    assert down.effect == up.effect and down.ci == up.ci


def test_proper_prior_shrinks_towards_its_mean_and_narrows_the_posterior() -> None:
    flat = bayesian_compare(CONTROL, TREATMENT)
    prior = GaussianPrior(mean=0.0, variance=0.03**2)
    shrunk = bayesian_compare(CONTROL, TREATMENT, BayesianConfig(prior=prior))
    assert shrunk.prior_applied
    assert 0 < shrunk.effect < flat.effect
    assert shrunk.se < flat.se
    precision = 1 / flat.se**2 + 1 / prior.variance
    assert shrunk.se == pytest.approx(math.sqrt(1 / precision))


def test_relative_prior_on_an_absolute_comparison_is_rescaled_by_the_baseline() -> None:
    baseline = CONTROL.mean  # 0.1
    rel_prior = bayesian_compare(
        CONTROL, TREATMENT, BayesianConfig(relative=False, prior=GaussianPrior(0.02, 0.05**2, relative=True))
    )
    abs_prior = bayesian_compare(
        CONTROL,
        TREATMENT,
        BayesianConfig(relative=False, prior=GaussianPrior(0.02 * baseline, (0.05 * baseline) ** 2, relative=False)),
    )
    assert rel_prior.effect == pytest.approx(abs_prior.effect)
    assert rel_prior.se == pytest.approx(abs_prior.se)


def test_credible_interval_level_follows_alpha() -> None:
    wide = bayesian_compare(CONTROL, TREATMENT, BayesianConfig(alpha=0.01))
    narrow = bayesian_compare(CONTROL, TREATMENT, BayesianConfig(alpha=0.2))
    assert wide.ci[0] < narrow.ci[0] < narrow.ci[1] < wide.ci[1]


@pytest.mark.parametrize(
    ("control", "config", "error"),
    [
        (ProportionStatistic(5000, 500), BayesianConfig(prior=GaussianPrior(0, 0)), m.INVALID_PRIOR),
        (ProportionStatistic(5000, 500), BayesianConfig(prior=GaussianPrior(math.nan, 1)), m.INVALID_PRIOR),
        (ProportionStatistic(5000, 500), BayesianConfig(alpha=0), m.INVALID_ALPHA),
        (ProportionStatistic(1, 0), BayesianConfig(), m.N_TOO_SMALL),
        (ProportionStatistic(5000, 0), BayesianConfig(), m.ZERO_VARIANCE),
        (SampleMeanStatistic(100, 0.0, 10.0), BayesianConfig(), m.ZERO_BASELINE),
    ],
)
def test_impossible_input_gives_a_neutral_result_with_a_reason(control, config, error) -> None:
    result = bayesian_compare(control, TREATMENT if isinstance(control, ProportionStatistic) else SampleMeanStatistic(100, 5.0, 10.0), config)
    assert result.error == error
    assert (result.chance_to_win, result.risk, result.effect) == (0.5, (0.0, 0.0), 0.0)


def test_as_dict_is_plain_json_data() -> None:
    d = bayesian_compare(CONTROL, TREATMENT).as_dict()
    assert set(d) >= {"effect", "ci", "chance_to_win", "risk", "error"}
    assert isinstance(d["risk"], list) and len(d["risk"]) == 2


def test_absolute_and_relative_agree_on_direction() -> None:
    rel = bayesian_compare(CONTROL, TREATMENT)
    absolute = bayesian_compare(CONTROL, TREATMENT, BayesianConfig(relative=False))
    assert rel.chance_to_win == pytest.approx(absolute.chance_to_win, abs=0.02)
    assert compare(CONTROL, TREATMENT, FrequentistConfig(relative=False)).effect == pytest.approx(absolute.effect)
