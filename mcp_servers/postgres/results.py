"""Metric results in the registry: record_result (attributed to the user's recorded variant, once per
event_id), and the descriptive per-variant statistics and summary built on them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from schemas.errors import Conflict, InvalidInput, NotFound

from .base import RegistryBase
from .models import ExperimentAnalysis, ExperimentSummary, MetricStats, ResultRecorded, VariantStats

MAX_RESULT_VALUE = 1e15  # far beyond any metric (revenue, latency, tokens); keeps Σx² finite
# An experiment without min_sample_size is judged by the sample the intelligence server's analysis
# plans for by default: a 5% relative change, 80% power, two-sided α = 0.05.
PLAN_MDE, PLAN_POWER, PLAN_ALPHA = 0.05, 0.8, 0.05


@dataclass(frozen=True)
class SamplePlan:
    per_arm: int | None  # users each arm needs; None: nothing to plan from
    basis: str  # a phrase that reads after "of N users": where per_arm comes from


def sample_plan(min_sample_size: int, metric: str, assigned: int, row: Mapping[str, Any] | None) -> SamplePlan:
    """The users per arm to judge an experiment by: its min_sample_size, or when that is 0 the size that
    detects a PLAN_MDE relative change in the primary metric at the control's value so far, per assigned
    user (users without a result count as 0, as in the analysis)."""
    if min_sample_size > 0:
        return SamplePlan(min_sample_size, "per arm (the experiment's min_sample_size)")
    if not assigned or row is None or not row["users"]:
        return SamplePlan(None, f"min_sample_size is 0 and the control has no {metric} results to plan from yet")
    total, squares, positive = float(row["s"]), float(row["ss"]), int(row["positive"])
    mean = total / assigned
    binary = abs(total - squares) <= 1e-9 * max(1.0, abs(total)) and abs(total - positive) < 1e-6
    variance = None if binary else max(squares / assigned - mean * mean, 0.0)
    from mcp_servers import stats  # here: scipy loads only when a plan is computed

    plan = stats.sample_size(PLAN_MDE, mean, variance, target_power=PLAN_POWER, alpha=PLAN_ALPHA)
    baseline = (f"the control's {metric} of {mean:.4g} per user so far ({assigned:,} users"
                + (", a rate)" if binary else ")"))
    if not plan.ok:
        return SamplePlan(None, f"min_sample_size is 0 and {baseline} gives no plan ({plan.error})")
    return SamplePlan(plan.n_per_variant,
                      f"per arm, planned to detect a {PLAN_MDE:.0%} relative change from {baseline} at "
                      f"{PLAN_POWER:.0%} power, two-sided α = {PLAN_ALPHA:g} (min_sample_size is 0)")


def sample_size_sentence(analysis: ExperimentAnalysis) -> str:
    """Whether every arm has the users the plan asks for, with the numbers."""
    smallest = min((v.assigned_users for v in analysis.variants), default=0)
    need, basis = analysis.sample_size_per_arm, analysis.sample_size_basis
    if need is None:
        return f"No sample size to judge by yet: {basis}; the smallest arm has {smallest:,} users."
    if analysis.sample_size_reached:
        return f"Sample size reached: the smallest arm has {smallest:,} users, at least the {need:,} {basis}."
    return f"Sample size not reached: the smallest arm has {smallest:,} of the {need:,} users {basis}."



class Results(RegistryBase):
    async def record_result(self, ref: str | int, user_id: str, metric: str, value: float, *,
                            event_id: str | None = None, metadata: Mapping[str, Any] | None = None,
                            recorded_at: datetime | None = None) -> ResultRecorded:
        """Record one metric value for an assigned user; attributed to the user's recorded variant.

        The value also becomes a `metric` event for the event store (where every analysis reads), through
        the event outbox row written in the same statement; its event id is `event_id` when given (1-128
        characters), so a repeat, or the same event sent over Kafka with that id, counts once.
        """
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidInput(f"value must be a finite number, got {value!r}")
        if abs(value) > MAX_RESULT_VALUE:
            # Sums of squares over many users must stay finite in double precision.
            raise InvalidInput(f"value must be within ±{MAX_RESULT_VALUE:g}, got {value!r}")
        if not user_id or len(user_id) > 256:
            raise InvalidInput("user_id must be 1-256 characters")
        row = await self.store.fetch_for_assignment(ref, user_id)
        if row is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        key = row["key"]
        if row["status"] == "draft":
            raise Conflict(f"experiment {key!r} is a draft: start it before recording results")
        if row["status"] == "archived":
            raise Conflict(f"experiment {key!r} is archived: results are no longer accepted")
        declared = [row["primary_metric"], *(m["name"] for m in row["secondary_metrics"]),
                    *(m["name"] for m in row["guardrail_metrics"])]
        if metric not in declared:
            raise InvalidInput(
                f"metric {metric!r} is not declared on {key!r} (declared: {', '.join(dict.fromkeys(declared))}); "
                "declare it first: add it to secondary_metrics with the MCP tool update_experiment (REST has no update route: call the tool through /mcp with the same token, or `neonblue chat`), or record a declared metric"
            )
        if row["assigned_variant_id"] is None:
            raise Conflict(f"user {user_id!r} has no assignment in {key!r}: call get_variant for them first")
        variant = {v["id"]: v for v in row["variants"]}[row["assigned_variant_id"]]
        inserted = await self.store.insert_result(row["id"], variant["id"], user_id, metric, float(value), event_id,
                                                  dict(metadata or {}), recorded_at, key, variant["key"])
        if inserted is None:  # event_id seen before: at-least-once delivery, keep the first
            existing = await self.store.result_by_event(row["id"], event_id or "")
            if existing is None:  # pragma: no cover - only a concurrent delete could cause this
                raise Conflict(f"result with event_id {event_id!r} could not be recorded")
            return ResultRecorded(id=existing["id"], experiment_key=key, user_id=existing["user_id"],
                                  variant_key=existing["variant_key"], metric=existing["metric_name"],
                                  value=existing["metric_value"], recorded_at=existing["recorded_at"], duplicate=True)
        return ResultRecorded(id=inserted["id"], experiment_key=key, user_id=user_id, variant_key=variant["key"],
                              metric=metric, value=float(value), recorded_at=inserted["recorded_at"], duplicate=False)

    async def analyze_experiment_data(self, ref: str | int, metrics: Sequence[str] | None = None,
                                      aggregation: Literal["mean", "sum"] = "mean") -> ExperimentAnalysis:
        """Per-variant assignment counts and per-metric sufficient statistics from PostgreSQL."""
        if aggregation not in ("mean", "sum"):
            raise InvalidInput(f"aggregation must be 'mean' or 'sum', got {aggregation!r}")
        experiment = await self._experiment(ref)
        declared = list(dict.fromkeys([experiment.primary_metric.name, *(m.name for m in experiment.secondary_metrics),
                                       *(m.name for m in experiment.guardrail_metrics)]))
        chosen = list(dict.fromkeys(metrics)) if metrics else declared
        unknown = [m for m in chosen if m not in declared]
        if unknown:
            raise InvalidInput(f"metrics not declared on {experiment.key!r}: {', '.join(unknown)} (declared: {', '.join(declared)})")
        primary = experiment.primary_metric.name
        totals = {r["variant_id"]: r for r in await self.store.assignment_totals(experiment.id)}
        aggregates = await self.store.metric_aggregates(experiment.id, list(dict.fromkeys([*chosen, primary])),
                                                        aggregation)
        stats: dict[tuple[int, str], Any] = {(r["variant_id"], r["metric_name"]): r for r in aggregates}
        total_assigned = sum(r["users"] for r in totals.values())
        forced = sum(r["forced"] for r in totals.values())
        control = next((v for v in experiment.variants if v.is_control), None)

        def metric_stats(variant_id: int, metric: str, assigned: int) -> MetricStats:
            r = stats.get((variant_id, metric))
            n = r["users"] if r else 0
            s = float(r["s"]) if r else 0.0
            ss = float(r["ss"]) if r else 0.0
            mean = s / n if n else None
            std = math.sqrt(max(ss - s * s / n, 0.0) / (n - 1)) if n > 1 else None
            return MetricStats(metric=metric, users=n, records=r["records"] if r else 0, sum=s, sum_squares=ss,
                               mean=mean, std=std, conversion_rate=(r["positive"] if r else 0) / assigned if assigned else None,
                               relative_lift_vs_control=None)

        variants = []
        for v in experiment.variants:
            assigned = totals[v.id]["users"] if v.id in totals else 0
            variants.append(VariantStats(
                variant_key=v.key, name=v.name, is_control=v.is_control, weight=v.weight, assigned_users=assigned,
                observed_share=assigned / total_assigned if total_assigned else None,
                metrics={m: metric_stats(v.id, m, assigned) for m in chosen},
            ))
        control_stats = next((vs for vs in variants if control and vs.variant_key == control.key), None)
        if control_stats is not None:
            for vs in variants:
                if vs is control_stats:
                    continue
                for m, ms in vs.metrics.items():
                    base = control_stats.metrics[m].mean
                    if ms.mean is not None and base not in (None, 0):
                        ms.relative_lift_vs_control = (ms.mean - base) / abs(base)
        notes = []
        if experiment.status == "draft":
            notes.append("experiment is a draft: no data yet")
        smallest = min((vs.assigned_users for vs in variants), default=0)
        control_assigned = control_stats.assigned_users if control_stats else 0
        plan = sample_plan(experiment.min_sample_size, primary, control_assigned,
                           stats.get((control.id, primary)) if control else None)
        reached = plan.per_arm is not None and bool(variants) and smallest >= plan.per_arm
        if plan.per_arm is None:
            notes.append(f"no sample size to judge by: {plan.basis}")
        elif not reached:
            notes.append(f"sample size not reached: smallest variant has {smallest} of {plan.per_arm} users {plan.basis}")
        if forced:
            notes.append(f"{forced} QA-forced users are excluded")
        notes.append("descriptive statistics only; use the intelligence server for significance and decisions")
        return ExperimentAnalysis(
            experiment_key=experiment.key, status=experiment.status, primary_metric=experiment.primary_metric,
            metrics=chosen, aggregation=aggregation, total_assigned=total_assigned, forced_excluded=forced,
            min_sample_size=experiment.min_sample_size, sample_size_per_arm=plan.per_arm,
            sample_size_basis=plan.basis, sample_size_reached=reached, variants=variants, notes=notes,
        )

    async def get_experiment_summary(self, ref: str | int) -> ExperimentSummary:
        """A human-readable report of the experiment and its data so far; every sentence is computed.

        Values are per assigned user (users without a result count as 0), as in the analysis.
        """
        experiment = await self._experiment(ref)
        analysis = await self.analyze_experiment_data(experiment.id)
        primary = experiment.primary_metric
        better = "higher" if primary.direction == "higher" else "lower"
        lines = [
            f"# {experiment.name} (`{experiment.key}`)",
            f"Status: **{experiment.status}** · type: {experiment.type}"
            + (f" · owner: {experiment.owner}" if experiment.owner else ""),
        ]
        if experiment.hypothesis:
            lines.append(f"Hypothesis: {experiment.hypothesis}")
        lines.append(f"Primary metric: `{primary.name}` ({better} is better) · min sample size "
                     f"{experiment.min_sample_size} per variant")
        lines += ["", f"| variant | weight | users | users with data | {primary.name} per user | lift vs control |",
                  "|---|---|---|---|---|---|"]
        values = {vs.variant_key: (vs.metrics[primary.name].sum / vs.assigned_users if vs.assigned_users else None)
                  for vs in analysis.variants}
        control = next((vs.variant_key for vs in analysis.variants if vs.is_control), None)
        base = values.get(control) if control else None
        for vs in analysis.variants:
            value = values[vs.variant_key]
            if vs.is_control:
                lift = "(control)"
            elif value is not None and base:
                lift = f"{(value - base) / abs(base):+.1%}"
            else:
                lift = "–"
            label = f"{vs.variant_key} (control)" if vs.is_control and vs.variant_key != "control" else vs.variant_key
            lines.append(f"| {label} | {vs.weight:.0%} | "
                         f"{vs.assigned_users} | {vs.metrics[primary.name].users} | "
                         f"{'–' if value is None else f'{value:.4g}'} | {lift} |")
        lines.append("")
        leader = None
        measured = {k: v for k, v in values.items() if v is not None}
        has_data = any(vs.metrics[primary.name].users for vs in analysis.variants)
        if experiment.winner:
            lines.append(f"Declared winner: **{experiment.winner}**.")
        if not has_data:
            lines.append(f"No `{primary.name}` results recorded yet.")
        elif not experiment.winner:
            sign = 1.0 if primary.direction == "higher" else -1.0
            top = max(sign * v for v in measured.values())
            leaders = [k for k, v in measured.items() if sign * v == top]
            figures = ", ".join(f"{k} {v:.4g}" for k, v in measured.items())
            if len(leaders) == 1:
                leader = leaders[0]
                lines.append(f"Leading so far on `{primary.name}`: {leader} ({figures} per assigned user); "
                             "descriptive only, not a significance test (analyze_experiment_performance tests it).")
            else:
                lines.append(f"No leader on `{primary.name}` so far: {', '.join(leaders)} are level ({figures} "
                             "per assigned user).")
        lines.append(sample_size_sentence(analysis))
        if analysis.forced_excluded:
            lines.append(f"{analysis.forced_excluded} QA-forced users are excluded from the figures.")
        return ExperimentSummary(experiment_key=experiment.key, status=experiment.status, summary="\n".join(lines),
                                 leader=leader, sample_size_reached=analysis.sample_size_reached)
