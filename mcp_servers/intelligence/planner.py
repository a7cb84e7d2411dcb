"""plan_experiment: sample size, duration, variants, metrics and guardrails for a stated goal, and a draft
the registry accepts as it is (the templates and sizing are `planning`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.errors import InvalidInput, ServiceError
from schemas.servers import CHROMADB

from . import planning, priors
from .base import IntelligenceBase
from .models import Baseline, DurationOption, ExperimentPlan, PlanMetric, PlanVariant, SimilarExperiment
from .readout import normalised_weights


class ExperimentPlanner(IntelligenceBase):
    async def plan_experiment(self, goal: str, baseline: Baseline | Mapping[str, Any], mde: float, traffic: float, *,
                              variants: int = 2, primary_metric: str | None = None, alpha: float = 0.05,
                              target_power: float = 0.8) -> ExperimentPlan:
        """Sample size, duration, variants, metrics and guardrails for a stated goal."""
        base = baseline if isinstance(baseline, Baseline) else Baseline.model_validate(baseline)
        if not goal.strip():
            raise InvalidInput("state the goal, e.g. 'raise mobile checkout conversion with a one-step checkout'")
        if error := planning.input_error(mde, traffic):
            raise InvalidInput(error)
        variance = None if base.sd is None else base.sd ** 2
        if variance is None and not 0 < base.mean < 1:
            raise InvalidInput("a baseline without sd is a rate and must lie strictly between 0 and 1; "
                               "for a mean metric give its sd")
        template = planning.choose_template(goal)
        named = primary_metric or planning.metric_named_in(goal)
        primary = PlanMetric(name=named or template.primary.name, direction=template.primary.direction,
                             role="primary", why=template.primary.why if not named else "named in the goal")
        secondary = [PlanMetric(name=m.name, direction=m.direction, role="secondary", why=m.why)
                     for m in template.secondary if m.name != primary.name]
        guards = [PlanMetric(name=m.name, direction=m.direction, role="guardrail", non_inferiority_margin=m.margin,
                             why=m.why) for m in template.guardrails if m.name != primary.name]
        sizing = planning.size(mde, base.mean, variance, power=target_power, alpha=alpha, arms=variants)
        if sizing.error:
            raise InvalidInput(f"cannot size this plan: {sizing.error}")
        total = sizing.n_per_variant * variants
        duration = planning.whole_days(total, traffic)
        if duration > planning.MAX_PLAN_DAYS:
            raise InvalidInput(planning.too_long(total, traffic, base.mean, variance, power=target_power, alpha=alpha,
                                                 arms=variants))
        seq_days = planning.whole_days(sizing.n_per_variant_sequential * variants, traffic)
        duration_seq = seq_days if seq_days <= planning.MAX_PLAN_DAYS else None  # the fixed size is the plan
        options = [DurationOption(days=d, n_per_variant=int(d * traffic / variants),
                                  mde=planning.mde_after(d, traffic, base.mean, variance, power=target_power,
                                                         alpha=alpha, arms=variants))
                   for d in (7, 14, 21, 28, 42)]
        plan_variants = [PlanVariant(key="control", is_control=True, weight=round(1 / variants, 4),
                                     description="the current experience")]
        plan_variants += [PlanVariant(key="treatment" if variants == 2 else f"treatment_{i}", is_control=False,
                                      weight=round(1 / variants, 4), description=f"the change that should achieve: {goal}")
                          for i in range(1, variants)]
        weights = normalised_weights({v.key: v.weight for v in plan_variants})
        for v in plan_variants:
            v.weight = weights[v.key]
        similar: list[SimilarExperiment] = []
        notes = [f"Sized for a two-sided test at α = {alpha} per comparison"
                 + (f" (Bonferroni over {variants - 1} treatment arms)" if variants > 2 else "")
                 + f", {target_power:.0%} power, equal split.",
                 "Run whole weeks (at least 7 days) so weekday and weekend users are both represented.",
                 f"If results will be checked while running, plan for the always-valid size "
                 f"({sizing.n_per_variant_sequential} per variant, "
                 + (f"{duration_seq} days)." if duration_seq else "more than ten years at this traffic: infeasible).")]
        if self.peers.has(CHROMADB):
            try:
                hits = (await self.peers.chroma("semantic_experiment_search", query=goal, limit=5))["hits"]
                similar = [SimilarExperiment(experiment_key=(h.get("metadata") or {}).get("experiment_key") or h["id"],
                                             similarity=h["similarity"], name=(h.get("metadata") or {}).get("name"),
                                             outcome=(h.get("metadata") or {}).get("outcome"),
                                             lift=(h.get("metadata") or {}).get("lift"),
                                             p_value=(h.get("metadata") or {}).get("p_value"))
                           for h in hits if h["similarity"] >= priors.SIMILARITY_FLOOR]
            except ServiceError as exc:
                notes.append(f"Similar experiments unavailable: {exc}")
        draft = {
            "key": planning.slugify(goal), "name": goal[:200], "type": template.experiment_type,
            "hypothesis": goal[:10_000],
            "primary_metric": {"name": primary.name, "direction": primary.direction},
            "secondary_metrics": [{"name": m.name, "direction": m.direction} for m in secondary],
            "guardrail_metrics": [{"name": m.name, "direction": m.direction,
                                   "non_inferiority_margin": m.non_inferiority_margin} for m in guards],
            "variants": [{"key": v.key, "is_control": v.is_control, "weight": v.weight} for v in plan_variants],
            "min_sample_size": sizing.n_per_variant,
        }
        narrative = [
            f"To detect a {mde:.1%} relative change of {primary.name} from a baseline of {base.mean:g}"
            + (f" (sd {base.sd:g})" if base.sd else "") + f" with {target_power:.0%} power: "
            f"{sizing.n_per_variant} users per variant, {total} in total, {duration} days at {traffic:.0f} users/day.",
            "Guardrails: " + ", ".join(f"{m.name} (margin {m.non_inferiority_margin:.0%})" for m in guards) + ".",
        ]
        return ExperimentPlan(
            goal=goal, experiment_type=template.experiment_type, primary_metric=primary, secondary_metrics=secondary,
            guardrail_metrics=guards, variants=plan_variants, baseline=base, mde=mde, alpha=alpha,
            target_power=target_power, n_comparisons=max(variants - 1, 1), sample_size_per_variant=sizing.n_per_variant,
            total_sample_size=total, sample_size_per_variant_sequential=sizing.n_per_variant_sequential,
            traffic_per_day=traffic, duration_days=duration, duration_days_sequential=duration_seq,
            duration_options=options, similar_experiments=similar, create_experiment_draft=draft, notes=notes,
            narrative=narrative)
