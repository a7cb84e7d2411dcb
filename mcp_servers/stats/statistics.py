"""Per-variant sufficient statistics: the only input the engine needs.

Each statistic is a small frozen dataclass computed by one SQL aggregate
(``count()``, ``sum(x)``, ``sum(x*x)``, ``sum(x*y)``), so analyses scale to any
data size and daily or per-segment statistics merge with ``+``.

Every statistic exposes, per unit:

* ``mean`` — the estimate compared across arms (CUPED-adjusted when θ is set),
* ``unadjusted_mean`` — the raw mean (the denominator of a relative lift),
* ``variance`` — n·Var(mean), the per-unit variance of that estimate,
* ``unadjusted_variance`` and ``adjusted_unadjusted_covariance`` — the other
  entries of the 2×2 covariance of (mean, unadjusted_mean), which the exact
  delta method for relative lift needs when the two differ (CUPED).

Conventions follow GrowthBook's gbstats (``packages/stats/gbstats/models/
statistics.py``): sample variances use n−1, proportions use p(1−p), and
covariances between two proportions use the population form so they match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import messages
from ._numeric import is_whole

__all__ = [
    "SampleMeanStatistic",
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "RegressionAdjustedRatioStatistic",
    "MeanStatistic",
    "Statistic",
    "check_statistic",
]


@dataclass(frozen=True, slots=True)
class SampleMeanStatistic:
    """A numeric metric per unit: n, Σx, Σx² (e.g. revenue per user)."""

    n: int
    sum: float
    sum_squares: float

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        if self.n <= 1:
            return 0.0
        return (self.sum_squares - self.sum * self.sum / self.n) / (self.n - 1)

    unadjusted_mean = mean
    unadjusted_variance = variance
    adjusted_unadjusted_covariance = variance

    def __add__(self, other: MeanStatistic) -> SampleMeanStatistic:
        if not isinstance(other, (SampleMeanStatistic, ProportionStatistic)):
            return NotImplemented
        return SampleMeanStatistic(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_squares=self.sum_squares + other.sum_squares,
        )


@dataclass(frozen=True, slots=True)
class ProportionStatistic:
    """A 0/1 metric per unit: n and the number of successes (Σx = Σx²)."""

    n: int
    sum: float

    @property
    def sum_squares(self) -> float:
        return self.sum

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        p = self.mean
        return p * (1.0 - p)

    unadjusted_mean = mean
    unadjusted_variance = variance
    adjusted_unadjusted_covariance = variance

    def __add__(self, other: MeanStatistic) -> MeanStatistic:
        if isinstance(other, ProportionStatistic):
            return ProportionStatistic(n=self.n + other.n, sum=self.sum + other.sum)
        if isinstance(other, SampleMeanStatistic):
            return SampleMeanStatistic(
                n=self.n + other.n,
                sum=self.sum + other.sum,
                sum_squares=self.sum_squares + other.sum_squares,
            )
        return NotImplemented


MeanStatistic = SampleMeanStatistic | ProportionStatistic


def _covariance(n: int, a: MeanStatistic, b: MeanStatistic, sum_of_products: float) -> float:
    if n <= 1:
        return 0.0
    if isinstance(a, ProportionStatistic) and isinstance(b, ProportionStatistic):
        return sum_of_products / n - a.sum * b.sum / (n * n)
    return (sum_of_products - a.sum * b.sum / n) / (n - 1)


@dataclass(frozen=True, slots=True)
class RatioStatistic:
    """A ratio metric Σm / Σd over units (e.g. revenue per session, CTR).

    ``m_d_sum_of_products`` is Σ(mᵢ·dᵢ) over units; its variance is the delta
    method for a ratio of means.
    """

    m_statistic: MeanStatistic
    d_statistic: MeanStatistic
    m_d_sum_of_products: float

    @property
    def n(self) -> int:
        return self.m_statistic.n

    @property
    def mean(self) -> float:
        d = self.d_statistic.sum
        return self.m_statistic.sum / d if d != 0 else 0.0

    @property
    def covariance(self) -> float:
        return _covariance(self.n, self.m_statistic, self.d_statistic, self.m_d_sum_of_products)

    @property
    def variance(self) -> float:
        mm, md = self.m_statistic.mean, self.d_statistic.mean
        if md == 0 or self.n <= 1:
            return 0.0
        return (
            self.m_statistic.variance / md**2
            + self.d_statistic.variance * mm**2 / md**4
            - 2.0 * self.covariance * mm / md**3
        )

    unadjusted_mean = mean
    unadjusted_variance = variance
    adjusted_unadjusted_covariance = variance

    def __add__(self, other: RatioStatistic) -> RatioStatistic:
        if not isinstance(other, RatioStatistic):
            return NotImplemented
        return RatioStatistic(
            m_statistic=self.m_statistic + other.m_statistic,
            d_statistic=self.d_statistic + other.d_statistic,
            m_d_sum_of_products=self.m_d_sum_of_products + other.m_d_sum_of_products,
        )


@dataclass(frozen=True, slots=True)
class RegressionAdjustedStatistic:
    """A mean metric with a pre-experiment covariate, for CUPED.

    ``post_pre_sum_of_products`` is Σ(yᵢ·xᵢ). ``theta`` is the regression
    coefficient; leave it ``None`` and the comparison functions fill in the
    pooled θ of both arms (see :func:`cuped.cuped_adjust`).
    """

    post_statistic: MeanStatistic
    pre_statistic: MeanStatistic
    post_pre_sum_of_products: float
    theta: float | None = None

    @property
    def n(self) -> int:
        return self.post_statistic.n

    @property
    def _theta(self) -> float:
        return self.theta if self.theta else 0.0

    @property
    def covariance(self) -> float:
        return _covariance(self.n, self.post_statistic, self.pre_statistic, self.post_pre_sum_of_products)

    @property
    def mean(self) -> float:
        return self.post_statistic.mean - self._theta * self.pre_statistic.mean

    @property
    def unadjusted_mean(self) -> float:
        return self.post_statistic.mean

    @property
    def variance(self) -> float:
        if self.n <= 1:
            return 0.0
        t = self._theta
        return self.post_statistic.variance + t * t * self.pre_statistic.variance - 2.0 * t * self.covariance

    @property
    def unadjusted_variance(self) -> float:
        return self.post_statistic.variance if self.n > 1 else 0.0

    @property
    def adjusted_unadjusted_covariance(self) -> float:
        if self.n <= 1:
            return 0.0
        return self.post_statistic.variance - self._theta * self.covariance

    def with_theta(self, theta: float | None) -> RegressionAdjustedStatistic:
        return RegressionAdjustedStatistic(
            self.post_statistic, self.pre_statistic, self.post_pre_sum_of_products, theta
        )

    def __add__(self, other: RegressionAdjustedStatistic) -> RegressionAdjustedStatistic:
        if not isinstance(other, RegressionAdjustedStatistic):
            return NotImplemented
        return RegressionAdjustedStatistic(
            post_statistic=self.post_statistic + other.post_statistic,
            pre_statistic=self.pre_statistic + other.pre_statistic,
            post_pre_sum_of_products=self.post_pre_sum_of_products + other.post_pre_sum_of_products,
            theta=None,
        )


@dataclass(frozen=True, slots=True)
class RegressionAdjustedRatioStatistic:
    """A ratio metric with pre-experiment numerator and denominator, for CUPED.

    The adjusted estimate is R_post − θ·R_pre with R = Σm/Σd. Its variance is
    the delta method over the 4×4 covariance of (m_post, d_post, m_pre, d_pre),
    which needs all six cross products.
    """

    m_statistic_post: MeanStatistic
    d_statistic_post: MeanStatistic
    m_statistic_pre: MeanStatistic
    d_statistic_pre: MeanStatistic
    m_post_m_pre_sum_of_products: float
    d_post_d_pre_sum_of_products: float
    m_pre_d_pre_sum_of_products: float
    m_post_d_post_sum_of_products: float
    m_post_d_pre_sum_of_products: float
    m_pre_d_post_sum_of_products: float
    theta: float | None = None

    @property
    def n(self) -> int:
        return self.m_statistic_post.n

    @property
    def _theta(self) -> float:
        return self.theta if self.theta else 0.0

    @property
    def mean_post(self) -> float:
        d = self.d_statistic_post.sum
        return self.m_statistic_post.sum / d if d != 0 else 0.0

    @property
    def mean_pre(self) -> float:
        d = self.d_statistic_pre.sum
        return self.m_statistic_pre.sum / d if d != 0 else 0.0

    @property
    def mean(self) -> float:
        return self.mean_post - self._theta * self.mean_pre

    @property
    def unadjusted_mean(self) -> float:
        return self.mean_post

    def covariance_matrix(self) -> list[list[float]]:
        """Per-unit covariance of (m_post, d_post, m_pre, d_pre)."""
        n = self.n
        mp, dp, mq, dq = self.m_statistic_post, self.d_statistic_post, self.m_statistic_pre, self.d_statistic_pre
        c_mp_dp = _covariance(n, mp, dp, self.m_post_d_post_sum_of_products)
        c_mp_mq = _covariance(n, mp, mq, self.m_post_m_pre_sum_of_products)
        c_mp_dq = _covariance(n, mp, dq, self.m_post_d_pre_sum_of_products)
        c_dp_mq = _covariance(n, dp, mq, self.m_pre_d_post_sum_of_products)
        c_dp_dq = _covariance(n, dp, dq, self.d_post_d_pre_sum_of_products)
        c_mq_dq = _covariance(n, mq, dq, self.m_pre_d_pre_sum_of_products)
        return [
            [mp.variance, c_mp_dp, c_mp_mq, c_mp_dq],
            [c_mp_dp, dp.variance, c_dp_mq, c_dp_dq],
            [c_mp_mq, c_dp_mq, mq.variance, c_mq_dq],
            [c_mp_dq, c_dp_dq, c_mq_dq, dq.variance],
        ]

    def _gradients(self, theta: float) -> tuple[list[float], list[float]]:
        """Gradients of the adjusted and of the unadjusted ratio w.r.t. the four means."""
        mp, dp = self.m_statistic_post.mean, self.d_statistic_post.mean
        mq, dq = self.m_statistic_pre.mean, self.d_statistic_pre.mean
        if dp == 0:
            zero = [0.0, 0.0, 0.0, 0.0]
            return zero, zero
        post = [1.0 / dp, -mp / dp**2, 0.0, 0.0]
        if dq == 0 or theta == 0:
            return post, post
        adjusted = [post[0], post[1], -theta / dq, theta * mq / dq**2]
        return adjusted, post

    def _quadratic_forms(self, theta: float) -> tuple[float, float, float]:
        if self.n <= 1:
            return 0.0, 0.0, 0.0
        lam = self.covariance_matrix()
        g, h = self._gradients(theta)
        lam_h = [sum(lam[i][j] * h[j] for j in range(4)) for i in range(4)]
        lam_g = [sum(lam[i][j] * g[j] for j in range(4)) for i in range(4)]
        var_g = sum(g[i] * lam_g[i] for i in range(4))
        var_h = sum(h[i] * lam_h[i] for i in range(4))
        cov_gh = sum(g[i] * lam_h[i] for i in range(4))
        return var_g, var_h, cov_gh

    @property
    def variance(self) -> float:
        return self._quadratic_forms(self._theta)[0]

    @property
    def unadjusted_variance(self) -> float:
        return self._quadratic_forms(self._theta)[1]

    @property
    def adjusted_unadjusted_covariance(self) -> float:
        return self._quadratic_forms(self._theta)[2]

    def with_theta(self, theta: float) -> RegressionAdjustedRatioStatistic:
        return replace(self, theta=theta)

    def __add__(self, other: RegressionAdjustedRatioStatistic) -> RegressionAdjustedRatioStatistic:
        if not isinstance(other, RegressionAdjustedRatioStatistic):
            return NotImplemented
        return RegressionAdjustedRatioStatistic(
            m_statistic_post=self.m_statistic_post + other.m_statistic_post,
            d_statistic_post=self.d_statistic_post + other.d_statistic_post,
            m_statistic_pre=self.m_statistic_pre + other.m_statistic_pre,
            d_statistic_pre=self.d_statistic_pre + other.d_statistic_pre,
            m_post_m_pre_sum_of_products=self.m_post_m_pre_sum_of_products + other.m_post_m_pre_sum_of_products,
            d_post_d_pre_sum_of_products=self.d_post_d_pre_sum_of_products + other.d_post_d_pre_sum_of_products,
            m_pre_d_pre_sum_of_products=self.m_pre_d_pre_sum_of_products + other.m_pre_d_pre_sum_of_products,
            m_post_d_post_sum_of_products=self.m_post_d_post_sum_of_products + other.m_post_d_post_sum_of_products,
            m_post_d_pre_sum_of_products=self.m_post_d_pre_sum_of_products + other.m_post_d_pre_sum_of_products,
            m_pre_d_post_sum_of_products=self.m_pre_d_post_sum_of_products + other.m_pre_d_post_sum_of_products,
            theta=None,
        )


Statistic = (
    SampleMeanStatistic
    | ProportionStatistic
    | RatioStatistic
    | RegressionAdjustedStatistic
    | RegressionAdjustedRatioStatistic
)


def _check_mean(stat: object) -> str | None:
    # hot path of every comparison: plain attribute reads and math.isfinite, no generic helpers
    kind = type(stat)
    if kind is not SampleMeanStatistic and kind is not ProportionStatistic:
        if not isinstance(stat, (SampleMeanStatistic, ProportionStatistic)):
            return messages.UNSUPPORTED_STATISTIC
    n = stat.n  # type: ignore[attr-defined]
    if type(n) is not int and not is_whole(n):
        return messages.NON_INTEGER_N
    try:
        if kind is ProportionStatistic or isinstance(stat, ProportionStatistic):
            total = stat.sum  # type: ignore[attr-defined]
            if not math.isfinite(total):
                return messages.NON_FINITE_INPUT
            if n < 2:
                return messages.N_TOO_SMALL
            if total < 0 or total > n:
                return messages.INVALID_PROPORTION
            return None
        if not (math.isfinite(stat.sum) and math.isfinite(stat.sum_squares)):  # type: ignore[attr-defined]
            return messages.NON_FINITE_INPUT
    except TypeError:
        return messages.NON_FINITE_INPUT
    if n < 2:
        return messages.N_TOO_SMALL
    return None


def check_statistic(stat: object) -> str | None:
    """Return the error message that makes ``stat`` unusable, or ``None``.

    Checks shape and finiteness only; zero variance is judged by the caller
    (a bandit can use a zero-variance arm, a t-test cannot).
    """
    kind = type(stat)
    if kind is SampleMeanStatistic or kind is ProportionStatistic:
        return _check_mean(stat)
    if kind is RatioStatistic:
        return _check_composite(
            (stat.m_statistic, stat.d_statistic), (stat.m_d_sum_of_products,), None, stat.d_statistic
        )
    if kind is RegressionAdjustedStatistic:
        return _check_composite(
            (stat.post_statistic, stat.pre_statistic), (stat.post_pre_sum_of_products,), stat.theta, None
        )
    if kind is RegressionAdjustedRatioStatistic:
        return _check_composite(
            (stat.m_statistic_post, stat.d_statistic_post, stat.m_statistic_pre, stat.d_statistic_pre),
            (
                stat.m_post_m_pre_sum_of_products,
                stat.d_post_d_pre_sum_of_products,
                stat.m_pre_d_pre_sum_of_products,
                stat.m_post_d_post_sum_of_products,
                stat.m_post_d_pre_sum_of_products,
                stat.m_pre_d_post_sum_of_products,
            ),
            stat.theta,
            stat.d_statistic_post,
        )
    if isinstance(stat, (SampleMeanStatistic, ProportionStatistic)):  # subclasses
        return _check_mean(stat)
    return messages.UNSUPPORTED_STATISTIC


def _check_composite(
    parts: tuple, products: tuple, theta: float | None, denominator: MeanStatistic | None
) -> str | None:
    for part in parts:
        err = _check_mean(part)
        if err:
            return err
    n = parts[0].n
    for part in parts:
        if part.n != n:
            return messages.INCONSISTENT_N
    try:
        for value in products:
            if not math.isfinite(value):
                return messages.NON_FINITE_INPUT
        if theta is not None and not math.isfinite(theta):
            return messages.NON_FINITE_INPUT
    except TypeError:
        return messages.NON_FINITE_INPUT
    if denominator is not None and denominator.sum == 0:
        return messages.ZERO_DENOMINATOR
    return None
