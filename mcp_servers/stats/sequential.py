"""Sequential testing: asymptotic confidence sequences that are safe to peek at.

Method: the *asymptotic confidence sequences* of Waudby-Smith, Arnold, Wu,
McAuliffe & Ramdas (2023, arXiv:2103.06476v7) with a Gaussian mixture, as
implemented by GrowthBook's gbstats (``SequentialTwoSidedTTest``). This is not
mSPRT: the boundary is a time-uniform interval around the same delta-method
estimate the fixed-horizon test uses, so it works unchanged for proportions,
means, ratios and CUPED, and its p-value is the always-valid dual
(p_t = 1 / e_t, eq. 155), so it can be read after every new unit with the
false-positive rate still bounded by alpha.

Tuning and the closed forms of the boundary: :mod:`.confidence_sequence`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import messages
from ._numeric import is_finite
from .confidence_sequence import sequential_halfwidth, sequential_p_value, sequential_rho
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

