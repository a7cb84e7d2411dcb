"""Effect moments: the point estimate and standard error every test starts from.

Absolute effect: Δ = m_t − m_c, Var = v_c/n_c + v_t/n_t.

Relative effect (lift): Δ = (m_t − m_c) / |u_c| where m are the (possibly
CUPED-adjusted) means and u_c the unadjusted control mean. Its variance is the
delta method: for plain means it reduces to gbstats'
v_t/(n_t u_c²) + v_c m_t²/(n_c u_c⁴); for CUPED it keeps the covariance between
the adjusted numerator and the unadjusted denominator, as gbstats'
``frequentist_variance_relative_cuped(_ratio)`` do.

Degrees of freedom: Welch–Satterthwaite on the per-arm variances.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from . import messages
from .cuped import with_pooled_theta
from .statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedRatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
    check_statistic,
)

MEMO_SIZE = 128


class EffectMoments(NamedTuple):
    """Estimate, standard error and Welch df of the treatment − control effect.

    Internal and immutable; a NamedTuple because it is built on every comparison.
    """

    estimate: float
    se: float
    df: float
    n: int
    control_mean: float
    treatment_mean: float
    relative: bool
    error: str | None = None


def _kind(stat: object) -> int:
    if isinstance(stat, (SampleMeanStatistic, ProportionStatistic)):
        return 0
    if isinstance(stat, RatioStatistic):
        return 1
    if isinstance(stat, RegressionAdjustedStatistic):
        return 2
    if isinstance(stat, RegressionAdjustedRatioStatistic):
        return 3
    return -1


def _failed(error: str, relative: bool) -> EffectMoments:
    return EffectMoments(0.0, 0.0, 0.0, 0, 0.0, 0.0, relative, error)


def effect_moments(control: Statistic, treatment: Statistic, relative: bool) -> EffectMoments:
    """Compute the effect of ``treatment`` over ``control`` (or the reason it cannot be).

    Memoised on the (immutable, hashable) statistics: an analysis usually asks
    for the frequentist, sequential and Bayesian view of the same pair, and all
    three start from these moments. The cache is small (it only has to span
    one analysis) and invisible: the result depends on the inputs alone.
    """
    try:
        return _memoised(control, treatment, relative)
    except TypeError:  # unhashable input (e.g. a list): compute without the cache
        return _effect_moments(control, treatment, relative)


@lru_cache(maxsize=MEMO_SIZE)
def _memoised(control: Statistic, treatment: Statistic, relative: bool) -> EffectMoments:
    return _effect_moments(control, treatment, relative)


def _effect_moments(control: Statistic, treatment: Statistic, relative: bool) -> EffectMoments:
    kind = _kind(control)
    if kind < 0 or _kind(treatment) < 0:
        return _failed(messages.UNSUPPORTED_STATISTIC, relative)
    if kind != _kind(treatment):
        return _failed(messages.MIXED_STATISTIC_TYPES, relative)
    err = check_statistic(control) or check_statistic(treatment)
    if err:
        return _failed(err, relative)
    try:
        if kind >= 2:
            control, treatment = with_pooled_theta(control, treatment)  # type: ignore[arg-type]
        return _moments(kind, control, treatment, relative)
    except (ArithmeticError, ValueError):  # overflow/underflow at the edge of double precision
        return _failed(messages.NUMERICAL_RANGE, relative)


def _moments(kind: int, control: Statistic, treatment: Statistic, relative: bool) -> EffectMoments:
    n_c, n_t = int(control.n), int(treatment.n)
    v_c, v_t = control.variance, treatment.variance
    if not (math.isfinite(v_c) and math.isfinite(v_t)):
        return _failed(messages.NUMERICAL_RANGE, relative)
    if not (v_c > 0 and v_t > 0):
        return _failed(messages.ZERO_VARIANCE, relative)
    m_c, m_t = control.mean, treatment.mean
    s_c, s_t = v_c / n_c, v_t / n_t

    if relative:
        u_c = control.unadjusted_mean
        if u_c == 0:
            return _failed(messages.ZERO_BASELINE, relative)
        abs_u = abs(u_c)
        estimate = (m_t - m_c) / abs_u
        if kind >= 2:
            # gradient w.r.t. the control's (adjusted, unadjusted) means is (-1/|u|, -c).
            # CUPED means: c uses the unadjusted treatment mean, i.e. the gradient is taken
            # where the pre-period means agree (true under randomisation), as gbstats'
            # frequentist_variance_relative_cuped does; CUPED ratios use the plug-in
            # estimate, as gbstats' frequentist_variance_relative_cuped_ratio does. The two
            # differ by O(theta * pre-period imbalance) and reproduce both published vectors.
            diff = (treatment.unadjusted_mean - u_c) if kind == 2 else (m_t - m_c)
            c = diff * math.copysign(1.0, u_c) / (u_c * u_c)
            control_part = (
                v_c / (u_c * u_c)
                + 2.0 * c * control.adjusted_unadjusted_covariance / abs_u
                + c * c * control.unadjusted_variance
            ) / n_c
        else:
            control_part = s_c * m_t * m_t / (u_c**4)
        variance = s_t / (u_c * u_c) + control_part
    else:
        estimate = m_t - m_c
        variance = s_c + s_t

    if not (math.isfinite(variance) and math.isfinite(estimate)):
        return _failed(messages.NUMERICAL_RANGE, relative)
    if not variance > 0:
        return _failed(messages.ZERO_VARIANCE, relative)
    share = s_c / (s_c + s_t)  # Welch–Satterthwaite, written scale-free so tiny variances cannot underflow
    df = 1.0 / (share * share / (n_c - 1) + (1.0 - share) ** 2 / (n_t - 1))
    return EffectMoments(estimate, math.sqrt(variance), df, n_c + n_t, m_c, m_t, relative)
