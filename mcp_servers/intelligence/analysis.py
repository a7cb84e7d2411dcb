"""From per-variant sufficient statistics to per-metric results: pure functions, no I/O.

Input rows are the ClickHouse server's `get_variant_statistics` entries (as the
JSON it returns): per (variant, metric) n, sum, sum_squares, users_with_metric,
and for CUPED pre_sum, pre_sum_squares, post_pre_sum_of_products; for ratio
metrics the denominator's sums and Σm·d. They map onto the engine's dataclasses:

    0/1 per user (Σx = Σx² = #nonzero)  → ProportionStatistic(n, Σx)
    any other mean metric               → SampleMeanStatistic(n, Σx, Σx²)
    with CUPED                          → RegressionAdjustedStatistic(post, pre, Σxy)
    ratio                               → RatioStatistic(numerator, denominator, Σm·d)

Every comparison is computed with `mcp_servers.stats` (Welch,
always-valid confidence sequence, Gaussian Bayesian, CUPED, non-inferiority,
power and days left); this module only chooses the inputs and collects outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mcp_servers import stats
from mcp_servers.stats import (
    BayesianConfig,
    FrequentistConfig,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    SequentialConfig,
    Statistic,
)
from mcp_servers.stats import messages as stats_messages

DEFAULT_N_STAR = 5000.0


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def interval(ci: Sequence[float]) -> tuple[float | None, float | None]:
    return _finite(ci[0]), _finite(ci[1])


def mean_statistic(n: int, total: float, squares: float, nonzero: int | None) -> SampleMeanStatistic | ProportionStatistic:
    """A proportion when every user's value is 0 or 1 (Σx = Σx² = number of non-zero users)."""
    if (nonzero is not None and abs(total - squares) <= 1e-9 * max(1.0, abs(total))
            and abs(total - nonzero) < 1e-6 and 0 <= total <= n):
        return ProportionStatistic(n=int(n), sum=float(total))
    return SampleMeanStatistic(n=int(n), sum=float(total), sum_squares=float(squares))


def statistic_kind(stat: Statistic) -> str:
    if isinstance(stat, RatioStatistic):
        return "ratio"
    base = stat.post_statistic if isinstance(stat, RegressionAdjustedStatistic) else stat
    return "proportion" if isinstance(base, ProportionStatistic) else "mean"


def to_statistics(row: Mapping[str, Any], *, cuped: bool) -> tuple[Statistic, Statistic]:
    """(statistic for decisions, unadjusted statistic) of one (variant, metric) row."""
    n = int(row["n"])
    if row.get("kind") == "ratio":
        num = mean_statistic(n, row["sum"], row["sum_squares"], row.get("users_with_metric"))
        den = SampleMeanStatistic(n, float(row["denominator_sum"] or 0.0), float(row["denominator_sum_squares"] or 0.0))
        ratio = RatioStatistic(num, den, float(row["m_d_sum_of_products"] or 0.0))
        return ratio, ratio
    post = mean_statistic(n, row["sum"], row["sum_squares"], row.get("users_with_metric"))
    if cuped and row.get("pre_sum") is not None and row.get("post_pre_sum_of_products") is not None:
        pre = SampleMeanStatistic(n, float(row["pre_sum"]), float(row["pre_sum_squares"] or 0.0))
        if pre.variance > 0:
            return RegressionAdjustedStatistic(post, pre, float(row["post_pre_sum_of_products"])), post
    return post, post


def control_baseline(stat: Statistic) -> tuple[float, float | None]:
    """(mean, variance or None for a rate) of a control statistic, for planning."""
    base = stat.post_statistic if isinstance(stat, RegressionAdjustedStatistic) else stat
    if isinstance(base, ProportionStatistic):
        return base.mean, None
    return base.unadjusted_mean, max(base.unadjusted_variance, 1e-12)


def planned_n_star(control: Statistic, mde: float, power: float, alpha: float, min_sample_size: int) -> float:
    """N* of the confidence sequence: the planned total of two arms (tightest where the decision is due)."""
    mean, variance = control_baseline(control)
    planned = 0.0
    if mean:
        plan = stats.sample_size(mde, mean, variance, target_power=power, alpha=alpha)
        if plan.ok:
            planned = 2.0 * plan.n_per_variant
    return max(planned, 2.0 * min_sample_size, DEFAULT_N_STAR)


@dataclass(frozen=True)
class Settings:
    """The analysis options the math needs (a subset of AnalysisOptions)."""

    alpha: float = 0.05
    cuped: bool = True
    sequential: bool = True
    mde: float = 0.05
    target_power: float = 0.8
    default_guardrail_margin: float = 0.05


