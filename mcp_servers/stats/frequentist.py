"""Fixed-horizon frequentist tests: Welch's t-test on absolute or relative effects.

Use when the sample size was fixed in advance and the result is read once.
Reading it repeatedly while data arrive inflates the false-positive rate; use
:mod:`.sequential` for that.

Reference: Welch (1947); Satterthwaite (1946); gbstats
``frequentist/tests.py`` (``TwoSidedTTest``, ``OneSidedTreatment*TTest``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from . import messages
from ._numeric import Result, is_finite, jsonable, t_cdf, t_ppf
from .confidence_sequence import sequential_halfwidth
from .effect import EffectMoments, effect_moments
from .statistics import Statistic

Alternative = Literal["two-sided", "greater", "less"]
ALTERNATIVES = ("two-sided", "greater", "less")
METHOD_WELCH = "welch-t"
METHOD_SEQUENTIAL = "asymptotic-confidence-sequence"
Verdict = Literal["better", "worse", "inconclusive"]


@dataclass(frozen=True, slots=True)
class FrequentistConfig:
    """Settings of a fixed-horizon test.

    relative: test the lift (m_t − m_c)/|m_c| instead of the difference.
    alternative: 'two-sided', or 'greater'/'less' for treatment − control.
    test_value: the effect under the null hypothesis (0 = no difference).
    lower_is_better: the metric improves when it goes down (latency, churn);
        only changes the ``verdict`` wording, never the arithmetic.
    """

    relative: bool = True
    alpha: float = 0.05
    alternative: Alternative = "two-sided"
    test_value: float = 0.0
    lower_is_better: bool = False


@dataclass(frozen=True, slots=True)
class TestResult(Result):
    """Outcome of a frequentist comparison of treatment against control.

    effect: treatment − control, absolute or relative (see ``relative``).
    ci: (lower, upper) at level 1 − alpha; one-sided tests have an infinite
        bound on the other side (``as_dict`` turns it into ``None``).
    p_value: against ``test_value`` under ``alternative``; always valid under
        continuous monitoring when ``method`` is the confidence sequence.
    se: standard error of ``effect``. df: Welch df (``None`` for sequential).
    n: total units in both arms. rho: the confidence sequence's mixing
        parameter (sequential only).
    error: why no test was possible; then effect = 0, ci = (0, 0), p = 1.
    """

    effect: float
    ci: tuple[float, float]
    p_value: float
    se: float
    df: float | None
    n: int
    control_mean: float
    treatment_mean: float
    relative: bool
    alternative: Alternative
    alpha: float
    test_value: float
    lower_is_better: bool
    method: str
    rho: float | None = None
    error: str | None = None

    __test__ = False  # not a pytest test class despite the name

    @property
    def significant(self) -> bool:
        """True when the null (effect = test_value) is rejected at ``alpha``."""
        return self.error is None and self.p_value < self.alpha

    @property
    def verdict(self) -> Verdict:
        """'better' / 'worse' for the treatment when significant, else 'inconclusive'."""
        if not self.significant:
            return "inconclusive"
        up = self.effect > self.test_value
        return "better" if up != self.lower_is_better else "worse"

    def interval(self, alpha: float) -> tuple[float, float]:
        """The interval of this test recomputed at level 1 − ``alpha`` (used by multiplicity corrections).

        A failed test keeps (0, 0); an ``alpha`` outside (0, 1) gives the
        uninformative (−inf, inf) rather than NaN.
        """
        if self.error is not None:
            return (0.0, 0.0)
        if not (is_finite(alpha) and 0.0 < alpha < 1.0):
            return (-math.inf, math.inf)
        if self.method == METHOD_SEQUENTIAL and self.rho is not None:
            half = sequential_halfwidth(self.se, self.n, self.rho, alpha, self.alternative != "two-sided")
        elif self.df is not None:
            q = 1.0 - alpha / 2.0 if self.alternative == "two-sided" else 1.0 - alpha
            half = t_ppf(q, self.df) * self.se
        else:
            return self.ci
        return bounds(self.effect, half, self.alternative)

    def as_dict(self) -> dict:
        """JSON-safe dict (infinite bounds become ``None``) plus ``significant`` and ``verdict``."""
        out = jsonable(self)
        out["significant"] = self.significant
        out["verdict"] = self.verdict
        return out


def bounds(estimate: float, halfwidth: float, alternative: str) -> tuple[float, float]:
    if alternative == "greater":
        return (estimate - halfwidth, math.inf)
    if alternative == "less":
        return (-math.inf, estimate + halfwidth)
    return (estimate - halfwidth, estimate + halfwidth)


def check_test_config(alpha: float, alternative: str, test_value: float) -> str | None:
    if type(alpha) is not float or not 0.0 < alpha < 1.0:
        if not (is_finite(alpha) and 0.0 < alpha < 1.0):
            return messages.INVALID_ALPHA
    if alternative not in ALTERNATIVES:
        return messages.INVALID_ALTERNATIVE
    if type(test_value) is not float or not math.isfinite(test_value):
        if not is_finite(test_value):
            return messages.INVALID_TEST_VALUE
    return None


def failed_result(config, method: str, error: str, moments: EffectMoments | None = None) -> TestResult:
    """The uninformative result carrying ``error`` (no NaN, p = 1)."""
    return TestResult(
        effect=0.0,
        ci=(0.0, 0.0),
        p_value=1.0,
        se=0.0,
        df=None,
        n=moments.n if moments else 0,
        control_mean=0.0,
        treatment_mean=0.0,
        relative=config.relative,
        alternative=config.alternative,
        alpha=config.alpha,
        test_value=config.test_value,
        lower_is_better=config.lower_is_better,
        method=method,
        error=error,
    )


def welch_p_value(estimate: float, se: float, df: float, test_value: float, alternative: str) -> float:
    z = (estimate - test_value) / se
    if alternative == "greater":
        return t_cdf(-z, df)
    if alternative == "less":
        return t_cdf(z, df)
    return min(1.0, 2.0 * t_cdf(-abs(z), df))


def compare(
    control: Statistic, treatment: Statistic, config: FrequentistConfig = FrequentistConfig()
) -> TestResult:
    """Welch t-test of treatment against control on sufficient statistics.

    What: the effect (absolute difference, or relative lift via the delta
    method), its confidence interval and p-value, two- or one-sided.
    Proportions (``ProportionStatistic``) are the special case v = p(1 − p);
    ratio metrics use the delta method; CUPED statistics are adjusted with
    the pooled θ when theirs is ``None``.
    When: the experiment reached its planned sample size and is read once.
    Returns: :class:`TestResult`; impossible input (n < 2, zero variance, a
    zero baseline for a relative lift, mixed statistic types, NaN) gives a
    result with ``error`` set, never an exception or NaN.
    Reference: gbstats ``TwoSidedTTest``; published vector: control
    (n 3407, Σ 1396.87, Σ² 52377.9767), treatment (3461, 2422.7, 134698.29)
    → lift 0.70732, CI (−0.03526, 1.44989), p 0.06191.
    """
    err = check_test_config(config.alpha, config.alternative, config.test_value)
    if err:
        return failed_result(config, METHOD_WELCH, err)
    m = effect_moments(control, treatment, config.relative)
    if m.error:
        return failed_result(config, METHOD_WELCH, m.error, m)
    alt = config.alternative
    q = 1.0 - config.alpha / 2.0 if alt == "two-sided" else 1.0 - config.alpha
    try:
        half = t_ppf(q, m.df) * m.se
        p_value = welch_p_value(m.estimate, m.se, m.df, config.test_value, alt)
    except ArithmeticError:
        return failed_result(config, METHOD_WELCH, messages.NUMERICAL_RANGE, m)
    ci = bounds(m.estimate, half, alt)
    if math.isnan(p_value) or math.isnan(ci[0]) or math.isnan(ci[1]):
        return failed_result(config, METHOD_WELCH, messages.NUMERICAL_RANGE, m)
    # positional: keyword construction of a frozen dataclass costs ~2x (hot path)
    return TestResult(
        m.estimate,  # effect
        ci,
        p_value,
        m.se,  # se
        m.df,  # df
        m.n,  # n
        m.control_mean,  # control_mean
        m.treatment_mean,  # treatment_mean
        config.relative,  # relative
        alt,  # alternative
        config.alpha,  # alpha
        config.test_value,  # test_value
        config.lower_is_better,  # lower_is_better
        METHOD_WELCH,  # method
    )

