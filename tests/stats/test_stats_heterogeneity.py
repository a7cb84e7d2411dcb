"""Segment effects, heterogeneity and interactions against planted truths (seeded Monte Carlo, seconds).

Heterogeneity: simulated experiments of 40,000 users, conversions drawn per (device × country × arm)
cell; in the planted world (1,000 runs) mobile's effect is +4 points and everyone else's +1, in the
homogeneous world (4,000 runs) everyone's is +1. The `differs` flag (segment vs complement, Bonferroni
across the 6 segments, gated by its dimension's Cochran's Q) must flag mobile in ≥ 90% of planted runs
and flag any segment in ≤ 5% of homogeneous runs.

Interactions: 1,000 simulated 2×2 tables of 10,000 users per cell; the planted interaction adds +3 points
to (A treatment, B treatment) on top of two additive +1-point effects. The flag (Holm at 0.01) must fire
in ≥ 90% of planted runs and in ≤ 5% of additive ones; the unadjusted test at 0.05 must hold its level.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcp_servers.stats import messages
from mcp_servers.stats.heterogeneity import SegmentInput, difference, segment_effects
from mcp_servers.stats.interactions import flag_interactions, interaction_contrast
from mcp_servers.stats.statistics import ProportionStatistic, SampleMeanStatistic

RUNS = 1000
NULL_RUNS = 4000  # the homogeneous world: the Monte Carlo SE of a 4% rate is 0.3 points
DEVICES = {"mobile": 0.45, "desktop": 0.40, "tablet": 0.15}
COUNTRIES = {"US": 0.5, "DE": 0.3, "BR": 0.2}
USERS = 40_000
BASE = 0.10


def _simulate_segments(rng: np.random.Generator, mobile_effect: float, other_effect: float, runs: int = RUNS):
    """Conversions per (run, device, country, arm): arrays of n and successes."""
    d_share = np.array(list(DEVICES.values()))
    c_share = np.array(list(COUNTRIES.values()))
    n = np.rint(USERS / 2 * d_share[:, None] * c_share[None, :]).astype(int)  # per arm
    effect = np.full(len(DEVICES), other_effect)
    effect[0] = mobile_effect
    p = np.stack([np.full((len(DEVICES), len(COUNTRIES)), BASE),
                  (BASE + effect)[:, None] * np.ones(len(COUNTRIES))], axis=-1)  # device, country, arm
    k = rng.binomial(np.broadcast_to(n[..., None], p.shape), p, size=(runs, *p.shape))
    return n, k


def _analyses(n, k):
    """One segment_effects call per run over the device and country margins."""
    out = []
    n_dev, n_cty = n.sum(1), n.sum(0)
    k_dev, k_cty = k.sum(2), k.sum(1)  # run, device, arm / run, country, arm
    for r in range(len(k)):
        inputs = []
        for dim, names, nn, kk in (("device", list(DEVICES), n_dev, k_dev[r]), ("country", list(COUNTRIES), n_cty, k_cty[r])):
            for i, name in enumerate(names):
                effect, se = difference(ProportionStatistic(int(nn[i]), float(kk[i, 1])),
                                        ProportionStatistic(int(nn[i]), float(kk[i, 0])))
                inputs.append(SegmentInput(dim, name, effect, se, int(2 * nn[i]), float(kk[i, 0]) / nn[i]))
        out.append(segment_effects(inputs))
    return out


def test_heterogeneity_flags_the_planted_segment_and_not_homogeneous_data():
    rng = np.random.default_rng(20261206)
    planted = _analyses(*_simulate_segments(rng, 0.04, 0.01))
    homogeneous = _analyses(*_simulate_segments(rng, 0.01, 0.01, NULL_RUNS))
    mobile_flagged = np.mean([any(s.segment == "mobile" and s.differs for s in a.segments) for a in planted])
    any_flag = np.mean([bool(a.differing) for a in homogeneous])
    country_flag_planted = np.mean([any(s.dimension == "country" and s.differs for s in a.segments) for a in planted])
    q_device = np.mean([next(d for d in a.dimensions if d.dimension == "device").flagged for a in planted])
    q_any_homogeneous = np.mean([any(d.flagged for d in a.dimensions) for a in homogeneous])
    assert mobile_flagged >= 0.90, mobile_flagged
    assert any_flag <= 0.05, any_flag
    # country is independent of device, so the planted device effect does not leak into country flags
    assert country_flag_planted <= 0.05, country_flag_planted
    # Cochran's Q alone (Bonferroni over the two dimensions) finds the device effect and holds its 5% level
    assert q_device >= 0.90 and 0.035 <= q_any_homogeneous <= 0.065, (q_device, q_any_homogeneous)
    # the per-segment effect intervals cover mobile's planted +4 points about 95% of the time
    cover = np.mean([next(s for s in a.segments if s.segment == "mobile").ci[0] <= 0.04
                     <= next(s for s in a.segments if s.segment == "mobile").ci[1] for a in planted])
    assert 0.93 <= cover <= 0.97, cover


def test_segment_effects_numbers_and_corrections():
    inputs = [SegmentInput("device", "mobile", 0.03, 0.01, 1000, 0.1),
              SegmentInput("device", "desktop", 0.0, 0.01, 3000, 0.1),
              SegmentInput("plan", "pro", 0.01, 0.02, 500)]
    a = segment_effects(inputs, correction="benjamini-hochberg")
    assert a.ok and a.family_size == 3 and a.heterogeneity_family_size == 2
    mobile = a.segments[0]
    assert mobile.z == pytest.approx(3.0) and mobile.relative_effect == pytest.approx(0.3)
    assert mobile.complement_effect == pytest.approx(0.0) and mobile.complement_se == pytest.approx(0.01)
    assert mobile.heterogeneity_z == pytest.approx(0.03 / math.sqrt(2) / 0.01)
    assert mobile.heterogeneity_p_adjusted == pytest.approx(min(1.0, 2 * mobile.heterogeneity_p))
    # a dimension with one segment has no complement and no Q
    assert a.segments[2].complement_effect is None and not a.segments[2].differs
    assert [d.dimension for d in a.dimensions] == ["device"]
    q = a.dimensions[0]
    assert q.df == 1 and q.q == pytest.approx((0.03 - 0.015) ** 2 / 1e-4 * 2)
    # skipped and refused inputs
    b = segment_effects([SegmentInput("device", "x", 0.1, 0.0, 10)])
    assert b.error == messages.EMPTY_FAMILY and b.skipped[0][1] == "x"
    assert segment_effects(inputs, correction="bonferroni").error == messages.INVALID_CORRECTION
    assert difference(ProportionStatistic(10, 0.0), ProportionStatistic(10, 0.0)) is None


def _simulate_tables(rng: np.random.Generator, interaction: float, n: int = 10_000):
    p = np.array([[BASE, BASE + 0.01], [BASE + 0.01, BASE + 0.02 + interaction]])
    return rng.binomial(n, p, size=(RUNS, 2, 2)), n


def _contrasts(k, n):
    return [interaction_contrast([[ProportionStatistic(n, float(k[r, a, b])) for b in (0, 1)] for a in (0, 1)])
            for r in range(len(k))]


def test_interaction_flags_planted_interactions_and_not_additive_pairs():
    rng = np.random.default_rng(7)
    planted = _contrasts(*_simulate_tables(rng, 0.03))
    additive = _contrasts(*_simulate_tables(rng, 0.0))
    found = np.mean([flag_interactions([r]).rejected[0] for r in planted])
    false = np.mean([flag_interactions([r]).rejected[0] for r in additive])
    assert found >= 0.90, found
    assert false <= 0.05, false
    level = np.mean([r.p_value <= 0.05 for r in additive])
    assert 0.035 <= level <= 0.065, level  # the unadjusted test holds its nominal 5%
    cover = np.mean([r.ci[0] <= 0.03 <= r.ci[1] for r in planted])
    assert 0.93 <= cover <= 0.97, cover


def test_interaction_holm_across_pairs_and_errors():
    rng = np.random.default_rng(11)
    k, n = _simulate_tables(rng, 0.0)
    # five independent additive pairs per analysis: the family-wise false flag rate stays at most 1%
    fwer = np.mean([any(flag_interactions(_contrasts(k[i: i + 5], n)).rejected) for i in range(0, 500, 5)])
    assert fwer <= 0.05
    r = interaction_contrast([[SampleMeanStatistic(10, 10.0, 20.0), SampleMeanStatistic(10, 12.0, 30.0)],
                              [SampleMeanStatistic(10, 14.0, 40.0), SampleMeanStatistic(10, 30.0, 120.0)]])
    assert r.ok and r.contrast == pytest.approx((3.0 - 1.2) - (1.4 - 1.0))
    assert r.effect_without == pytest.approx(0.4) and r.relative_contrast == pytest.approx(1.4)
    assert interaction_contrast([[ProportionStatistic(10, 1.0)]]).error == messages.INTERACTION_CELLS
    bad = interaction_contrast([[ProportionStatistic(1, 1.0)] * 2] * 2)
    assert bad.error == messages.INTERACTION_CELLS and not flag_interactions([bad]).rejected[0]
