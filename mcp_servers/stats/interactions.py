"""Interactions between two concurrent experiments that share users.

Users exposed to both experiments A and B fall in a 2×2 table (A's arm ×
B's arm). With cell means m_ab (a, b ∈ {0 control, 1 treatment}), A's effect
without B's treatment is m_10 − m_00 and with it m_11 − m_01; the interaction
contrast is their difference

    Δ = (m_11 − m_01) − (m_10 − m_00)

estimated with standard error √(Σ v_ab / n_ab) (the four cells hold different
users), tested by a two-sided z-test. Δ = 0 means the two effects add up;
a significant Δ means one experiment's effect depends on the other's arm, so
neither readout transfers to a launch of both.

Across several pairs (or several treatment arms), the p-values are adjusted
together by Holm (:func:`flag_interactions`); the default level is 0.01,
since an interaction flag is a screening alarm raised over many pairs.

Reference: Montgomery, "Design and Analysis of Experiments", 2^2 factorial
designs; Kohavi, Tang & Xu (2020) "Trustworthy Online Controlled Experiments",
ch. 4 on interactions between concurrent experiments.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from . import messages
from ._numeric import Result, is_finite, norm_cdf, norm_ppf
from .multiple_testing import MultipleTestingResult, holm
from .statistics import Statistic, check_statistic

INTERACTION_ALPHA = 0.01


@dataclass(frozen=True, slots=True)
class InteractionResult(Result):
    """The 2×2 interaction contrast.

    contrast: (m_11 − m_01) − (m_10 − m_00) on the metric's absolute scale.
    relative_contrast: contrast / m_00 (None when m_00 is 0).
    effect_without / effect_with: A's effect when B is in control / in treatment.
    means: ((m_00, m_01), (m_10, m_11)); units likewise.
    """

    contrast: float
    se: float
    z: float
    p_value: float
    ci: tuple[float, float]
    relative_contrast: float | None
    effect_without: float
    effect_with: float
    means: tuple[tuple[float, float], tuple[float, float]]
    units: tuple[tuple[int, int], tuple[int, int]]
    alpha: float
    error: str | None = None


def _failed(alpha: float, error: str) -> InteractionResult:
    return InteractionResult(0.0, 0.0, 0.0, 1.0, (0.0, 0.0), None, 0.0, 0.0, ((0.0, 0.0), (0.0, 0.0)),
                             ((0, 0), (0, 0)), alpha, error)


def interaction_contrast(cells: Sequence[Sequence[Statistic]], *, alpha: float = 0.05) -> InteractionResult:
    """The interaction contrast of a 2×2 table of statistics and its z-test.

    What: ``cells[a][b]`` is the metric's statistic over users in arm ``a`` of experiment A and arm
    ``b`` of experiment B (0 = control, 1 = treatment); returns Δ, its standard error, z, the
    two-sided p and a 1 − alpha interval.
    When: two running experiments share users; one test per (treatment of A, treatment of B).
    Returns: :class:`InteractionResult`; ``error`` when a cell is missing, has n < 2 or is invalid.
    """
    if not (is_finite(alpha) and 0.0 < alpha < 1.0):
        return _failed(alpha, messages.INVALID_ALPHA)
    if len(cells) != 2 or any(len(row) != 2 for row in cells):
        return _failed(alpha, messages.INTERACTION_CELLS)
    flat = [cells[0][0], cells[0][1], cells[1][0], cells[1][1]]
    for stat in flat:
        if stat is None or check_statistic(stat):
            return _failed(alpha, messages.INTERACTION_CELLS)
    m = [s.mean for s in flat]
    var = math.fsum(max(s.variance, 0.0) / s.n for s in flat)
    if not (is_finite(var, *m) and var > 0):
        return _failed(alpha, messages.ZERO_VARIANCE)
    se = math.sqrt(var)
    without = m[2] - m[0]
    with_b = m[3] - m[1]
    contrast = with_b - without
    z = contrast / se
    p = min(1.0, 2.0 * norm_cdf(-abs(z)))
    crit = norm_ppf(1.0 - alpha / 2.0)
    return InteractionResult(
        contrast=contrast, se=se, z=z, p_value=p, ci=(contrast - crit * se, contrast + crit * se),
        relative_contrast=contrast / m[0] if m[0] != 0 else None, effect_without=without, effect_with=with_b,
        means=((m[0], m[1]), (m[2], m[3])), units=((int(flat[0].n), int(flat[1].n)), (int(flat[2].n), int(flat[3].n))),
        alpha=alpha)


def flag_interactions(results: Sequence[InteractionResult], alpha: float = INTERACTION_ALPHA) -> MultipleTestingResult:
    """Holm across the interaction tests: ``rejected[i]`` flags test i (family-wise error ≤ alpha).

    Tests with an ``error`` take p = 1 and are never flagged. Returns the ``MultipleTestingResult``
    (``error`` EMPTY_FAMILY when there is no test).
    """
    return holm([1.0 if r.error else r.p_value for r in results], alpha)
