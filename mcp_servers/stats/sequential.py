"""Sequential testing: asymptotic confidence sequences that are safe to peek at.

Method: the *asymptotic confidence sequences* of Waudby-Smith, Arnold, Wu,
McAuliffe & Ramdas (2023, arXiv:2103.06476v7) with a Gaussian mixture, as
implemented by GrowthBook's gbstats (``SequentialTwoSidedTTest``). This is not
mSPRT: the boundary is a time-uniform interval around the same delta-method
estimate the fixed-horizon test uses, so it works unchanged for proportions,
means, ratios and CUPED, and its p-value is the always-valid dual
(p_t = 1 / e_t, eq. 155), so it can be read after every new unit with the
false-positive rate still bounded by alpha.

Tuning: N* is the total sample size (both arms) at which the interval is
tightest; set it near the planned sample size. The mixing parameter is
ρ = sqrt((−2 ln α + ln(1 − 2 ln α)) / N*) (eq. 161; α → 2α one-sided).

Two-sided half-width (eq. 9), with s² = n·se² the per-unit variance:
    s · sqrt( 2(nρ² + 1) / (n²ρ²) · ln( sqrt(nρ² + 1) / α ) )
One-sided half-width (eq. 134):
    s · sqrt( 2(nρ² + 1) / (n²ρ²) · ln( 1 + sqrt(nρ² + 1) / (2α) ) )
The one-sided always-valid p-value is the α at which the bound touches the
null, which has a closed form for a fixed ρ (gbstats finds it by bisection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import messages
from ._numeric import is_finite
from .effect import effect_moments
from .frequentist import (
    METHOD_SEQUENTIAL,
    Alternative,
    TestResult,
    bounds,
    check_test_config,
    failed_result,
)
from .statistics import Statistic

DEFAULT_N_STAR = 5000.0


@dataclass(frozen=True, slots=True)
class SequentialConfig:
    """Settings of an always-valid test; fields as in ``FrequentistConfig`` plus N*.

    n_star: total sample size (both arms) where the interval is tightest
        (gbstats' ``sequential_tuning_parameter``, default 5000).
    """

    relative: bool = True
    alpha: float = 0.05
    alternative: Alternative = "two-sided"
    test_value: float = 0.0
    lower_is_better: bool = False
    n_star: float = DEFAULT_N_STAR


def sequential_rho(alpha: float, n_star: float, one_sided: bool = False) -> float:
    """Mixing parameter ρ tuned for N* (eq. 161 of Waudby-Smith et al.)."""
    a = 2.0 * alpha if one_sided else alpha
    log_a = math.log(a)
    return math.sqrt((-2.0 * log_a + math.log(1.0 - 2.0 * log_a)) / n_star)


def sequential_halfwidth(se: float, n: int, rho: float, alpha: float, one_sided: bool = False) -> float:
    """Half-width of the confidence sequence at total sample size ``n``."""
    nr2 = n * rho * rho
    s2 = se * se * n
    scale = 2.0 * (nr2 + 1.0) / (nr2 * n)
    if one_sided:
        return math.sqrt(s2 * scale * math.log1p(math.sqrt(nr2 + 1.0) / (2.0 * alpha)))
    return math.sqrt(s2 * scale * math.log(math.sqrt(nr2 + 1.0) / alpha))


def sequential_p_value(
    estimate: float, se: float, n: int, rho: float, test_value: float = 0.0, alternative: str = "two-sided"
) -> float:
    """Always-valid p-value: the smallest α whose confidence sequence excludes ``test_value``."""
    nr2 = n * rho * rho
    # z² = (estimate − test_value)² / se²; the e-value is exp(ρ² n z² / (2(nρ²+1))) / sqrt(nρ²+1)
    z = (estimate - test_value) / se
    exponent = nr2 * z * z / (2.0 * (nr2 + 1.0))
    if alternative == "two-sided":
        return min(1.0, math.exp(min(0.0, 0.5 * math.log(nr2 + 1.0) - exponent)))
    if (alternative == "greater" and z <= 0) or (alternative == "less" and z >= 0):
        return 1.0
    if exponent > 700.0:
        return 0.0
    return min(1.0, math.sqrt(nr2 + 1.0) / (2.0 * math.expm1(exponent)))


def sequential_compare(
    control: Statistic, treatment: Statistic, config: SequentialConfig = SequentialConfig()
) -> TestResult:
    """Always-valid comparison of treatment against control (safe under continuous peeking).

    What: the same effect and standard error as :func:`compare`, with an
    asymptotic confidence sequence instead of a fixed-horizon interval and
    the matching always-valid p-value. Two- or one-sided.
    When: results are looked at while the experiment runs (dashboards,
    agents polling, early stopping). Wider than the fixed-horizon interval at
    any single look; that is the price of peeking freely.
    Returns: :class:`TestResult` with ``method='asymptotic-confidence-sequence'``,
    ``df=None`` and ``rho`` set; ``error`` for impossible input.
    Reference: Waudby-Smith et al. (2023) "Time-uniform central limit theory
    and asymptotic confidence sequences", eqs. 9, 134, 155, 161; gbstats
    ``SequentialTwoSidedTTest``.
    """
    err = check_test_config(config.alpha, config.alternative, config.test_value)
    if not err and not (is_finite(config.n_star) and config.n_star > 0):
        err = messages.INVALID_TUNING
    one_sided = config.alternative != "two-sided"
    if not err and one_sided and config.alpha >= 0.5:
        err = messages.ONE_SIDED_ALPHA_TOO_BIG
    if err:
        return failed_result(config, METHOD_SEQUENTIAL, err)
    m = effect_moments(control, treatment, config.relative)
    if m.error:
        return failed_result(config, METHOD_SEQUENTIAL, m.error, m)
    try:
        rho = sequential_rho(config.alpha, config.n_star, one_sided)
        half = sequential_halfwidth(m.se, m.n, rho, config.alpha, one_sided)
        p_value = sequential_p_value(m.estimate, m.se, m.n, rho, config.test_value, config.alternative)
    except (ArithmeticError, ValueError):
        return failed_result(config, METHOD_SEQUENTIAL, messages.NUMERICAL_RANGE, m)
    ci = bounds(m.estimate, half, config.alternative)
    if math.isnan(p_value) or math.isnan(ci[0]) or math.isnan(ci[1]):
        return failed_result(config, METHOD_SEQUENTIAL, messages.NUMERICAL_RANGE, m)
    # positional: keyword construction of a frozen dataclass costs ~2x (hot path)
    return TestResult(
        m.estimate,  # effect
        ci,
        p_value,
        m.se,  # se
        None,  # df
        m.n,  # n
        m.control_mean,  # control_mean
        m.treatment_mean,  # treatment_mean
        config.relative,  # relative
        config.alternative,  # alternative
        config.alpha,  # alpha
        config.test_value,  # test_value
        config.lower_is_better,  # lower_is_better
        METHOD_SEQUENTIAL,  # method
        rho,
    )

