"""Guardrail metrics: non-inferiority tests with a margin.

A guardrail (latency, error rate, unsubscribe rate, revenue) must not get
*worse* by more than a tolerated margin. "No significant difference" is not
evidence of safety, so the test is one-sided with the burden of proof on the
treatment:

* higher is better: H0: Δ ≤ −margin  vs  H1: Δ > −margin
* lower is better:  H0: Δ ≥ +margin  vs  H1: Δ < +margin

The guardrail passes (``non_inferior``) when the one-sided bound at level
1 − alpha lies inside the margin, which is the same as p < alpha. With
``sequential=True`` the bound comes from the one-sided confidence sequence,
so it can be checked at every look.

Reference: FDA (2016) "Non-Inferiority Clinical Trials to Establish
Effectiveness"; Spotify (2024) "Risk-aware product decisions in A/B tests
with multiple metrics" (guardrails as non-inferiority tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import messages
from ._numeric import Result, is_finite
from .frequentist import FrequentistConfig, compare
from .sequential import DEFAULT_N_STAR, SequentialConfig, sequential_compare
from .statistics import Statistic


@dataclass(frozen=True, slots=True)
class NonInferiorityResult(Result):
    """Outcome of a guardrail check.

    effect: treatment − control (relative or absolute).
    bound: the one-sided confidence bound on the harmful side: the lower
        bound for higher-is-better metrics, the upper bound for lower-is-better.
    non_inferior: True when ``bound`` is within the margin (the guardrail holds).
    p_value: one-sided, against the margin.
    """

    effect: float
    bound: float
    margin: float
    p_value: float
    non_inferior: bool
    relative: bool
    lower_is_better: bool
    alpha: float
    sequential: bool
    error: str | None = None


def non_inferiority(
    control: Statistic,
    treatment: Statistic,
    margin: float,
    *,
    relative: bool = True,
    lower_is_better: bool = False,
    alpha: float = 0.05,
    sequential: bool = False,
    n_star: float = DEFAULT_N_STAR,
) -> NonInferiorityResult:
    """Non-inferiority test of a guardrail metric with a tolerated ``margin``.

    What: one-sided test that the treatment is not worse than control by more
    than ``margin`` (a positive number, relative lift or absolute units).
    When: every guardrail metric of an experiment you intend to ship.
    Returns: :class:`NonInferiorityResult`; ``error`` for impossible input or
    a non-positive margin (then ``non_inferior`` is False).
    """
    def failed(error: str) -> NonInferiorityResult:
        return NonInferiorityResult(
            0.0, 0.0, margin if is_finite(margin) else 0.0, 1.0, False, relative, lower_is_better, alpha, sequential, error
        )

    if not (is_finite(margin) and margin > 0):
        return failed(messages.INVALID_MARGIN)
    alternative = "less" if lower_is_better else "greater"
    test_value = margin if lower_is_better else -margin
    if sequential:
        result = sequential_compare(
            control,
            treatment,
            SequentialConfig(relative, alpha, alternative, test_value, lower_is_better, n_star),
        )
    else:
        result = compare(control, treatment, FrequentistConfig(relative, alpha, alternative, test_value, lower_is_better))
    if result.error:
        return failed(result.error)
    bound = result.ci[1] if lower_is_better else result.ci[0]
    passed = bound < margin if lower_is_better else bound > -margin
    return NonInferiorityResult(
        effect=result.effect,
        bound=bound,
        margin=margin,
        p_value=result.p_value,
        non_inferior=passed,
        relative=relative,
        lower_is_better=lower_is_better,
        alpha=alpha,
        sequential=sequential,
    )
