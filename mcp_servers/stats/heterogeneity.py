"""Segment effects and heterogeneity: who responds differently.

Input per segment (a value of one dimension, e.g. device = mobile): the
treatment effect on the absolute scale (treatment mean − control mean) and its
standard error, computed from the two arms' sufficient statistics inside the
segment (:func:`difference`), plus the segment's units, which weight it in its
dimension.

Three questions, three tests:

* Is the effect in this segment non-zero? A z-test per segment, adjusted
  across every segment of every dimension by Holm (family-wise error) or
  Benjamini–Hochberg (false discovery rate).
* Does this segment respond differently from the rest? A z-test of the
  segment's effect against its complement in the same dimension (the other
  segments, combined with their unit shares as weights, which is the
  complement's difference in means when the treatment share is the same in
  every segment), Bonferroni-corrected across all segments tested. Segment and
  complement hold different users, so the two estimates are independent.
  This is the shape of Statsig's Differential Impact Detection.
* Is there any heterogeneity along this dimension? Cochran's Q (inverse-variance
  weighted squared deviations from the pooled effect, χ² with K − 1 degrees
  of freedom) and I² = max(0, (Q − df) / Q), Bonferroni-corrected across
  dimensions.

A segment is flagged ``differs`` when both hold at level alpha: its dimension's
Q (the gate: heterogeneity exists along this dimension) and its own test
against the complement (the location: this segment is where). Each alone
controls the family-wise error at alpha; requiring both keeps that bound and
removes the false flags the two tests do not share.

References: Cochran (1954) "The combination of estimates from different
experiments"; Higgins & Thompson (2002) for I²; Holm (1979); Benjamini &
Hochberg (1995).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from . import messages
from ._numeric import Result, chi2_sf, is_finite, norm_cdf, norm_ppf
from .multiple_testing import benjamini_hochberg, holm
from .statistics import Statistic, check_statistic

CORRECTIONS = ("holm", "benjamini-hochberg")


@dataclass(frozen=True, slots=True)
class SegmentInput:
    """One segment's treatment effect: ``effect`` = treatment mean − control mean, ``se`` its standard error,
    ``units`` the users in the segment (both arms), ``baseline`` the control mean (for a relative lift)."""

    dimension: str
    segment: str
    effect: float
    se: float
    units: int
    baseline: float | None = None


@dataclass(frozen=True, slots=True)
class SegmentEffect:
    """The tests of one segment (p-values two-sided).

    significant: the effect differs from zero after the correction across segments.
    complement_effect / complement_se: the rest of the dimension (None when the dimension has one segment).
    heterogeneity_p_adjusted: Bonferroni across the segments tested against a complement.
    differs: the segment's effect differs from its complement's at the Bonferroni-adjusted level and its
        dimension's Cochran's Q is significant (Bonferroni across dimensions).
    """

    dimension: str
    segment: str
    units: int
    effect: float
    se: float
    relative_effect: float | None
    ci: tuple[float, float]
    z: float
    p_value: float
    p_adjusted: float
    significant: bool
    complement_effect: float | None
    complement_se: float | None
    heterogeneity_z: float | None
    heterogeneity_p: float | None
    heterogeneity_p_adjusted: float | None
    differs: bool


@dataclass(frozen=True, slots=True)
class DimensionHeterogeneity:
    """Cochran's Q for one dimension; ``flagged`` at the Bonferroni-adjusted level across dimensions."""

    dimension: str
    segments: int
    pooled_effect: float
    q: float
    df: int
    p_value: float
    p_adjusted: float
    i_squared: float
    flagged: bool


@dataclass(frozen=True, slots=True)
class SegmentAnalysis(Result):
    segments: tuple[SegmentEffect, ...]
    dimensions: tuple[DimensionHeterogeneity, ...]
    correction: str
    alpha: float
    family_size: int  # segments in the effect family
    heterogeneity_family_size: int  # segments tested against a complement (the Bonferroni factor)
    skipped: tuple[tuple[str, str, str], ...] = ()  # (dimension, segment, why) left out
    error: str | None = None

    @property
    def differing(self) -> tuple[SegmentEffect, ...]:
        return tuple(s for s in self.segments if s.differs)


def two_sided_p(z: float) -> float:
    return min(1.0, 2.0 * norm_cdf(-abs(z)))


def difference(treatment: Statistic, control: Statistic) -> tuple[float, float] | None:
    """(treatment mean − control mean, its standard error), or None when a statistic cannot be used."""
    if check_statistic(treatment) or check_statistic(control):
        return None
    se2 = max(treatment.variance, 0.0) / treatment.n + max(control.variance, 0.0) / control.n
    if not (is_finite(se2) and se2 > 0):
        return None
    return treatment.mean - control.mean, math.sqrt(se2)


def _complement(items: Sequence[SegmentInput], i: int) -> tuple[float, float] | None:
    others = [s for j, s in enumerate(items) if j != i]
    weight = sum(s.units for s in others)
    if not others or weight <= 0:
        return None
    effect = math.fsum(s.units * s.effect for s in others) / weight
    var = math.fsum((s.units * s.se) ** 2 for s in others) / weight**2
    return effect, math.sqrt(var)


