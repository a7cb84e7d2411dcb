"""One experiment's readout, computed from what the other servers returned: pure, no I/O.

`performance.PerformanceAnalysis._analyze` fetches the registry record (postgres), the
per-variant sufficient statistics (clickhouse), per-period exposures when the traffic split
changed inside the window (clickhouse) and similar past experiments (chromadb); `read_out`
turns them into the `ExperimentAnalysis` a tool returns plus the evidence later steps reuse
(`Analysed`: recommendations, bandits, the autopilot, charts). The statistics themselves are
`analysis` (sufficient statistics → comparisons) over the engine; the verdict rules are `decisions`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mcp_servers import stats
from schemas.errors import InvalidInput

from . import analysis as calc
from .decisions import (
    DEFAULT_MIN_UNITS,
    ArmEvidence,
    AutopilotPolicy,
    GuardrailEvidence,
    Outcome,
    VerdictInputs,
    decide_verdict,
)
from .models import (
    AnalysisOptions,
    CupedInfo,
    ExperimentAnalysis,
    GuardrailResult,
    MetricResult,
    PolicyView,
    RuleOutcome,
    SimilarExperiment,
    SrmSummary,
    VariantSummary,
)
from .narrative import analysis_narrative


def as_utc(value: Any) -> datetime:
    """A datetime or ISO string from a peer's JSON as an aware datetime (naive means UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def analysis_options(options: AnalysisOptions | Mapping[str, Any] | None) -> AnalysisOptions:
    if options is None:
        return AnalysisOptions()
    if isinstance(options, AnalysisOptions):
        return options
    try:
        return AnalysisOptions.model_validate(dict(options))
    except ValueError as exc:
        raise InvalidInput(f"invalid options: {exc}") from exc


def experiment_text(experiment: Mapping[str, Any]) -> str:
    """The text an experiment is searched by in memory: name, description, hypothesis, type, primary metric."""
    metric = experiment.get("primary_metric") or {}
    parts = [experiment.get("name") or experiment.get("key", "")]
    if experiment.get("description"):
        parts.append(experiment["description"])
    if experiment.get("hypothesis"):
        parts.append("Hypothesis: " + experiment["hypothesis"])
    if experiment.get("type"):
        parts.append(f"{experiment['type']} experiment")
    if metric.get("name"):
        parts.append(f"Primary metric: {metric['name']}")
    return ". ".join(p.strip().rstrip(".") for p in parts if p)[:2000]


def normalised_weights(weights: Mapping[str, float], digits: int = 4) -> dict[str, float]:
    """Weights rounded to `digits` and summing to exactly 1 (the largest absorbs the rounding)."""
    out = {k: round(float(w), digits) for k, w in weights.items()}
    top = max(out, key=lambda k: out[k])
    out[top] = round(1.0 - sum(v for k, v in out.items() if k != top), digits)
    return out


@dataclass
class MetricSpec:
    name: str
    role: str
    direction: str
    margin: float | None = None


def metric_specs(experiment: Mapping[str, Any]) -> list[MetricSpec]:
    """The primary metric first, then guardrails, then secondary metrics (each name once)."""
    primary = experiment["primary_metric"]
    specs = [MetricSpec(primary["name"], "primary", primary.get("direction", "higher"))]
    seen = {primary["name"]}
    for g in experiment.get("guardrail_metrics") or []:
        if g["name"] not in seen:
            seen.add(g["name"])
            specs.append(MetricSpec(g["name"], "guardrail", g.get("direction", "higher"), g.get("non_inferiority_margin")))
    for s in experiment.get("secondary_metrics") or []:
        if s["name"] not in seen:
            seen.add(s["name"])
            specs.append(MetricSpec(s["name"], "secondary", s.get("direction", "higher")))
    return specs


@dataclass(frozen=True)
class Arms:
    """The registry's view of an experiment's arms: the control, the treatments, the current weights."""

    key: str
    control: str
    treatments: list[str]
    weights: dict[str, float]
    specs: list[MetricSpec]


def arms_of(experiment: Mapping[str, Any]) -> Arms:
    key = experiment["key"]
    specs = metric_specs(experiment)
    variants = experiment["variants"]
    controls = [v["key"] for v in variants if v["is_control"]]
    if not controls:
        raise InvalidInput(f"experiment {key!r} has no control variant")
    return Arms(key=key, control=controls[0], treatments=[v["key"] for v in variants if not v["is_control"]],
                weights={v["key"]: float(v["weight"]) for v in variants}, specs=specs)


