"""SRM check and multiple-testing corrections."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from mcp_servers.stats import (
    SRM_THRESHOLD,
    FrequentistConfig,
    SampleMeanStatistic,
    SequentialConfig,
    benjamini_hochberg,
    compare,
    holm,
    sequential_compare,
    srm_check,
)
from mcp_servers.stats import messages as m

# --- SRM ------------------------------------------------------------------------------------------


def test_srm_matches_scipy_chisquare() -> None:
    counts, weights = [5100, 4900, 10_250], [0.25, 0.25, 0.5]
    result = srm_check(counts, weights)
    ref = scipy_stats.chisquare(counts, f_exp=[w * sum(counts) for w in weights])
    assert result.chi2 == pytest.approx(ref.statistic)
    assert result.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert result.df == 2 and result.expected == (5062.5, 5062.5, 10125.0)


def test_healthy_split_is_not_flagged_and_a_broken_one_is() -> None:
    assert not srm_check([10_030, 9_970], [0.5, 0.5]).flagged
    broken = srm_check([10_300, 9_700], [0.5, 0.5])
    assert broken.p_value < SRM_THRESHOLD and broken.flagged


def test_srm_false_alarm_rate_is_the_threshold() -> None:
    rng = np.random.default_rng(0)
    weights = [0.2, 0.3, 0.5]
    counts = rng.multinomial(50_000, weights, size=20_000)
    alarms = sum(srm_check(c.tolist(), weights).flagged for c in counts)
    assert alarms / 20_000 < 0.003  # expected 0.001


def test_units_in_a_zero_weight_arm_are_a_mismatch() -> None:
    result = srm_check([500, 480, 3], [0.5, 0.5, 0.0])
    assert result.error is None and result.flagged and result.p_value == 0.0
    assert not srm_check([500, 480, 0], [0.5, 0.5, 0.0]).flagged


@pytest.mark.parametrize(
    ("counts", "weights", "threshold", "error"),
    [
        ([100, 100], [0.5, 0.4], SRM_THRESHOLD, m.WEIGHTS_NOT_NORMALISED),
        ([100, 100], [0.5, 0.5, 0.0], SRM_THRESHOLD, m.LENGTH_MISMATCH),
        ([100], [1.0], SRM_THRESHOLD, m.TOO_FEW_VARIANTS),
        ([100, -1], [0.5, 0.5], SRM_THRESHOLD, m.NEGATIVE_COUNT),
        ([100, 2.5], [0.5, 0.5], SRM_THRESHOLD, m.NEGATIVE_COUNT),
        ([100, 100], [1.5, -0.5], SRM_THRESHOLD, m.INVALID_WEIGHT),
        ([100, 100], [math.nan, 0.5], SRM_THRESHOLD, m.INVALID_WEIGHT),
        ([0, 0], [0.5, 0.5], SRM_THRESHOLD, m.NO_UNITS),
        ([100, 100], [0.5, 0.5], 0.0, m.INVALID_THRESHOLD),
    ],
)
def test_srm_impossible_input(counts, weights, threshold, error) -> None:
    result = srm_check(counts, weights, threshold)
    assert result.error == error and not result.flagged and result.p_value == 1.0


# --- multiple testing -----------------------------------------------------------------------------

p_values = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30)


def _holm_by_definition(p: list[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure as stated in the 1979 paper."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = [False] * len(p)
    for k, i in enumerate(order):
        if p[i] > alpha / (len(p) - k):
            break
        rejected[i] = True
    return rejected


@settings(max_examples=200, deadline=None)
@given(p_values, st.sampled_from([0.01, 0.05, 0.1]))
def test_adjusted_p_values_follow_the_definitions(p: list[float], alpha: float) -> None:
    h, bh = holm(p, alpha), benjamini_hochberg(p, alpha)
    assert h.error is None and bh.error is None
    assert list(h.rejected) == _holm_by_definition(p, alpha)
    assert list(bh.adjusted_p_values) == pytest.approx(scipy_stats.false_discovery_control(p, method="bh"))
    for raw, ah, ab, rh, rb in zip(p, h.adjusted_p_values, bh.adjusted_p_values, h.rejected, bh.rejected, strict=True):
        assert raw <= ab <= ah <= 1.0  # FDR control is never stricter than FWER control
        assert rh <= rb  # every Holm rejection is a BH rejection
        assert rh == (ah <= alpha) and rb == (ab <= alpha)
    # adjusted p-values keep the order of the raw ones
    order = sorted(range(len(p)), key=lambda i: p[i])
    for adjusted in (h.adjusted_p_values, bh.adjusted_p_values):
        assert all(adjusted[order[i]] <= adjusted[order[i + 1]] for i in range(len(p) - 1))


def _results(effects: list[float], sequential: bool = False):
    control = SampleMeanStatistic(2000, 2000 * 10.0, 1999 * 4.0 + 2000 * 100.0)
    out = []
    for e in effects:
        treat = SampleMeanStatistic(2000, 2000 * (10.0 + e), 1999 * 4.0 + 2000 * (10.0 + e) ** 2)
        out.append(
            sequential_compare(control, treat, SequentialConfig(relative=False))
            if sequential
            else compare(control, treat, FrequentistConfig(relative=False))
        )
    return out


@pytest.mark.parametrize("sequential", [False, True])
def test_adjusted_intervals(sequential: bool) -> None:
    results = _results([0.0, 0.05, 0.2, 0.3, 0.5, -0.4], sequential)
    h, bh = holm(results), benjamini_hochberg(results)
    assert h.ci_alpha == pytest.approx(0.05 / 6)
    assert bh.ci_alpha == pytest.approx(sum(bh.rejected) * 0.05 / 6)
    for r, hci, bci, brej in zip(results, h.adjusted_cis, bh.adjusted_cis, bh.rejected, strict=True):
        # adjusted intervals are the test's own intervals at a stricter level: wider, same centre
        assert hci[0] < r.ci[0] and hci[1] > r.ci[1]
        assert bci[0] <= r.ci[0] and bci[1] >= r.ci[1]
        assert (hci[0] + hci[1]) / 2 == pytest.approx(r.effect)
        # Benjamini–Yekutieli: a BH-selected effect's FCR interval excludes the null
        if brej:
            assert bci[0] > 0 or bci[1] < 0
    # Bonferroni intervals are simultaneous: each is the 1 − α/m interval
    assert h.adjusted_cis[2] == pytest.approx(results[2].interval(0.05 / 6))


def test_failed_results_are_left_out_of_the_family() -> None:
    results = _results([0.3, 0.5])
    failed = compare(SampleMeanStatistic(1, 1, 1), SampleMeanStatistic(1, 1, 1))
    adjusted = holm([*results, failed])
    assert adjusted.family_size == 2
    assert adjusted.adjusted_p_values[2] == 1.0 and not adjusted.rejected[2]
    assert adjusted.adjusted_cis[2] == (0.0, 0.0)
    assert adjusted.adjusted_p_values[:2] == holm(results).adjusted_p_values


@pytest.mark.parametrize(
    ("items", "alpha", "error"),
    [
        ([], 0.05, m.EMPTY_FAMILY),
        ([0.01, 1.2], 0.05, m.INVALID_P_VALUE),
        ([0.01, math.nan], 0.05, m.INVALID_P_VALUE),
        ([0.01, 0.02], 1.0, m.INVALID_ALPHA),
        ([0.01, "p"], 0.05, m.INVALID_P_VALUE),
    ],
)
def test_multiple_testing_impossible_input(items, alpha, error) -> None:
    for fn in (holm, benjamini_hochberg):
        result = fn(items, alpha)
        assert result.error == error and not any(result.rejected)


def test_mixing_p_values_and_results_is_refused() -> None:
    assert holm([0.01, *_results([0.3])]).error == m.MIXED_FAMILY
