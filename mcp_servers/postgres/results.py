"""Metric results in the registry: record_result (attributed to the user's recorded variant, once per
event_id), and the descriptive per-variant statistics and summary built on them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from schemas.errors import Conflict, InvalidInput, NotFound

from .base import RegistryBase
from .models import ExperimentAnalysis, ExperimentSummary, MetricStats, ResultRecorded, VariantStats

MAX_RESULT_VALUE = 1e15  # far beyond any metric (revenue, latency, tokens); keeps Σx² finite



class Results(RegistryBase):
    async def record_result(self, ref: str | int, user_id: str, metric: str, value: float, *,
                            event_id: str | None = None, metadata: Mapping[str, Any] | None = None,
                            recorded_at: datetime | None = None) -> ResultRecorded:
        """Record one metric value for an assigned user; attributed to the user's recorded variant."""
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
                "add it to secondary_metrics with update_experiment first"
            )
        if row["assigned_variant_id"] is None:
            raise Conflict(f"user {user_id!r} has no assignment in {key!r}: call get_variant for them first")
        variant = {v["id"]: v for v in row["variants"]}[row["assigned_variant_id"]]
        inserted = await self.store.insert_result(row["id"], variant["id"], user_id, metric, float(value), event_id,
                                                  dict(metadata or {}), recorded_at)
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
        totals = {r["variant_id"]: r for r in await self.store.assignment_totals(experiment.id)}
        aggregates = await self.store.metric_aggregates(experiment.id, chosen, aggregation)
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
        reached = bool(variants) and smallest >= experiment.min_sample_size
        if not reached and variants:
            notes.append(f"sample size not reached: smallest variant has {smallest} of {experiment.min_sample_size} users")
        if forced:
            notes.append(f"{forced} QA-forced users are excluded")
        notes.append("descriptive statistics only; use the intelligence server for significance and decisions")
        return ExperimentAnalysis(
            experiment_key=experiment.key, status=experiment.status, primary_metric=experiment.primary_metric,
            metrics=chosen, aggregation=aggregation, total_assigned=total_assigned, forced_excluded=forced,
            min_sample_size=experiment.min_sample_size, sample_size_reached=reached, variants=variants, notes=notes,
        )

    async def get_experiment_summary(self, ref: str | int) -> ExperimentSummary:
        """A human-readable report of the experiment and its data so far."""
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
        lines.append(f"Primary metric: `{primary.name}` ({better} is better) · min sample size {experiment.min_sample_size} per variant")
        lines += ["", f"| variant | weight | users | {primary.name} mean | users with data | lift vs control |",
                  "|---|---|---|---|---|---|"]
        leader = None
        best = None
        for vs in analysis.variants:
            ms = vs.metrics[primary.name]
            mean = f"{ms.mean:.4g}" if ms.mean is not None else "–"
            lift = f"{ms.relative_lift_vs_control:+.1%}" if ms.relative_lift_vs_control is not None else ("(control)" if vs.is_control else "–")
            lines.append(f"| {vs.variant_key}{' (control)' if vs.is_control else ''} | {vs.weight:.0%} | {vs.assigned_users} | {mean} | {ms.users} | {lift} |")
            if ms.mean is not None:
                score = ms.mean if primary.direction == "higher" else -ms.mean
                if best is None or score > best:
                    best, leader = score, vs.variant_key
        lines.append("")
        if experiment.winner:
            lines.append(f"Declared winner: **{experiment.winner}**.")
        elif leader is not None:
            lines.append(f"Leading so far on `{primary.name}`: {leader} (descriptive only, not a significance test).")
        else:
            lines.append(f"No `{primary.name}` results recorded yet.")
        lines.append("Sample size reached." if analysis.sample_size_reached else
                     f"Sample size not reached yet ({experiment.min_sample_size} users per variant needed).")
        if analysis.forced_excluded:
            lines.append(f"{analysis.forced_excluded} QA-forced users are excluded from the figures.")
        return ExperimentSummary(experiment_key=experiment.key, status=experiment.status, summary="\n".join(lines),
                                 leader=leader, sample_size_reached=analysis.sample_size_reached)