@dataclass(frozen=True)
class WeightHistory:
    """The weights an experiment started with and every change after, from its change log."""

    initial: dict[str, float]
    changes: list[tuple[datetime, dict[str, float]]]

    def cuts(self, start: datetime, end: datetime) -> list[datetime]:
        """The changes strictly inside [start, end): where the window splits into periods."""
        return [when for when, _ in self.changes if start < when < end]


def weight_history(experiment: Mapping[str, Any]) -> WeightHistory:
    changes = sorted(
        ((as_utc(c["created_at"]), c["changes"]["weights"]) for c in experiment.get("change_log", [])
         if c.get("change_type") == "weights_changed" and isinstance(c.get("changes", {}).get("weights"), dict)),
        key=lambda item: item[0])
    current = {v["key"]: float(v["weight"]) for v in experiment["variants"]}
    initial = dict(changes[0][1]["from"]) if changes else current
    return WeightHistory(initial, [(when, w["to"]) for when, w in changes])


def expected_counts(history: WeightHistory, order: list[str], observed: list[int], start: datetime, end: datetime,
                    per_period: Sequence[Mapping[str, int]] | None) -> tuple[list[float], bool]:
    """Expected users per variant under the weights in effect over the window, and whether they changed in it.

    `per_period`: users per variant in each period between `history.cuts(start, end)` (None when there is
    no cut); each period's users are expected to split by that period's weights.
    """
    if per_period is None:
        w = calc.weights_at(start, history.initial, history.changes)
        wsum = sum(w.get(v, 0.0) for v in order) or 1.0
        total = sum(observed)
        return [total * w.get(v, 0.0) / wsum for v in order], False
    bounds = [start, *history.cuts(start, end), end]
    periods = [(per_period[i], calc.weights_at(bounds[i], history.initial, history.changes))
               for i in range(len(per_period))]
    return calc.expected_counts(periods, order), True


def no_statistics(experiment: Mapping[str, Any]) -> dict[str, Any]:
    """get_variant_statistics' answer for an experiment nobody has been exposed to yet: no users,
    over an empty window at its start (so a repeated no-data verdict is the same verdict)."""
    at = experiment.get("started_at") or experiment["created_at"]
    return {"window_start": at, "window_end": at, "variants": [], "statistics": []}


def no_data_reason(experiment: Mapping[str, Any], opts: AnalysisOptions) -> str:
    """Why an analysis has no exposed user, in one line (the no_data verdict's reason)."""
    key, status = experiment["key"], experiment.get("status")
    if status == "draft":
        return f"{key!r} is a draft: nobody is assigned (and exposed) until it is started"
    if opts.start_date or opts.end_date:
        window = f"{opts.start_date or 'the first exposure'} to {opts.end_date or 'the last event'}"
        return f"no exposure events for {key!r} from {window} in the event store"
    return (f"no exposure events for {key!r} in the event store yet; each user get_variant assigns "
            f"records one")


@dataclass
class Analysed:
    """One analysis with everything later steps (recommendations, autopilot, bandits, charts) reuse."""

    experiment: dict[str, Any]
    result: ExperimentAnalysis
    pairs: list[calc.PairResult]
    rows: dict[tuple[str, str], dict[str, Any]]
    control: str
    treatments: list[str]
    weights: dict[str, float]
    n_star: float
    specs: list[MetricSpec]
    verdict: Outcome
    per_arm: list[Outcome]

    @property
    def key(self) -> str:
        return self.experiment["key"]

    def primary_pairs(self) -> list[calc.PairResult]:
        return [p for p in self.pairs if p.role == "primary"]


