"""Multiple-testing corrections across variants × metrics.

* Holm–Bonferroni controls the family-wise error rate (the chance of *any*
  false positive) and is uniformly more powerful than Bonferroni. Its
  adjusted intervals are the Bonferroni simultaneous intervals at level
  1 − α/m: all m cover their true effects together with probability ≥ 1 − α
  (they can be wider than Holm's decisions imply for the 2nd…m-th tests).
* Benjamini–Hochberg controls the false discovery rate (the expected share
  of false positives among the "wins"); use it for many secondary metrics.
  Its adjusted intervals are Benjamini–Yekutieli false-coverage-rate
  intervals at level 1 − R·α/m (R = number of rejections): the selected
  effects' intervals miss their truth at most α of the time on average, and
  every BH-rejected test's interval excludes its null.

Adjusted p-values follow the usual step-down/step-up definitions (the same as
GrowthBook's ``adjustPValuesHolmBonferroni`` / ``adjustPValuesBenjaminiHochberg``).

References: Holm (1979); Benjamini & Hochberg (1995); Benjamini & Yekutieli
(2005) "False discovery rate–adjusted multiple confidence intervals".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import messages
from ._numeric import Result, is_finite
from .frequentist import TestResult


@dataclass(frozen=True, slots=True)
class MultipleTestingResult(Result):
    """Adjusted p-values, decisions and (for test results) adjusted intervals.

    Entries are in input order. Test results that carry an ``error`` are left
    out of the family: their adjusted p-value is 1, they are never rejected
    and their interval stays (0, 0).
    ci_alpha: the per-test level used for the adjusted intervals.
    """

    method: str
    alpha: float
    adjusted_p_values: tuple[float, ...]
    rejected: tuple[bool, ...]
    adjusted_cis: tuple[tuple[float, float], ...] | None
    ci_alpha: float | None
    family_size: int
    error: str | None = None


def _holm(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def _bh(p: list[float]) -> list[float]:
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i], reverse=True)
    adjusted = [1.0] * m
    running = 1.0
    for k, i in enumerate(order):
        rank = m - k  # 1-based rank in ascending order
        running = min(running, min(1.0, p[i] * (m / rank)))  # m/rank >= 1 exactly, so never below p
        adjusted[i] = running
    return adjusted


def _adjust(
    method: str, items: Sequence[float] | Sequence[TestResult], alpha: float
) -> MultipleTestingResult:
    def failed(error: str) -> MultipleTestingResult:
        k = len(items)
        return MultipleTestingResult(method, alpha, (1.0,) * k, (False,) * k, None, None, 0, error)

    if not (is_finite(alpha) and 0.0 < alpha < 1.0):
        return failed(messages.INVALID_ALPHA)
    results = [x for x in items if isinstance(x, TestResult)]
    if results and len(results) != len(items):
        return failed(messages.MIXED_FAMILY)
    if results:
        members = [i for i, r in enumerate(results) if r.error is None]
        p_all = [r.p_value for r in results]
    else:
        if not all(is_finite(x) for x in items):  # type: ignore[arg-type]
            return failed(messages.INVALID_P_VALUE)
        members = list(range(len(items)))
        p_all = [float(x) for x in items]  # type: ignore[arg-type]
    if not all(0.0 <= p_all[i] <= 1.0 for i in members):
        return failed(messages.INVALID_P_VALUE)
    if not members:
        return failed(messages.EMPTY_FAMILY)

    m = len(members)
    sub = [p_all[i] for i in members]
    adj_sub = _holm(sub) if method == "holm" else _bh(sub)
    adjusted = [1.0] * len(items)
    for i, a in zip(members, adj_sub, strict=True):
        adjusted[i] = a
    member_set = set(members)
    rejected = tuple(i in member_set and adjusted[i] <= alpha for i in range(len(items)))

    cis = None
    ci_alpha = None
    if results:
        r_count = sum(rejected)
        ci_alpha = alpha / m if method == "holm" else max(r_count, 1) * alpha / m
        cis = tuple(
            r.interval(ci_alpha) if i in member_set else (0.0, 0.0) for i, r in enumerate(results)
        )
    return MultipleTestingResult(method, alpha, tuple(adjusted), rejected, cis, ci_alpha, m)


def holm(items: Sequence[float] | Sequence[TestResult], alpha: float = 0.05) -> MultipleTestingResult:
    """Holm–Bonferroni adjustment (family-wise error rate ≤ alpha).

    What: step-down adjusted p-values and rejections; given ``TestResult``s,
    also Bonferroni simultaneous intervals at level 1 − alpha/m.
    When: the primary decision metrics across all treatment arms, where one
    false "win" is costly.
    Returns: :class:`MultipleTestingResult` (``error`` for p-values outside
    [0, 1], an empty family, mixed input or a bad alpha).
    Reference: Holm (1979), "A simple sequentially rejective multiple test procedure".
    """
    return _adjust("holm", items, alpha)


def benjamini_hochberg(
    items: Sequence[float] | Sequence[TestResult], alpha: float = 0.05
) -> MultipleTestingResult:
    """Benjamini–Hochberg adjustment (false discovery rate ≤ alpha).

    What: step-up adjusted p-values (q-values) and rejections; given
    ``TestResult``s, also Benjamini–Yekutieli FCR intervals at 1 − R·alpha/m.
    When: many secondary metrics or segments, where a small share of false
    discoveries is acceptable in exchange for power.
    Returns: :class:`MultipleTestingResult`.
    Reference: Benjamini & Hochberg (1995); Benjamini & Yekutieli (2005).
    """
    return _adjust("benjamini-hochberg", items, alpha)
