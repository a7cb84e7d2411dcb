"""CUPED: variance reduction with a pre-experiment covariate (pooled θ).

CUPED (Deng, Xu, Kohavi & Walker, WSDM 2013) compares Y − θ·X instead of Y,
where X is the same metric measured before exposure. Because X is independent
of the assignment, the adjustment leaves the effect unbiased and shrinks the
variance by a factor (1 − ρ²(X, Y)). θ is estimated once from both arms pooled,
as in gbstats (``compute_theta``), so both arms are adjusted identically.

For ratio metrics the adjusted estimate is R_post − θ·R_pre, with θ chosen to
minimise the summed delta-method variance of both arms (gbstats'
``compute_theta_regression_adjusted_ratio``).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import messages
from .statistics import (
    ProportionStatistic,
    RegressionAdjustedRatioStatistic,
    RegressionAdjustedStatistic,
    check_statistic,
)

CupedStatistic = RegressionAdjustedStatistic | RegressionAdjustedRatioStatistic


@dataclass(frozen=True, slots=True)
class CupedResult:
    """Both arms with the pooled θ filled in.

    ``variance_reduction`` is 1 − Var(adjusted)/Var(unadjusted) of the
    absolute effect: 0.3 means CUPED did the work of 1/(1 − 0.3) ≈ 1.43× the
    sample. On error the inputs come back unchanged with θ = 0.
    """

    control: CupedStatistic
    treatment: CupedStatistic
    theta: float
    variance_reduction: float
    error: str | None = None

    __test__ = False


def pooled_theta(control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic) -> float:
    """θ = Cov(Y, X) / Var(X) over both arms pooled; 0 when either variance is 0.

    Same conventions as gbstats' ``compute_theta``: the arms are merged as one
    sample (sample moments; population moments when both parts are proportions).
    """
    post = control.post_statistic + treatment.post_statistic
    pre = control.pre_statistic + treatment.pre_statistic
    var_pre, var_post = pre.variance, post.variance
    if var_pre <= 0 or var_post <= 0:
        return 0.0
    n = post.n
    products = control.post_pre_sum_of_products + treatment.post_pre_sum_of_products
    if isinstance(post, ProportionStatistic) and isinstance(pre, ProportionStatistic):
        covariance = products / n - post.sum * pre.sum / (n * n)
    else:
        covariance = (products - post.sum * pre.sum / n) / (n - 1)
    return covariance / var_pre


def pooled_theta_ratio(
    control: RegressionAdjustedRatioStatistic, treatment: RegressionAdjustedRatioStatistic
) -> float:
    """θ minimising Σ_arms Var(R_post − θ R_pre): Σ Cov(R_post, R_pre) / Σ Var(R_pre)."""
    cov_sum = 0.0
    var_sum = 0.0
    for stat in (control, treatment):
        if stat.d_statistic_post.mean == 0 or stat.d_statistic_pre.mean == 0 or stat.n <= 1:
            return 0.0
        lam = stat.covariance_matrix()
        mp, dp = stat.m_statistic_post.mean, stat.d_statistic_post.mean
        mq, dq = stat.m_statistic_pre.mean, stat.d_statistic_pre.mean
        g_post = (1.0 / dp, -mp / dp**2)
        g_pre = (1.0 / dq, -mq / dq**2)
        var_sum += sum(g_pre[i] * lam[2 + i][2 + j] * g_pre[j] for i in range(2) for j in range(2))
        cov_sum += sum(g_post[i] * lam[i][2 + j] * g_pre[j] for i in range(2) for j in range(2))
    if var_sum <= 0:
        return 0.0
    theta = cov_sum / var_sum
    return 0.0 if abs(theta) < 1e-8 else theta


def _same_kind(control: object, treatment: object) -> bool:
    return (
        isinstance(control, RegressionAdjustedStatistic) and isinstance(treatment, RegressionAdjustedStatistic)
    ) or (
        isinstance(control, RegressionAdjustedRatioStatistic)
        and isinstance(treatment, RegressionAdjustedRatioStatistic)
    )


def with_pooled_theta(control: CupedStatistic, treatment: CupedStatistic) -> tuple[CupedStatistic, CupedStatistic]:
    """Fill in the pooled θ on both arms unless both already carry one."""
    if control.theta is not None and treatment.theta is not None:
        return control, treatment
    if isinstance(control, RegressionAdjustedStatistic) and isinstance(treatment, RegressionAdjustedStatistic):
        theta = pooled_theta(control, treatment)
        return control.with_theta(theta), treatment.with_theta(theta)
    assert isinstance(control, RegressionAdjustedRatioStatistic)
    assert isinstance(treatment, RegressionAdjustedRatioStatistic)
    theta = pooled_theta_ratio(control, treatment)
    return control.with_theta(theta), treatment.with_theta(theta)


def cuped_adjust(control: CupedStatistic, treatment: CupedStatistic) -> CupedResult:
    """Estimate the pooled CUPED θ and return both arms adjusted with it.

    When: you hold per-variant (post, pre) sufficient statistics and want the
    adjusted means or the variance reduction to report. ``compare``,
    ``sequential_compare`` and ``bayesian_compare`` call this themselves for
    CUPED statistics whose θ is ``None``, so there is no need to call it first.

    Returns a :class:`CupedResult` (θ, adjusted statistics, variance
    reduction) or one carrying ``error`` for unusable input.

    Reference: Deng et al. (2013), "Improving the sensitivity of online
    controlled experiments by utilizing pre-experiment data"; gbstats
    ``compute_theta``.
    """
    if not _same_kind(control, treatment):
        return CupedResult(control, treatment, 0.0, 0.0, messages.MIXED_STATISTIC_TYPES)
    for stat in (control, treatment):
        err = check_statistic(stat)
        if err:
            return CupedResult(control, treatment, 0.0, 0.0, err)
    unadjusted = control.unadjusted_variance / control.n + treatment.unadjusted_variance / treatment.n
    if unadjusted <= 0:
        return CupedResult(control, treatment, 0.0, 0.0, messages.ZERO_VARIANCE)
    a, b = with_pooled_theta(control.with_theta(None), treatment.with_theta(None))  # type: ignore[arg-type]
    adjusted = a.variance / a.n + b.variance / b.n
    reduction = max(0.0, 1.0 - adjusted / unadjusted)
    return CupedResult(a, b, a.theta or 0.0, reduction)


__all__ = ["CupedResult", "cuped_adjust", "pooled_theta", "pooled_theta_ratio", "with_pooled_theta"]
