"""recommend_experiment_optimization: ranked actions grounded in the analysis and in similar successful
patterns from memory; each action is audited."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from schemas.errors import ServiceError
from schemas.servers import CHROMADB

from . import analysis as calc
from . import priors
from .base import ACTOR, rounded
from .models import AnalysisOptions, OptimizationRecommendations, RecommendedAction
from .narrative import WHY_THE_DECISION_WAITS, days, excludes_zero, pct_interval, prob, statistic_kind
from .readout import Analysed, analysis_options, experiment_text, normalised_weights
from .traffic import TrafficAllocator

log = logging.getLogger(__name__)

# Ranking of recommended actions: the most urgent first.
ACTION_PRIORITY = {
    "investigate_srm": 0, "roll_back": 1, "remove_arm": 2, "ship": 3, "stop_for_futility": 4,
    "review_results": 5, "extend_duration": 6, "rebalance_traffic": 7, "keep_running": 8,
}


class Recommendations(TrafficAllocator):
    async def recommend_experiment_optimization(self, experiment_id: str,
                                                options: AnalysisOptions | Mapping[str, Any] | None = None
                                                ) -> OptimizationRecommendations:
        """Ranked actions grounded in the analysis and similar successful patterns; each one audited."""
        opts = analysis_options(options).model_copy(update={"record_decision": False})
        a = await self._analyze(experiment_id, opts)
        r = a.result
        patterns = await self._patterns(a.experiment)
        actions: list[RecommendedAction] = []

        def add(action: str, variant: str | None, title: str, reasoning: str, evidence: dict[str, Any],
                confidence: float, grounded: bool = True) -> None:
            actions.append(RecommendedAction(
                rank=0, action=action, variant=variant, title=title, reasoning=reasoning, evidence=rounded(evidence),
                confidence=max(0.0, min(1.0, confidence)),
                supporting_patterns=patterns[:3] if grounded else []))

        if r.srm.flagged:
            driver = await self._srm_driver(a)
            where = (f"The segment that drives it most is {driver['dimension']}={driver['segment']} "
                     f"(users {driver['counts']}, χ² p = {driver['p_value']:.2g})." if driver
                     else "No single segment explains it.")
            add("investigate_srm", None, "Investigate the sample ratio mismatch before reading any metric",
                f"Observed users {dict(zip(a.weights, r.srm.observed, strict=True))} vs expected "
                f"{ {k: round(e) for k, e in zip(a.weights, r.srm.expected, strict=True)} } (p = {r.srm.p_value:.2g}). "
                + where + " Check assignment, redirects, bot filtering and exposure logging for that segment.",
                {"srm_p": r.srm.p_value, "observed": r.srm.observed, "expected": r.srm.expected,
                 "driving_segment": driver}, 1.0 - r.srm.p_value, grounded=False)
        else:
            for o, arm in zip(a.per_arm, [p for p in a.primary_pairs()], strict=False):
                evidence = {"rule_id": o.rule_id, "relative_lift": arm.decision.effect,
                            "interval": list(calc.interval(arm.decision.ci)), "p_value": arm.p_adjusted,
                            "chance_to_win": arm.bayes.chance_to_win, "power": arm.power, "days_left": arm.days_left,
                            "conditional_power": arm.conditional_power,
                            "users": {a.control: arm.control_n, arm.variant: arm.n}}
                fixed_ci = calc.interval(arm.fixed.ci)
                waits = ""  # the fixed interval says "an effect" while the always-valid decision does not yet
                if opts.sequential and not arm.significant and excludes_zero(fixed_ci) \
                        and not excludes_zero(evidence["interval"]):
                    evidence["fixed_horizon_interval"] = list(fixed_ci)
                    waits = (f" Its fixed-horizon interval ({pct_interval(fixed_ci)}) excludes 0 and its always-valid "
                             f"one ({pct_interval(evidence['interval'])}) does not: {WHY_THE_DECISION_WAITS}.")
                if o.verdict == "ship":
                    add("ship", o.variant, f"Ship {o.variant}", o.rule, evidence, o.confidence)
                elif o.verdict == "roll_back":
                    kind = "roll_back" if len(a.treatments) == 1 or r.verdict.verdict == "roll_back" else "remove_arm"
                    guards = [m.model_dump(include={"metric", "relative_lift", "guardrail"}) for m in r.metrics
                              if m.variant == o.variant and m.guardrail and m.guardrail.status == "fail"]
                    add(kind, o.variant, f"Roll back {o.variant}" if kind == "roll_back" else f"Remove {o.variant}",
                        o.rule, {**evidence, "failing_guardrails": guards}, o.confidence, grounded=False)
                elif o.rule_id == "futility":
                    add("stop_for_futility", o.variant, f"Stop {o.variant} for futility", o.rule + waits, evidence,
                        o.confidence)
                elif o.rule_id == "no_effect":
                    add("review_results", o.variant, f"Conclude {o.variant}: no effect of the planned size",
                        o.rule + waits, evidence, o.confidence)
                elif o.days_left is not None and o.days_left > 0:
                    needed = math.ceil(o.days_left * r.units_per_day)
                    add("extend_duration", o.variant,
                        f"Keep running {days(o.days_left)} to reach {opts.target_power:.0%} "
                        f"{statistic_kind(opts.sequential)} power for a {opts.mde:.0%} relative effect (the MDE)",
                        f"{o.rule} That is about {needed:,} more users at {r.units_per_day:.0f}/day.{waits}",
                        {**evidence, "additional_users": needed}, o.confidence)
            if r.verdict.verdict == "keep_running" and a.primary_pairs():
                bandit = self._bandit(a)
                if bandit.updated and bandit.best_arm_probabilities:
                    proposal = normalised_weights(dict(zip(a.weights, bandit.weights, strict=True)))
                    move = max(abs(proposal[k] - a.weights[k]) for k in proposal)
                    if move >= self.policy.min_weight_change:
                        best = max(zip(a.weights, bandit.best_arm_probabilities, strict=True), key=lambda kv: kv[1])
                        add("rebalance_traffic", best[0], "Rebalance traffic by Thompson sampling",
                            f"{best[0]} is the best arm with probability {prob(best[1])}; Thompson sampling with a "
                            f"{self.policy.exploration_rate:.0%} exploration floor proposes {proposal} "
                            f"(now {a.weights}), moving up to {move:.0%} of traffic.",
                            {"proposed_weights": proposal, "current_weights": a.weights,
                             "best_arm_probabilities": dict(zip(a.weights, bandit.best_arm_probabilities, strict=True))},
                            best[1])
        actions.sort(key=lambda x: (ACTION_PRIORITY[x.action], -x.confidence))
        for i, action in enumerate(actions, start=1):
            action.rank = i
            action.decision_id = await self._record(
                a.key, f"recommend_{action.action}", f"{action.title}. {action.reasoning}",
                {"variant": action.variant, "evidence": action.evidence, "verdict": r.verdict.verdict,
                 "rule_id": r.verdict.rule_id, "patterns": [p.get("id") for p in action.supporting_patterns]},
                action.confidence, ACTOR, False)
        narrative = [f"Verdict: {r.verdict.verdict} ({r.verdict.rule_id}). {r.verdict.rule}"]
        narrative += [f"{x.rank}. {x.title}: {x.reasoning}" for x in actions]
        if patterns:
            narrative.append("Similar successful patterns: " + "; ".join(
                f"{p['optimization_type']}: {p['summary']}" for p in patterns[:3]) + ".")
        return OptimizationRecommendations(experiment_key=a.key, verdict=r.verdict, actions=actions,
                                           patterns_considered=len(patterns), narrative=narrative)

    async def _patterns(self, experiment: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not self.peers.has(CHROMADB):
            return []
        try:
            hits = (await self.peers.chroma("search_optimization_patterns", query=experiment_text(experiment),
                                            where={"outcome": "success"}, limit=5))["hits"]
        except ServiceError:
            return []
        out = []
        for hit in hits:
            if hit["similarity"] < priors.SIMILARITY_FLOOR - 0.1:
                continue
            meta = hit.get("metadata") or {}
            out.append({"id": hit["id"], "similarity": hit["similarity"],
                        "optimization_type": meta.get("optimization_type"),
                        "improvement": meta.get("improvement"),
                        "metric": meta.get("metric"), "summary": hit["document"][:300]})
        return out

    async def _srm_driver(self, a: Analysed) -> dict[str, Any] | None:
        """The segment whose own split departs most from the weights (from the ClickHouse insights' segment cells)."""
        try:
            insights = await self.peers.clickhouse(
                "generate_analytics_insights", experiment=a.key, metrics=[a.specs[0].name],
                control_variant=a.control, expected_weights=a.weights, min_segment_users=2, limit=100)
        except ServiceError as exc:
            log.warning("segment breakdown for SRM failed: %s", exc)
            return None
        ranked = calc.segment_srm(insights.get("segment_differences", []), a.control, a.weights)
        return rounded(ranked[0]) if ranked and ranked[0]["p_value"] < 0.05 else None
