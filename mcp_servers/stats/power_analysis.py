"""Power, minimum detectable effect, sample size, duration and days left.

Model: equal-size arms, a normal approximation to the test statistic, and the
same standard errors the tests use (absolute: sqrt((v_c + v_t)/n); relative:
the delta method around the baseline mean). For a proportion baseline the
treatment variance follows from the shifted rate, p_t(1 − p_t). With a
two-sided test at level α' = α / n_comparisons (Bonferroni; conservative for
Holm) and half-width h of the interval that will be read,

    power = Φ((δ − h)/se) + Φ((−δ − h)/se)

where h = z_{1−α'/2}·se for a fixed-horizon test, or the confidence-sequence
half-width at the final sample size when ``sequential=True`` (so a peeking-safe
plan asks for more units). One-sided tests use the single tail.

The module is called ``power_analysis`` (not ``power``) so that the public
function ``stats.power`` does not shadow it.

Conditional power (``conditional_power``) answers a different question mid-experiment:
given the data so far, how likely is a significant result at the end if the
true effect is what we observe now (the "current trend")? With n units now,
E more to come and N = n + E, the final estimate is (n·θ̂ + E·θ̂_new)/N, so given
today it is normal with mean θ̂ and standard deviation se·sqrt(n·E)/N, and

    conditional power = Φ((θ̂ − h_N)/s) + Φ((−θ̂ − h_N)/s),   s = se·sqrt(n·E)/N

with h_N the half-width that will be read at N (Jennison & Turnbull, *Group
Sequential Methods*, ch. 10; the B-value form of Lan & Wittes 1988).

Reference: gbstats ``power/midexperimentpower.py`` (mid-experiment power and
the scaling factor for the additional sample needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq

from . import messages
from ._numeric import Result, is_finite, is_whole, norm_cdf, norm_ppf
from .effect import effect_moments
from .frequentist import ALTERNATIVES, Alternative
from .sequential import DEFAULT_N_STAR, sequential_halfwidth, sequential_rho
from .statistics import Statistic

MAX_N = 1e12


@dataclass(frozen=True, slots=True)
class PowerResult(Result):
    """Power of a planned test, or the MDE it can detect.

    power: probability of a significant result when the true effect is ``mde``.
    mde: effect size (relative lift or absolute difference, see ``relative``).
    se: standard error of the effect at ``n_per_variant``.
    """

    power: float
    mde: float
    n_per_variant: float
    se: float
    relative: bool
    alpha: float
    sequential: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class SampleSizeResult(Result):
    """Units needed to detect ``mde`` with ``power``.

    n_per_variant / total_n: whole units per arm and over all arms.
    days: whole days at ``units_per_day`` (over all arms), or None if no traffic given.
    """

    n_per_variant: int
    total_n: int
    days: int | None
    power: float
    mde: float
    relative: bool
    sequential: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DaysLeftResult(Result):
    """How much longer a running experiment needs to reach the target power.

    days_left: 0 when already powered; additional_units: over both arms.
    current_power: power now against ``mde``, using the observed variance.
    """

    days_left: float
    additional_units: int
    current_power: float
    target_power: float
    mde: float
    relative: bool
    sequential: bool
    error: str | None = None

    @property
    def powered(self) -> bool:
        return self.error is None and self.days_left == 0.0


@dataclass(frozen=True, slots=True)
class _Plan:
    mean: float
    variance: float | None  # None: Bernoulli baseline, variance from the rate
    relative: bool
    alpha: float  # per comparison (already divided by n_comparisons)
    alternative: str
    sequential: bool
    n_star: float

    def _arms(self, mde: float) -> tuple[float, float, float] | None:
        sign = -1.0 if self.alternative == "less" else 1.0
        mu_t = self.mean * (1.0 + sign * mde) if self.relative else self.mean + sign * mde
        if self.variance is None:
            if not 0.0 < mu_t < 1.0:
                return None
            return mu_t, self.mean * (1.0 - self.mean), mu_t * (1.0 - mu_t)
        return mu_t, self.variance, self.variance

    def se(self, mde: float, n: float) -> float | None:
        arms = self._arms(mde)
        if arms is None:
            return None
        mu_t, v_c, v_t = arms
        if self.relative:
            # Delta method, sqrt(v_t/(n mu^2) + v_c mu_t^2/(n mu^4)), written without mu^2 or mu^4,
            # which underflow to 0 (or overflow) for a tiny (or huge) baseline.
            mu = abs(self.mean)
            ratio = mu_t / self.mean
            return math.sqrt(v_t + v_c * ratio * ratio) / (math.sqrt(n) * mu)
        return math.sqrt((v_c + v_t) / n)

    def halfwidth(self, se: float, n_total: float) -> float:
        one_sided = self.alternative != "two-sided"
        if self.sequential:
            rho = sequential_rho(self.alpha, self.n_star, one_sided)
            return sequential_halfwidth(se, n_total, rho, self.alpha, one_sided)  # type: ignore[arg-type]
        q = 1.0 - self.alpha if one_sided else 1.0 - self.alpha / 2.0
        return norm_ppf(q) * se

    def power(self, mde: float, n: float) -> float | None:
        se = self.se(mde, n)
        if se is None or se <= 0:
            return None
        return power_from_se(mde, se, self.halfwidth(se, 2.0 * n), self.alternative != "two-sided")


def power_from_se(effect: float, se: float, halfwidth: float, one_sided: bool = False) -> float:
    """P(the interval of half-width ``halfwidth`` excludes 0) when the estimate ~ N(effect, se²)."""
    d = abs(effect)
    upper = norm_cdf((d - halfwidth) / se)
    return upper if one_sided else upper + norm_cdf((-d - halfwidth) / se)


def _check_test(alpha: float, n_comparisons: int, n_star: float, alternative: str = "two-sided") -> str | None:
    """What is wrong with the settings of the test a plan is for, if anything."""
    if not (is_finite(alpha) and 0.0 < alpha < 1.0):
        return messages.INVALID_ALPHA
    if alternative not in ALTERNATIVES:
        return messages.INVALID_ALTERNATIVE
    if not (is_whole(n_comparisons) and n_comparisons >= 1):
        return messages.INVALID_COMPARISONS
    if not (is_finite(n_star) and n_star > 0):
        return messages.INVALID_TUNING
    return None


def _check_common(
    mean: float,
    variance: float | None,
    relative: bool,
    alpha: float,
    alternative: str,
    n_comparisons: int,
    n_star: float,
) -> str | None:
    error = _check_test(alpha, n_comparisons, n_star, alternative)
    if error:
        return error
    if not is_finite(mean) or (relative and mean == 0):
        return messages.INVALID_BASELINE
    if variance is None:
        if not 0.0 < mean < 1.0:
            return messages.INVALID_BASELINE
    elif not (is_finite(variance) and variance > 0):
        return messages.INVALID_BASELINE
    return None


def power(
    mde: float,
    n_per_variant: float,
    mean: float,
    variance: float | None = None,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    n_comparisons: int = 1,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> PowerResult:
    """Power to detect a true effect of ``mde`` with ``n_per_variant`` units per arm.

    What: probability that the planned test (fixed-horizon, or the
    confidence sequence if ``sequential``) comes out significant.
    ``mean``/``variance`` describe the metric per unit in the control arm;
    ``variance=None`` means a conversion rate (variance p(1 − p)).
    When: sizing an experiment before launch.
    Returns: :class:`PowerResult`; ``error`` for impossible input.
    Reference: gbstats ``MidExperimentPower.power``.
    """
    err = _check_common(mean, variance, relative, alpha, alternative, n_comparisons, n_star)
    if not err and not (is_finite(mde) and mde > 0):
        err = messages.INVALID_MDE
    if not err and not (is_finite(n_per_variant) and n_per_variant >= 2):
        err = messages.INVALID_SAMPLE_SIZE
    if err:
        return PowerResult(0.0, 0.0, 0.0, 0.0, relative, alpha, sequential, err)
    plan = _Plan(mean, variance, relative, alpha / n_comparisons, alternative, sequential, n_star)
    try:
        p = plan.power(mde, n_per_variant)
        se = plan.se(mde, n_per_variant) or 0.0
    except (ArithmeticError, ValueError):  # overflow, underflow to 0, or a NaN the solver met
        return PowerResult(0.0, mde, n_per_variant, 0.0, relative, alpha, sequential, messages.NUMERICAL_RANGE)
    if p is None:
        return PowerResult(0.0, mde, n_per_variant, 0.0, relative, alpha, sequential, _mde_error(plan))
    if not (math.isfinite(p) and math.isfinite(se)):
        return PowerResult(0.0, mde, n_per_variant, 0.0, relative, alpha, sequential, messages.NUMERICAL_RANGE)
    return PowerResult(p, mde, n_per_variant, se, relative, alpha, sequential)


def _mde_error(plan: _Plan) -> str:
    """Why an effect cannot be planned for: a rate pushed out of (0, 1), or no usable standard error."""
    return messages.MDE_OUT_OF_RANGE if plan.variance is None else messages.NUMERICAL_RANGE


def mde(
    n_per_variant: float,
    mean: float,
    variance: float | None = None,
    *,
    target_power: float = 0.8,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    n_comparisons: int = 1,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> PowerResult:
    """Minimum detectable effect: the smallest true effect detected with ``target_power``.

    What: solves power(mde) = target_power for the given sample per arm.
    When: "we can afford n users per arm; what lift could we even see?"
    Returns: :class:`PowerResult` with ``mde`` filled in (``error`` =
    MDE_NOT_ATTAINABLE when, e.g., a conversion rate would have to leave (0, 1)).
    """
    err = _check_common(mean, variance, relative, alpha, alternative, n_comparisons, n_star)
    if not err and not (is_finite(n_per_variant) and n_per_variant >= 2):
        err = messages.INVALID_SAMPLE_SIZE
    if not err and not (is_finite(target_power) and alpha < target_power < 1.0):
        err = messages.INVALID_POWER
    if err:
        return PowerResult(0.0, 0.0, 0.0, 0.0, relative, alpha, sequential, err)
    plan = _Plan(mean, variance, relative, alpha / n_comparisons, alternative, sequential, n_star)

    # largest admissible effect: a conversion rate must stay inside (0, 1)
    if variance is None:
        down = alternative == "less"
        limit = (mean if down else 1.0 - mean) / (abs(mean) if relative else 1.0)
        hi_cap = limit * (1.0 - 1e-9)
    else:
        hi_cap = math.inf

    def gap(d: float) -> float:
        p = plan.power(d, n_per_variant)
        return (p if p is not None else 0.0) - target_power

    try:
        hi = min(plan.se(0.0, n_per_variant) or 1.0, hi_cap / 2.0)
        while gap(hi) < 0:
            if hi >= hi_cap or hi > 1e300:
                return PowerResult(0.0, 0.0, n_per_variant, 0.0, relative, alpha, sequential,
                                   messages.MDE_NOT_ATTAINABLE)
            hi = min(hi * 2.0, hi_cap)
        root = brentq(gap, 0.0, hi, xtol=1e-12 * max(hi, 1e-300), rtol=1e-12)
        se = plan.se(root, n_per_variant) or 0.0
        achieved = plan.power(root, n_per_variant) or 0.0
    except (ArithmeticError, ValueError):  # overflow, underflow to 0, or a NaN the solver met
        return PowerResult(0.0, 0.0, n_per_variant, 0.0, relative, alpha, sequential, messages.NUMERICAL_RANGE)
    return PowerResult(achieved, float(root), n_per_variant, se, relative, alpha, sequential)


def sample_size(
    mde: float,
    mean: float,
    variance: float | None = None,
    *,
    target_power: float = 0.8,
    units_per_day: float | None = None,
    n_variants: int = 2,
    relative: bool = True,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
    n_comparisons: int = 1,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> SampleSizeResult:
    """Units per arm (and days at ``units_per_day``) to detect ``mde`` with ``target_power``.

    What: solves power(n) = target_power; ``units_per_day`` is the traffic
    entering the experiment per day over all ``n_variants`` arms (equal split).
    When: planning the duration of an experiment before launch.
    Returns: :class:`SampleSizeResult` (whole units and whole days).
    """
    def failed(error: str) -> SampleSizeResult:
        return SampleSizeResult(0, 0, None, 0.0, 0.0, relative, sequential, error)

    err = _check_common(mean, variance, relative, alpha, alternative, n_comparisons, n_star)
    if not err and not (is_finite(mde) and mde > 0):
        err = messages.INVALID_MDE
    if not err and not (is_finite(target_power) and alpha < target_power < 1.0):
        err = messages.INVALID_POWER
    if not err and not (is_whole(n_variants) and n_variants >= 2):
        err = messages.INVALID_VARIANT_COUNT
    if not err and units_per_day is not None and not (is_finite(units_per_day) and units_per_day > 0):
        err = messages.INVALID_TRAFFIC
    if err:
        return failed(err)
    plan = _Plan(mean, variance, relative, alpha / n_comparisons, alternative, sequential, n_star)

    def gap(n: float) -> float:
        return (plan.power(mde, n) or 0.0) - target_power

    try:
        if plan.se(mde, 2.0) is None:
            return failed(_mde_error(plan))
        lo = 2.0
        if gap(lo) >= 0:
            n = 2
        else:
            hi = 4.0
            while gap(hi) < 0:
                lo = hi
                hi *= 2.0
                if hi > MAX_N:
                    return failed(messages.SAMPLE_SIZE_NOT_ATTAINABLE)
            n = math.ceil(brentq(gap, lo, hi, xtol=1e-6, rtol=1e-12) - 1e-9)
            while gap(n) < 0:  # guard the rounding
                n += 1
        achieved = plan.power(mde, n) or 0.0
    except (ArithmeticError, ValueError):  # overflow, underflow to 0, or a NaN the solver met
        return failed(messages.NUMERICAL_RANGE)
    total = n * int(n_variants)
    days = math.ceil(total / units_per_day) if units_per_day else None
    return SampleSizeResult(n, total, days, achieved, mde, relative, sequential)


def days_left(
    control: Statistic,
    treatment: Statistic,
    mde: float,
    units_per_day: float,
    *,
    target_power: float = 0.8,
    relative: bool = True,
    alpha: float = 0.05,
    n_comparisons: int = 1,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> DaysLeftResult:
    """Mid-experiment: days until the comparison reaches ``target_power`` against ``mde``.

    What: takes the observed standard error now, assumes it shrinks as
    1/sqrt(total units), and finds the additional units (both arms) for a
    two-sided test to have ``target_power`` at effect ``mde``;
    ``units_per_day`` is the daily traffic into these two arms combined.
    When: an experiment is running and someone asks "how much longer?".
    Returns: :class:`DaysLeftResult` (``days_left`` = 0 if already powered;
    ``error`` if the comparison itself is impossible).
    Reference: gbstats ``MidExperimentPower`` (scaling factor = additional
    units / current units).
    """
    def failed(error: str) -> DaysLeftResult:
        return DaysLeftResult(0.0, 0, 0.0, target_power, mde, relative, sequential, error)

    if not (is_finite(alpha) and 0.0 < alpha < 1.0):
        return failed(messages.INVALID_ALPHA)
    if not (is_finite(mde) and mde > 0):
        return failed(messages.INVALID_MDE)
    if not (is_finite(target_power) and alpha < target_power < 1.0):
        return failed(messages.INVALID_POWER)
    if not (is_finite(units_per_day) and units_per_day > 0):
        return failed(messages.INVALID_TRAFFIC)
    if not (is_whole(n_comparisons) and n_comparisons >= 1):
        return failed(messages.INVALID_COMPARISONS)
    if not (is_finite(n_star) and n_star > 0):
        return failed(messages.INVALID_TUNING)
    m = effect_moments(control, treatment, relative)
    if m.error:
        return failed(m.error)
    a = alpha / n_comparisons
    rho = sequential_rho(a, n_star)
    z = norm_ppf(1.0 - a / 2.0)
    n_now = m.n

    def power_after(extra: float) -> float:
        se = m.se * math.sqrt(n_now / (n_now + extra))
        half = sequential_halfwidth(se, n_now + extra, rho, a) if sequential else z * se  # type: ignore[arg-type]
        return power_from_se(mde, se, half)

    now = power_after(0.0)
    if now >= target_power:
        return DaysLeftResult(0.0, 0, now, target_power, mde, relative, sequential)
    hi = float(n_now)
    while power_after(hi) < target_power:
        hi *= 2.0
        if hi > MAX_N:
            return failed(messages.SAMPLE_SIZE_NOT_ATTAINABLE)
    extra = brentq(lambda x: power_after(x) - target_power, 0.0, hi, xtol=1e-6, rtol=1e-12)
    return DaysLeftResult(extra / units_per_day, math.ceil(extra), now, target_power, mde, relative, sequential)


@dataclass(frozen=True, slots=True)
class ConditionalPowerResult(Result):
    """P(significant at the end | the data so far, true effect = the current estimate).

    additional_units: units still to come over both arms; estimate: the current
    effect taken as the truth; final_halfwidth: the interval half-width at the end.
    """

    conditional_power: float
    additional_units: float
    estimate: float
    final_halfwidth: float
    relative: bool
    sequential: bool
    error: str | None = None


def conditional_power(
    control: Statistic,
    treatment: Statistic,
    additional_units: float,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    n_comparisons: int = 1,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> ConditionalPowerResult:
    """Chance of a significant two-sided result once ``additional_units`` more arrive, under the current trend.

    What: the futility check of a running experiment. An effect already large
    but not yet significant keeps a high conditional power even when the
    planned MDE cannot be powered in time; a flat result does not.
    When: deciding whether to stop for futility.
    Returns: :class:`ConditionalPowerResult` (with ``error`` if the comparison
    itself is impossible). With no units to come it is 1 if the result is
    significant now, else 0.
    """
    def failed(error: str) -> ConditionalPowerResult:
        return ConditionalPowerResult(0.0, additional_units, 0.0, 0.0, relative, sequential, error)

    error = _check_test(alpha, n_comparisons, n_star)
    if error:
        return failed(error)
    if not (is_finite(additional_units) and additional_units >= 0):
        return failed(messages.INVALID_TRAFFIC)
    m = effect_moments(control, treatment, relative)
    if m.error:
        return failed(m.error)
    a = alpha / n_comparisons
    n_now, n_final = float(m.n), float(m.n) + additional_units
    se_final = m.se * math.sqrt(n_now / n_final)
    if sequential:
        half = sequential_halfwidth(se_final, n_final, sequential_rho(a, n_star), a)  # type: ignore[arg-type]
    else:
        half = norm_ppf(1.0 - a / 2.0) * se_final
    spread = m.se * math.sqrt(n_now * additional_units) / n_final
    if spread <= 0.0:
        cp = 1.0 if abs(m.estimate) > half else 0.0
    else:
        cp = power_from_se(m.estimate, spread, half)
    return ConditionalPowerResult(min(1.0, cp), additional_units, m.estimate, half, relative, sequential)