@dataclass
class PairResult:
    metric: str
    role: str
    direction: str
    variant: str
    control: str
    kind: str
    n: int
    control_n: int
    mean: float
    control_mean: float
    fixed: stats.TestResult
    sequential: stats.TestResult
    absolute: stats.TestResult
    bayes: stats.BayesianResult
    cuped_applied: bool
    theta: float | None = None
    variance_reduction: float | None = None
    unadjusted: stats.TestResult | None = None
    guardrail: dict[str, Any] | None = None
    p_harm: float = 1.0
    power: float | None = None
    days_left: float | None = None
    conditional_power: float | None = None  # P(significant by the maximum duration | the current trend)
    p_adjusted: float | None = None
    significant: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lower_is_better(self) -> bool:
        return self.direction == "lower"

    @property
    def decision(self) -> stats.TestResult:
        return self.sequential if self.extra.get("sequential", True) else self.fixed

    @property
    def better(self) -> bool | None:
        if not self.significant:
            return None
        up = self.decision.effect > 0
        return up != self.lower_is_better

    @property
    def degradation(self) -> float:
        """Relative change in the harmful direction (positive = worse)."""
        return -self.fixed.effect if not self.lower_is_better else self.fixed.effect


def compare_pair(
    metric: str, role: str, direction: str, variant: str, control: str,
    control_row: Mapping[str, Any], treatment_row: Mapping[str, Any], opts: Settings, *,
    n_star: float, margin: float | None = None, units_per_day: float | None = None, n_comparisons: int = 1,
    remaining_days: float | None = None,
) -> PairResult:
    """Every view of one treatment-vs-control comparison on one metric."""
    lower = direction == "lower"
    c_stat, c_raw = to_statistics(control_row, cuped=opts.cuped)
    t_stat, t_raw = to_statistics(treatment_row, cuped=opts.cuped)
    cuped_applied = isinstance(c_stat, RegressionAdjustedStatistic) and isinstance(t_stat, RegressionAdjustedStatistic)
    if not cuped_applied:  # both arms must be the same kind of statistic
        c_stat, t_stat = c_raw, t_raw
    fixed = stats.compare(c_stat, t_stat, FrequentistConfig(relative=True, alpha=opts.alpha, lower_is_better=lower))
    seq = stats.sequential_compare(
        c_stat, t_stat, SequentialConfig(relative=True, alpha=opts.alpha, lower_is_better=lower, n_star=n_star))
    absolute = stats.compare(c_stat, t_stat, FrequentistConfig(relative=False, alpha=opts.alpha, lower_is_better=lower))
    bayes = stats.bayesian_compare(c_stat, t_stat, BayesianConfig(relative=True, alpha=opts.alpha, lower_is_better=lower))
    result = PairResult(
        metric=metric, role=role, direction=direction, variant=variant, control=control,
        kind=statistic_kind(c_raw), n=int(treatment_row["n"]), control_n=int(control_row["n"]),
        mean=float(t_raw.unadjusted_mean), control_mean=float(c_raw.unadjusted_mean),
        fixed=fixed, sequential=seq, absolute=absolute, bayes=bayes, cuped_applied=cuped_applied,
        error=fixed.error or seq.error or bayes.error,
        extra={"sequential": opts.sequential},
    )
    if cuped_applied:
        adj = stats.cuped_adjust(c_stat, t_stat)  # type: ignore[arg-type]
        if adj.error is None:
            result.theta, result.variance_reduction = adj.theta, adj.variance_reduction
        result.unadjusted = stats.compare(c_raw, t_raw, FrequentistConfig(relative=True, alpha=opts.alpha,
                                                                          lower_is_better=lower))
    if result.error:
        return result
    # One-sided always-valid (or fixed) test that the metric got worse at all.
    harmful = "greater" if lower else "less"
    if opts.sequential:
        harm = stats.sequential_compare(c_stat, t_stat, SequentialConfig(
            relative=True, alpha=opts.alpha, alternative=harmful, lower_is_better=lower, n_star=n_star))
    else:
        harm = stats.compare(c_stat, t_stat, FrequentistConfig(relative=True, alpha=opts.alpha, alternative=harmful,
                                                               lower_is_better=lower))
    result.p_harm = harm.p_value
    if role == "guardrail":
        m = margin if margin else opts.default_guardrail_margin
        ni = stats.non_inferiority(c_stat, t_stat, m, relative=True, lower_is_better=lower, alpha=opts.alpha,
                                   sequential=opts.sequential, n_star=n_star)
        harm_significant = harm.ok and harm.p_value < opts.alpha
        if ni.error:
            status = "error"
        elif ni.non_inferior:
            status = "pass"
        elif harm_significant:
            status = "fail"
        else:
            status = "inconclusive"
        result.guardrail = {"margin": m, "status": status, "bound": _finite(ni.bound),
                            "p_non_inferiority": ni.p_value, "p_harm": harm.p_value,
                            "harm_significant": harm_significant, "sequential": opts.sequential}
    if role == "primary" and units_per_day:
        left = stats.days_left(c_stat, t_stat, opts.mde, units_per_day, target_power=opts.target_power,
                               relative=True, alpha=opts.alpha, n_comparisons=n_comparisons,
                               sequential=opts.sequential, n_star=n_star)
        if left.ok:
            result.power, result.days_left = left.current_power, left.days_left
        elif left.error == stats_messages.SAMPLE_SIZE_NOT_ATTAINABLE:
            result.days_left = math.inf  # the MDE is out of reach at any duration (futility)
        if remaining_days is not None:
            cp = stats.conditional_power(c_stat, t_stat, units_per_day * max(remaining_days, 0.0), relative=True,
                                         alpha=opts.alpha, n_comparisons=n_comparisons, sequential=opts.sequential,
                                         n_star=n_star)
            if cp.ok:
                result.conditional_power = cp.conditional_power
    return result