def read_out(experiment: dict[str, Any], arms: Arms, st: Mapping[str, Any], opts: AnalysisOptions, *,
             per_period: Sequence[Mapping[str, int]] | None, similar: list[SimilarExperiment],
             notes: list[str]) -> Analysed:
    """The analysis of `experiment` from its sufficient statistics `st` (get_variant_statistics' answer).

    Per metric and arm: lifts with intervals, fixed and sequential p, chance to win, CUPED, power,
    guardrails; SRM against the weights in force; multiple-testing adjustment; the verdict with the rule
    that produced it; the narrative. Appends to `notes`; timings are the caller's.
    """
    key, control, treatments, weights, specs = arms.key, arms.control, arms.treatments, arms.weights, arms.specs
    variants = experiment["variants"]
    window_start, window_end = as_utc(st["window_start"]), as_utc(st["window_end"])
    days_observed = max((window_end - window_start).total_seconds() / 86400.0, 1.0 / 24.0)
    users = {v["variant"]: int(v["users"]) for v in st["variants"]}
    unknown = sorted(set(users) - set(weights))
    if unknown:
        notes.append(f"Exposures for variants not in the registry were ignored: {', '.join(unknown)}.")
    mixed = sum(int(v.get("excluded_multiple_variants", 0)) for v in st["variants"])
    if mixed:
        notes.append(f"{mixed} users exposed to more than one variant are left out of every figure.")
    order = list(weights)
    observed = [users.get(v, 0) for v in order]
    total = sum(observed)
    units_per_day = total / days_observed

    expected, weights_changed = expected_counts(weight_history(experiment), order, observed, window_start,
                                                window_end, per_period)
    srm = calc.srm_from_counts(observed, expected) if total else stats.srm_check(observed, [1 / len(order)] * len(order))
    shares = {v: (e / sum(expected) if sum(expected) else 0.0) for v, e in zip(order, expected, strict=True)}
    variant_summaries = [
        VariantSummary(key=v["key"], is_control=v["is_control"], weight=float(v["weight"]),
                       users=users.get(v["key"], 0), observed_share=(users.get(v["key"], 0) / total) if total else 0.0,
                       expected_share=shares[v["key"]])
        for v in variants]

    rows = {(s["variant"], s["metric"]): s for s in st["statistics"]}
    math_opts = calc.Settings(alpha=opts.alpha, cuped=opts.cuped, sequential=opts.sequential, mde=opts.mde,
                              target_power=opts.target_power, default_guardrail_margin=opts.default_guardrail_margin)
    primary = specs[0]
    n_star = calc.DEFAULT_N_STAR
    control_row = rows.get((control, primary.name))
    if control_row and int(control_row["n"]) >= 2:
        n_star = calc.planned_n_star(calc.to_statistics(control_row, cuped=False)[1], opts.mde, opts.target_power,
                                     opts.alpha, int(experiment.get("min_sample_size") or 0))
    pairs: list[calc.PairResult] = []
    missing: list[str] = []
    for spec in specs:
        for t in treatments:
            c_row, t_row = rows.get((control, spec.name)), rows.get((t, spec.name))
            if c_row is None or t_row is None:
                missing.append(f"{spec.name}/{t}")
                continue
            pair_rate = units_per_day * (shares.get(control, 0.0) + shares.get(t, 0.0))
            pairs.append(calc.compare_pair(
                spec.name, spec.role, spec.direction, t, control, c_row, t_row, math_opts, n_star=n_star,
                margin=spec.margin, units_per_day=pair_rate or None, n_comparisons=max(len(treatments), 1),
                remaining_days=opts.max_duration_days - days_observed))
    if missing and total:
        notes.append("No exposed users yet for: " + ", ".join(missing) + ".")
    calc.adjust([p for p in pairs if p.role == "primary"], opts.multiple_testing, opts.alpha)
    calc.adjust([p for p in pairs if p.role == "secondary"], opts.multiple_testing, opts.alpha)
    calc.adjust([p for p in pairs if p.role == "guardrail"], "none", opts.alpha)

    min_units = max(int(experiment.get("min_sample_size") or 0), DEFAULT_MIN_UNITS)
    arm_evidence = []
    for p in pairs:
        if p.role != "primary":
            continue
        guards = tuple(
            GuardrailEvidence(g.metric, g.guardrail["status"], g.fixed.effect, g.guardrail["margin"],
                              g.guardrail["bound"], g.guardrail["p_harm"], g.lower_is_better)
            for g in pairs if g.role == "guardrail" and g.variant == p.variant and g.guardrail)
        decision = p.decision
        arm_evidence.append(ArmEvidence(
            variant=p.variant, n=p.n, control_n=p.control_n, metric=p.metric, relative_lift=decision.effect,
            ci=calc.interval(decision.ci), p_value=p.p_adjusted if p.p_adjusted is not None else decision.p_value,
            better=p.better, chance_to_win=p.bayes.chance_to_win, power=p.power, days_left=p.days_left,
            guardrails=guards, error=p.error, conditional_power=p.conditional_power))
    for t in treatments:  # an arm with no data at all still has a verdict
        if not any(a.variant == t for a in arm_evidence):
            arm_evidence.append(ArmEvidence(t, users.get(t, 0), users.get(control, 0), primary.name, 0.0,
                                            (None, None), 1.0, None, 0.5, None, None))
    vin = VerdictInputs(
        arms=tuple(arm_evidence), srm_p=srm.p_value, srm_flagged=srm.flagged,
        srm_error=None if total else no_data_reason(experiment, opts), min_units=min_units, units_per_day=units_per_day,
        days_observed=days_observed, arm_shares=shares, control=control,
        chance_threshold=opts.chance_to_win_threshold, alpha=opts.alpha, max_duration_days=opts.max_duration_days,
        mde=opts.mde, target_power=opts.target_power, sequential=opts.sequential, correction=opts.multiple_testing if len(treatments) > 1 else "none")
    verdict, per_arm = decide_verdict(vin)
    if weights_changed:
        notes.append("Traffic weights changed during the window: SRM expects each period's split; pooled lifts "
                     "mix periods with different splits (biased if the metric drifts over time).")
    method = opts.multiple_testing
    mt = ("none" if method == "none" else
          f"{method} across the {len(treatments)} treatment arm(s) on the primary metric, and across arms x "
          f"secondary metrics; guardrails uncorrected (one-sided safety checks). Decision p-values are "
          f"{'always-valid (sequential)' if opts.sequential else 'fixed-horizon'}.")
    result = ExperimentAnalysis(
        experiment_key=key, name=experiment.get("name", key), status=experiment["status"],
        primary_metric=primary.name, window_start=window_start, window_end=window_end,
        days_observed=days_observed, units_per_day=units_per_day, variants=variant_summaries,
        srm=SrmSummary(p_value=srm.p_value, chi2=srm.chi2, flagged=srm.flagged, threshold=srm.threshold,
                       observed=list(srm.observed), expected=[float(e) for e in expected],
                       weights_changed=weights_changed, error=srm.error),
        metrics=[_metric_result(p) for p in pairs], multiple_testing=mt,
        verdict=rule_outcome(verdict), variant_verdicts=[rule_outcome(o) for o in per_arm],
        similar_experiments=similar, narrative=[], notes=notes, options=opts,
        decision_id=None, elapsed_ms=0.0)
    result.narrative = analysis_narrative(result)
    return Analysed(experiment, result, pairs, rows, control, treatments, weights, n_star, specs, verdict, per_arm)


