"""Sample ratio mismatch (SRM): is the observed traffic split the configured one?

A χ² goodness-of-fit test of the per-variant unit counts against the
configured weights. A tiny p-value means assignment or logging is broken
(bots, redirects, crashes in one arm) and every metric of the experiment is
suspect, so the check is flagged at p < 0.001: strict enough that a healthy
experiment checked daily for a year rarely raises a false alarm.

Reference: Fabijan et al. (2019) "Diagnosing sample ratio mismatch in online
controlled experiments"; gbstats ``utils.check_srm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from . import messages
from ._numeric import Result, chi2_sf, is_finite, is_whole

SRM_THRESHOLD = 0.001
WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class SrmResult(Result):
    """Outcome of the SRM check.

    p_value / chi2 / df: the χ² test over the arms with positive weight.
    expected: expected unit counts under the configured weights.
    flagged: True when p_value < threshold, or when an arm with weight 0
        received units (an impossible split, reported with p_value = 0).
    error: why no test was possible (then flagged is False, p_value = 1).
    """

    p_value: float
    chi2: float
    df: int
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    flagged: bool
    threshold: float
    error: str | None = None


def srm_check(counts: Sequence[int], weights: Sequence[float], threshold: float = SRM_THRESHOLD) -> SrmResult:
    """χ² test of observed unit counts per variant against configured weights.

    What: flags a sample ratio mismatch when p < ``threshold`` (0.001).
    When: before reading any metric of an experiment; a flagged SRM means the
    metric results cannot be trusted.
    Returns: :class:`SrmResult`; ``error`` for impossible input (fewer than
    two arms, length mismatch, negative or fractional counts, negative
    weights, weights not summing to 1, no units at all).
    Reference: gbstats ``check_srm``.
    """
    observed = tuple(counts)
    weight_list = tuple(weights)

    def failed(error: str) -> SrmResult:
        return SrmResult(1.0, 0.0, 0, tuple(int(c) if is_whole(c) else 0 for c in observed), (), False, threshold, error)

    if not (is_finite(threshold) and 0.0 < threshold < 1.0):
        return failed(messages.INVALID_THRESHOLD)
    if len(observed) != len(weight_list):
        return failed(messages.LENGTH_MISMATCH)
    if len(observed) < 2:
        return failed(messages.TOO_FEW_VARIANTS)
    if not all(is_whole(c) and c >= 0 for c in observed):
        return failed(messages.NEGATIVE_COUNT)
    if not all(is_finite(w) and w >= 0 for w in weight_list):
        return failed(messages.INVALID_WEIGHT)
    if abs(math.fsum(weight_list) - 1.0) > WEIGHT_TOLERANCE:
        return failed(messages.WEIGHTS_NOT_NORMALISED)
    observed = tuple(int(c) for c in observed)
    total = sum(observed)
    if total == 0:
        return failed(messages.NO_UNITS)

    expected = tuple(w * total for w in weight_list)
    active = [i for i, w in enumerate(weight_list) if w > 0]
    chi2 = math.fsum((observed[i] - expected[i]) ** 2 / expected[i] for i in active)
    df = len(active) - 1
    if any(observed[i] > 0 for i, w in enumerate(weight_list) if w == 0):
        return SrmResult(0.0, chi2, df, observed, expected, True, threshold)
    p_value = chi2_sf(chi2, df) if df > 0 else 1.0
    return SrmResult(p_value, chi2, df, observed, expected, p_value < threshold, threshold)