def adjust(results: Sequence[PairResult], method: str, alpha: float) -> None:
    """Multiple-testing correction of the decision p-values of one family, in place."""
    usable = [r for r in results if not r.error]
    if not usable:
        return
    if method == "none" or len(usable) == 1:
        for r in usable:
            r.p_adjusted = r.decision.p_value
            r.significant = r.decision.p_value < alpha
        return
    corrected = (stats.holm if method == "holm" else stats.benjamini_hochberg)([r.decision for r in usable], alpha)
    for r, p, rejected in zip(usable, corrected.adjusted_p_values, corrected.rejected, strict=True):
        r.p_adjusted = p
        r.significant = bool(rejected)


# ---------------------------------------------------------------- traffic split


def weights_at(moment: datetime, initial: Mapping[str, float],
               changes: Sequence[tuple[datetime, Mapping[str, float]]]) -> dict[str, float]:
    """The weights in effect at `moment`: `initial`, then every change made at or before it."""
    current = dict(initial)
    for when, weights in changes:
        if when <= moment:
            current = dict(weights)
    return current


def expected_counts(periods: Sequence[tuple[Mapping[str, int], Mapping[str, float]]],
                    variants: Sequence[str]) -> list[float]:
    """Expected users per variant when each period's users split by that period's weights."""
    expected = [0.0] * len(variants)
    for observed, weights in periods:
        total = sum(observed.values())
        wsum = sum(weights.get(v, 0.0) for v in variants) or 1.0
        for i, v in enumerate(variants):
            expected[i] += total * weights.get(v, 0.0) / wsum
    return expected


def srm_from_counts(observed: Sequence[int], expected: Sequence[float]) -> stats.SrmResult:
    """The engine's χ² SRM check with the expected shares implied by `expected` counts."""
    total = sum(expected)
    shares = [e / total for e in expected] if total > 0 else [1.0 / len(expected)] * len(expected)
    drift = 1.0 - math.fsum(shares)  # renormalise exactly (the engine checks the sum)
    if shares:
        shares[max(range(len(shares)), key=lambda i: shares[i])] += drift
    return stats.srm_check(list(observed), shares)


def segment_srm(rows: Sequence[Mapping[str, Any]], control: str, weights: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per (dimension, segment): χ² of control vs treatment users against the configured weights.

    `rows` are the ClickHouse insights' segment cells (dimension, segment, variant,
    control_users, variant_users). The segment with the smallest p-value is the one
    that drives a sample ratio mismatch most.
    """
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for r in rows:
        key = (r["dimension"], r["segment"])
        cell = cells.setdefault(key, {})
        cell[control] = int(r["control_users"])
        cell[r["variant"]] = int(r["variant_users"])
    out = []
    for (dimension, segment), counts in cells.items():
        variants = [v for v in weights if v in counts]
        if len(variants) < 2:
            continue
        w = [weights[v] for v in variants]
        total_w = sum(w)
        check = stats.srm_check([counts[v] for v in variants], [x / total_w for x in w])
        if check.ok:
            out.append({"dimension": dimension, "segment": segment, "counts": {v: counts[v] for v in variants},
                        "expected_shares": {v: weights[v] / total_w for v in variants},
                        "chi2": check.chi2, "p_value": check.p_value})
    out.sort(key=lambda d: d["p_value"])
    return out