def _metric_result(p: calc.PairResult) -> MetricResult:
    error = p.error
    if error:
        return MetricResult(
            metric=p.metric, role=p.role, direction=p.direction, variant=p.variant, control=p.control,  # type: ignore[arg-type]
            statistic=p.kind, n=p.n, control_n=p.control_n, mean=p.mean, control_mean=p.control_mean,  # type: ignore[arg-type]
            absolute_lift=0.0, absolute_ci=(None, None), relative_lift=0.0, relative_ci=(None, None),
            relative_ci_sequential=(None, None), p_value=1.0, p_value_sequential=1.0, p_value_adjusted=None,
            significant=False, better=None, chance_to_win=0.5, risk_control=0.0, risk_treatment=0.0,
            cuped=CupedInfo(applied=False), error=error)
    g = p.guardrail
    return MetricResult(
        metric=p.metric, role=p.role, direction=p.direction, variant=p.variant, control=p.control,  # type: ignore[arg-type]
        statistic=p.kind, n=p.n, control_n=p.control_n, mean=p.mean, control_mean=p.control_mean,  # type: ignore[arg-type]
        absolute_lift=p.absolute.effect, absolute_ci=calc.interval(p.absolute.ci), relative_lift=p.fixed.effect,
        relative_ci=calc.interval(p.fixed.ci), relative_ci_sequential=calc.interval(p.sequential.ci),
        p_value=p.fixed.p_value, p_value_sequential=p.sequential.p_value, p_value_adjusted=p.p_adjusted,
        significant=p.significant, better=p.better, chance_to_win=p.bayes.chance_to_win,
        risk_control=p.bayes.risk[0], risk_treatment=p.bayes.risk[1],
        cuped=CupedInfo(applied=p.cuped_applied, theta=p.theta, variance_reduction=p.variance_reduction,
                        relative_lift_unadjusted=p.unadjusted.effect if p.unadjusted else None,
                        p_value_unadjusted=p.unadjusted.p_value if p.unadjusted else None),
        power=p.power, days_left=p.days_left if p.days_left is None or math.isfinite(p.days_left) else None,
        conditional_power=p.conditional_power, guardrail=GuardrailResult(**g) if g else None)


def rule_outcome(o: Outcome) -> RuleOutcome:
    return RuleOutcome(verdict=o.verdict, rule_id=o.rule_id, rule=o.rule, confidence=max(0.0, min(1.0, o.confidence)),  # type: ignore[arg-type]
                       confidence_basis=o.confidence_basis, variant=o.variant,
                       days_left=o.days_left if o.days_left is None or math.isfinite(o.days_left) else None)


def policy_view(policy: AutopilotPolicy) -> PolicyView:
    return PolicyView(environment=policy.environment, confidence_threshold=policy.confidence_threshold,  # type: ignore[arg-type]
                      max_degradation=policy.max_degradation, exploration_rate=policy.exploration_rate,
                      min_days=policy.min_days, min_units_per_variant=policy.min_units_per_variant,
                      allowed_actions=sorted(policy.allowed_actions))
