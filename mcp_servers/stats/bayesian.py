"""Bayesian comparison: a Gaussian posterior on the effect.

The likelihood of the effect is N(Δ̂, se²) from the same delta-method moments
as the frequentist test; with an optional proper Gaussian prior N(μ₀, σ₀²) the
posterior is Gaussian with precision 1/se² + 1/σ₀² (an improper flat prior
gives N(Δ̂, se²)). From it:

* chance to win: P(Δ > 0), or P(Δ < 0) for lower-is-better metrics;
* risk (expected loss) of each decision: choosing control loses E[max(Δ, 0)],
  choosing treatment loses E[max(−Δ, 0)] (swapped for lower-is-better);
* the central credible interval at 1 − alpha.

Reference: gbstats ``bayesian/tests.py`` (``EffectBayesianABTest``); the risk
uses the closed form E[max(X, 0)] = μΦ(μ/σ) + σφ(μ/σ) instead of truncated
normal moments, which is exact and stable for any μ/σ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import messages
from ._numeric import Result, is_finite, norm_cdf, norm_ppf, positive_part_mean
from .effect import EffectMoments, effect_moments
from .statistics import Statistic


@dataclass(frozen=True, slots=True)
class GaussianPrior:
    """A proper prior on the effect: N(mean, variance).

    relative: the prior is stated on the relative-lift scale (e.g. mean 0,
    variance 0.3² ≈ "lifts beyond ±60% are implausible"); it is rescaled by
    the control mean when the comparison is absolute, and vice versa.
    """

    mean: float = 0.0
    variance: float = 1.0
    relative: bool = True


@dataclass(frozen=True, slots=True)
class BayesianConfig:
    """Settings of a Bayesian comparison; ``prior=None`` is the improper flat prior."""

    relative: bool = True
    alpha: float = 0.05
    prior: GaussianPrior | None = None
    lower_is_better: bool = False


@dataclass(frozen=True, slots=True)
class BayesianResult(Result):
    """Posterior summary of the treatment − control effect.

    effect / se: posterior mean and standard deviation.
    ci: central credible interval at 1 − alpha.
    chance_to_win: posterior probability the treatment is better (direction
        from ``lower_is_better``).
    risk: (control, treatment) expected loss of shipping that arm, in effect
        units; ship an arm when its risk is below your tolerance.
    error: why no posterior was computed; then chance_to_win = 0.5, risk = (0, 0).
    """

    effect: float
    se: float
    ci: tuple[float, float]
    chance_to_win: float
    risk: tuple[float, float]
    relative: bool
    alpha: float
    lower_is_better: bool
    prior_applied: bool
    control_mean: float = 0.0
    treatment_mean: float = 0.0
    error: str | None = None


def _failed(config: BayesianConfig, error: str) -> BayesianResult:
    return BayesianResult(
        effect=0.0,
        se=0.0,
        ci=(0.0, 0.0),
        chance_to_win=0.5,
        risk=(0.0, 0.0),
        relative=config.relative,
        alpha=config.alpha,
        lower_is_better=config.lower_is_better,
        prior_applied=False,
        error=error,
    )


def expected_losses(mu: float, sigma: float) -> tuple[float, float]:
    """(E[max(Δ, 0)], E[max(−Δ, 0)]) for Δ ~ N(mu, sigma²): the loss of choosing control, treatment."""
    return positive_part_mean(mu, sigma), positive_part_mean(-mu, sigma)


def bayesian_compare(
    control: Statistic, treatment: Statistic, config: BayesianConfig = BayesianConfig()
) -> BayesianResult:
    """Bayesian comparison: chance to win, risk of each arm and credible interval.

    What: Gaussian posterior on the (absolute or relative) effect, with an
    optional proper prior (``config.prior``).
    When: stakeholders want "probability B beats A" and "how much do we lose
    if we are wrong" rather than p-values; not a guard against peeking.
    Returns: :class:`BayesianResult`; ``error`` set (and neutral values) for
    impossible input.
    Reference: gbstats ``EffectBayesianABTest``. Published vector: proportions
    49/100 vs 51/100 → lift 0.04082, CI (−0.24779, 0.32943), chance to win
    0.60918, risk (0.0814, 0.04058).
    """
    if not (is_finite(config.alpha) and 0.0 < config.alpha < 1.0):
        return _failed(config, messages.INVALID_ALPHA)
    prior = config.prior
    if prior is not None and not (
        is_finite(prior.mean, prior.variance) and prior.variance > 0
    ):
        return _failed(config, messages.INVALID_PRIOR)
    m = effect_moments(control, treatment, config.relative)
    if m.error:
        return _failed(config, m.error)

    try:
        return _posterior(m, control, config)
    except (ArithmeticError, ValueError):
        return _failed(config, messages.NUMERICAL_RANGE)


def _posterior(m: EffectMoments, control: Statistic, config: BayesianConfig) -> BayesianResult:
    prior = config.prior
    data_var = m.se * m.se
    mean, var = m.estimate, data_var
    if prior is not None:
        p_mean, p_var = prior.mean, prior.variance
        if prior.relative != config.relative:
            base = abs(control.unadjusted_mean)
            if base == 0:
                return _failed(config, messages.ZERO_BASELINE)
            scale = base if prior.relative else 1.0 / base
            p_mean, p_var = p_mean * scale, p_var * scale * scale
        precision = 1.0 / data_var + 1.0 / p_var
        mean = (m.estimate / data_var + p_mean / p_var) / precision
        var = 1.0 / precision
    sd = math.sqrt(var)
    if not (sd > 0 and math.isfinite(mean) and math.isfinite(sd)):
        return _failed(config, messages.NUMERICAL_RANGE)

    z = norm_ppf(1.0 - config.alpha / 2.0)
    loss_control, loss_treatment = expected_losses(mean, sd)
    if config.lower_is_better:
        chance, risk = norm_cdf(-mean / sd), (loss_treatment, loss_control)
    else:
        chance, risk = norm_cdf(mean / sd), (loss_control, loss_treatment)
    # positional: keyword construction of a frozen dataclass costs ~2x (hot path)
    return BayesianResult(
        mean,  # effect
        sd,  # se
        (mean - z * sd, mean + z * sd),  # ci
        chance,  # chance_to_win
        risk,
        config.relative,  # relative
        config.alpha,  # alpha
        config.lower_is_better,  # lower_is_better
        prior is not None,  # prior_applied
        m.control_mean,  # control_mean
        m.treatment_mean,  # treatment_mean
    )