def segment_effects(segments: Sequence[SegmentInput], *, alpha: float = 0.05,
                    correction: str = "holm") -> SegmentAnalysis:
    """Per-segment effects with multiple-testing control, heterogeneity z-tests and Cochran's Q.

    What: for each segment its effect, interval (at 1 − alpha, unadjusted), z and p; p adjusted across
    all segments by ``correction`` (``holm`` or ``benjamini-hochberg``); the segment-vs-complement test
    (Bonferroni across segments) and Cochran's Q per dimension (Bonferroni across dimensions).
    When: after the overall comparison, to find who responds differently.
    Returns: :class:`SegmentAnalysis`; segments with a non-positive or non-finite standard error or
    fewer than 2 units are skipped (listed in ``skipped``); ``error`` when none is usable or the
    configuration is invalid.
    """
    if not (is_finite(alpha) and 0.0 < alpha < 1.0):
        return SegmentAnalysis((), (), correction, alpha, 0, 0, (), messages.INVALID_ALPHA)
    if correction not in CORRECTIONS:
        return SegmentAnalysis((), (), correction, alpha, 0, 0, (), messages.INVALID_CORRECTION)
    usable: list[SegmentInput] = []
    skipped: list[tuple[str, str, str]] = []
    for s in segments:
        if not (is_finite(s.effect, s.se) and s.se > 0):
            skipped.append((s.dimension, s.segment, "no usable standard error"))
        elif s.units < 2:
            skipped.append((s.dimension, s.segment, "fewer than 2 units"))
        else:
            usable.append(s)
    if not usable:
        return SegmentAnalysis((), (), correction, alpha, 0, 0, tuple(skipped), messages.EMPTY_FAMILY)

    by_dimension: dict[str, list[SegmentInput]] = {}
    for s in usable:
        by_dimension.setdefault(s.dimension, []).append(s)

    z = [s.effect / s.se for s in usable]
    p = [two_sided_p(v) for v in z]
    adjust = holm if correction == "holm" else benjamini_hochberg
    adjusted = adjust(p, alpha)
    complements: dict[tuple[str, str], tuple[float, float] | None] = {}
    for members in by_dimension.values():
        for i, s in enumerate(members):
            complements[(s.dimension, s.segment)] = _complement(members, i)
    m_het = sum(1 for c in complements.values() if c is not None)
    crit = _z_quantile(alpha)

    q_tests = [_cochran(name, members) for name, members in by_dimension.items() if len(members) >= 2]
    n_dims = len(q_tests)
    dimensions = tuple(
        DimensionHeterogeneity(name, k, pooled, q, df, qp, min(1.0, qp * n_dims), i2, min(1.0, qp * n_dims) <= alpha)
        for name, k, pooled, q, df, qp, i2 in q_tests)
    gate = {d.dimension for d in dimensions if d.flagged}

    effects: list[SegmentEffect] = []
    for k, s in enumerate(usable):
        comp = complements[(s.dimension, s.segment)]
        if comp is not None:
            het_se = math.sqrt(s.se**2 + comp[1] ** 2)
            het_z = (s.effect - comp[0]) / het_se if het_se > 0 else 0.0
            het_p = two_sided_p(het_z)
            het_adj = min(1.0, het_p * m_het)
        else:
            het_z = het_p = het_adj = None
        relative = s.effect / s.baseline if s.baseline not in (None, 0.0) and is_finite(s.baseline) else None  # type: ignore[arg-type]
        effects.append(SegmentEffect(
            dimension=s.dimension, segment=s.segment, units=int(s.units), effect=s.effect, se=s.se,
            relative_effect=relative, ci=(s.effect - crit * s.se, s.effect + crit * s.se), z=z[k], p_value=p[k],
            p_adjusted=adjusted.adjusted_p_values[k], significant=adjusted.rejected[k],
            complement_effect=None if comp is None else comp[0], complement_se=None if comp is None else comp[1],
            heterogeneity_z=het_z, heterogeneity_p=het_p, heterogeneity_p_adjusted=het_adj,
            differs=het_adj is not None and het_adj <= alpha and s.dimension in gate))

    return SegmentAnalysis(tuple(effects), dimensions, correction, alpha, len(usable), m_het, tuple(skipped))


def _z_quantile(alpha: float) -> float:
    return norm_ppf(1.0 - alpha / 2.0)


def _cochran(name: str, members: Sequence[SegmentInput]) -> tuple[str, int, float, float, int, float, float]:
    w = [1.0 / s.se**2 for s in members]
    pooled = math.fsum(wi * s.effect for wi, s in zip(w, members, strict=True)) / math.fsum(w)
    q = math.fsum(wi * (s.effect - pooled) ** 2 for wi, s in zip(w, members, strict=True))
    df = len(members) - 1
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return name, len(members), pooled, q, df, chi2_sf(q, df), i2
