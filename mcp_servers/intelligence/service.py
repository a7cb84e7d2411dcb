"""Experiment Intelligence: analysis, decisions, predictions, planning, bandits, autopilot, charts.

Plain async methods, no MCP types. Data comes from the other servers through
their MCP tools (`peers.Peers`): the registry (postgres: get_experiment,
set_variant_weights, stop_experiment, record_decision, list_decisions), the
event store (clickhouse: get_variant_statistics, generate_analytics_insights,
predict_experiment_trends, get_exposures_by_period) and memory (chromadb:
semantic_experiment_search, search_optimization_patterns,
find_similar_user_journeys). Every number is computed by the statistics engine
(`stats`) from sufficient statistics; every sentence is a template over those
numbers (`narrative`, `decisions`). Every verdict, recommendation and automated
action is written to the registry's decisions table with its inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import statistics as pystats
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from mcp_servers import stats
from mcp_servers.stats._numeric import norm_cdf
from schemas.errors import InvalidInput, NotFound, ServiceError
from schemas.settings import Settings

from . import analysis as calc
from . import behavior, charts, planning, priors
from .decisions import (
    DEFAULT_MIN_UNITS,
    POLICIES,
    ArmEvidence,
    AutopilotChoice,
    AutopilotFacts,
    AutopilotPolicy,
    GuardrailEvidence,
    MetricHarm,
    Outcome,
    VerdictInputs,
    decide_autopilot,
    decide_verdict,
    policy_breaches,
)
from .models import (
    AnalysisOptions,
    AutopilotDecision,
    Baseline,
    BehaviorEvaluation,
    BehaviorPrediction,
    CupedInfo,
    DurationOption,
    ExperimentAnalysis,
    ExperimentConfig,
    ExperimentPlan,
    GuardrailCheck,
    GuardrailResult,
    LiftPrior,
    LiftSeries,
    MetricInput,
    MetricResult,
    Neighbour,
    OptimizationRecommendations,
    OutcomePrediction,
    OutcomeVote,
    PlanMetric,
    PlanVariant,
    PlotSummary,
    PolicyView,
    RecommendedAction,
    RuleOutcome,
    SimilarExperiment,
    SrmSummary,
    TrafficAllocation,
    VariantSummary,
)
from .narrative import analysis_narrative, days, pct, prob
from .peers import CHROMA, Peers, ToolBackend

log = logging.getLogger(__name__)

ACTOR = "intelligence"
AUTOPILOT_ACTOR = "autopilot"
MAX_PLOT_DAYS = 60
SIMILAR_CACHE_SECONDS = 300.0
JOURNEY_CANDIDATES = 100  # nearest journeys retrieved before voting (the Chroma server's maximum)
BANDIT_MIN_UNITS = 100
# Ranking of recommended actions: the most urgent first.
ACTION_PRIORITY = {
    "investigate_srm": 0, "roll_back": 1, "remove_arm": 2, "ship": 3, "stop_for_futility": 4,
    "review_results": 5, "extend_duration": 6, "rebalance_traffic": 7, "keep_running": 8,
}


def _ts(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _round(x: Any, digits: int = 6) -> Any:
    if isinstance(x, float):
        return round(x, digits) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_round(v, digits) for v in x]
    return x


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _normalised(weights: Mapping[str, float], digits: int = 4) -> dict[str, float]:
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


class IntelligenceService:
    """Experiment intelligence over the other servers' tools and the statistics engine."""

    def __init__(self, backends: Mapping[str, ToolBackend], settings: Settings | None = None, *,
                 policy: AutopilotPolicy | None = None) -> None:
        self.peers = Peers(backends)
        self.settings = settings or Settings()
        self.policy = policy or POLICIES[self.settings.environment]
        self.behavior_accuracy: dict[str, Any] | None = None  # last held-out evaluation in this process
        # Similar past experiments per search text: memory changes slowly and an agent re-analyses often.
        self._similar_cache: dict[tuple[str, int], tuple[float, list[SimilarExperiment]]] = {}

    # ================================================================ analysis

    async def analyze_experiment_performance(self, experiment_id: str,
                                             options: AnalysisOptions | Mapping[str, Any] | None = None
                                             ) -> ExperimentAnalysis:
        """Per metric and arm: lifts with intervals, fixed and sequential p, chance to win, CUPED, SRM,
        multiple testing, power, guardrails; a verdict with the rule that produced it; similar past experiments."""
        opts = _options(options)
        analysed = await self._analyze(experiment_id, opts)
        if opts.record_decision:
            analysed.result.decision_id = await self._record_verdict(analysed)
        return analysed.result

    async def _analyze(self, experiment_id: str, opts: AnalysisOptions) -> Analysed:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        experiment = await self.peers.postgres("get_experiment", experiment=str(experiment_id), include_change_log=True)
        timings["registry_ms"] = (time.perf_counter() - started) * 1000
        key = experiment["key"]
        specs = _metric_specs(experiment)
        variants = experiment["variants"]
        controls = [v["key"] for v in variants if v["is_control"]]
        if not controls:
            raise InvalidInput(f"experiment {key!r} has no control variant")
        control = controls[0]
        treatments = [v["key"] for v in variants if not v["is_control"]]
        weights = {v["key"]: float(v["weight"]) for v in variants}

        stats_args = {"experiment_id": key, "metrics": [s.name for s in specs], "cuped": opts.cuped,
                      "cuped_lookback_days": opts.cuped_lookback_days,
                      "start_date": opts.start_date.isoformat() if opts.start_date else None,
                      "end_date": opts.end_date.isoformat() if opts.end_date else None}
        found: dict[str, Any] = {}
        notes: list[str] = []

        async def load_stats() -> None:
            t0 = time.perf_counter()
            found["stats"] = await self.peers.clickhouse("get_variant_statistics", **stats_args)
            timings["statistics_ms"] = (time.perf_counter() - t0) * 1000

        async def load_similar() -> None:
            if opts.similar_experiments <= 0 or not self.peers.has(CHROMA):
                return
            t0 = time.perf_counter()
            try:
                found["similar"] = await self._similar_experiments(experiment, opts.similar_experiments)
            except ServiceError as exc:
                notes.append(f"Similar experiments unavailable: {exc}")
            timings["memory_ms"] = (time.perf_counter() - t0) * 1000

        async with anyio.create_task_group() as tg:
            tg.start_soon(load_stats)
            tg.start_soon(load_similar)
        computing = time.perf_counter()
        st = found["stats"]
        window_start, window_end = _ts(st["window_start"]), _ts(st["window_end"])
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

        expected, weights_changed = await self._expected_counts(experiment, order, observed, window_start,
                                                                window_end)
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
        if missing:
            notes.append("No exposed users yet for: " + ", ".join(missing) + ".")
        calc.adjust([p for p in pairs if p.role == "primary"], opts.multiple_testing, opts.alpha)
        calc.adjust([p for p in pairs if p.role == "secondary"], opts.multiple_testing, opts.alpha)
        calc.adjust([p for p in pairs if p.role == "guardrail"], "none", opts.alpha)

        min_units = max(int(experiment.get("min_sample_size") or 0), DEFAULT_MIN_UNITS)
        arms = []
        for p in pairs:
            if p.role != "primary":
                continue
            guards = tuple(
                GuardrailEvidence(g.metric, g.guardrail["status"], g.fixed.effect, g.guardrail["margin"],
                                  g.guardrail["bound"], g.guardrail["p_harm"], g.lower_is_better)
                for g in pairs if g.role == "guardrail" and g.variant == p.variant and g.guardrail)
            decision = p.decision
            arms.append(ArmEvidence(
                variant=p.variant, n=p.n, control_n=p.control_n, metric=p.metric, relative_lift=decision.effect,
                ci=calc.interval(decision.ci), p_value=p.p_adjusted if p.p_adjusted is not None else decision.p_value,
                better=p.better, chance_to_win=p.bayes.chance_to_win, power=p.power, days_left=p.days_left,
                guardrails=guards, error=p.error, conditional_power=p.conditional_power))
        for t in treatments:  # an arm with no data at all still has a verdict
            if not any(a.variant == t for a in arms):
                arms.append(ArmEvidence(t, users.get(t, 0), users.get(control, 0), primary.name, 0.0, (None, None),
                                        1.0, None, 0.5, None, None))
        vin = VerdictInputs(
            arms=tuple(arms), srm_p=srm.p_value, srm_flagged=srm.flagged, srm_error=None if total else "no exposures",
            min_units=min_units, units_per_day=units_per_day, days_observed=days_observed, arm_shares=shares,
            control=control, chance_threshold=opts.chance_to_win_threshold, alpha=opts.alpha,
            max_duration_days=opts.max_duration_days, mde=opts.mde, target_power=opts.target_power)
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
            experiment_id=key, name=experiment.get("name", key), status=experiment["status"],
            primary_metric=primary.name, window_start=window_start, window_end=window_end,
            days_observed=days_observed, units_per_day=units_per_day, variants=variant_summaries,
            srm=SrmSummary(p_value=srm.p_value, chi2=srm.chi2, flagged=srm.flagged, threshold=srm.threshold,
                           observed=list(srm.observed), expected=[float(e) for e in expected],
                           weights_changed=weights_changed, error=srm.error),
            metrics=[_metric_result(p) for p in pairs], multiple_testing=mt,
            verdict=_rule(verdict), variant_verdicts=[_rule(o) for o in per_arm],
            similar_experiments=found.get("similar", []), narrative=[], notes=notes, options=opts,
            decision_id=None, elapsed_ms=0.0)
        result.narrative = analysis_narrative(result)
        timings["compute_ms"] = (time.perf_counter() - computing) * 1000
        result.timings_ms = {k: round(v, 3) for k, v in timings.items()}
        result.elapsed_ms = (time.perf_counter() - started) * 1000
        return Analysed(experiment, result, pairs, rows, control, treatments, weights, n_star, specs, verdict, per_arm)

    async def _expected_counts(self, experiment: dict[str, Any], order: list[str], observed: list[int],
                               start: datetime, end: datetime) -> tuple[list[float], bool]:
        """Expected users per variant under the weights in effect over the window (weight changes split it)."""
        changes = sorted(
            ((_ts(c["created_at"]), c["changes"]["weights"]) for c in experiment.get("change_log", [])
             if c.get("change_type") == "weights_changed" and isinstance(c.get("changes", {}).get("weights"), dict)),
            key=lambda item: item[0])
        current = {v["key"]: float(v["weight"]) for v in experiment["variants"]}
        initial = dict(changes[0][1]["from"]) if changes else current
        history = [(when, w["to"]) for when, w in changes]
        inside = [when for when, _ in history if start < when < end]
        total = sum(observed)
        if not inside:
            w = calc.weights_at(start, initial, history)
            wsum = sum(w.get(v, 0.0) for v in order) or 1.0
            return [total * w.get(v, 0.0) / wsum for v in order], False
        bounds = [start, *inside, end]
        result = await self.peers.clickhouse("get_exposures_by_period", experiment_id=experiment["key"],
                                             boundaries=[b.isoformat() for b in bounds])
        per_period: list[dict[str, int]] = [p["users"] for p in result["periods"]]
        periods = [(per_period[i], calc.weights_at(bounds[i], initial, history)) for i in range(len(per_period))]
        return calc.expected_counts(periods, order), True

    async def _similar_experiments(self, experiment: Mapping[str, Any], n: int) -> list[SimilarExperiment]:
        text = _experiment_text(experiment)
        cached = self._similar_cache.get((text, n))
        if cached and time.monotonic() - cached[0] < SIMILAR_CACHE_SECONDS:
            return cached[1]
        hits = (await self.peers.chroma("semantic_experiment_search", query=text, n_results=min(n + 1, 100)))["hits"]
        out = []
        for hit in hits:
            meta = hit.get("metadata") or {}
            key = meta.get("experiment_key") or hit["id"]
            if key == experiment.get("key"):
                continue
            out.append(SimilarExperiment(experiment_key=key, similarity=hit["similarity"], name=meta.get("name"),
                                         outcome=meta.get("outcome"), lift=meta.get("lift"),
                                         p_value=meta.get("p_value"), winner=meta.get("winner")))
        if len(self._similar_cache) > 1000:
            self._similar_cache.clear()
        self._similar_cache[(text, n)] = (time.monotonic(), out[:n])
        return out[:n]

    # ================================================================ audit trail

    async def _record(self, key: str, action: str, reasoning: str, inputs: dict[str, Any], confidence: float | None,
                      actor: str, applied: bool, *, dedupe: bool = True) -> int | None:
        """Append to the decisions table; an unapplied decision identical to the latest of its kind is not repeated."""
        inputs = _round(inputs)
        digest = _digest({"action": action, "inputs": inputs})
        inputs = {**inputs, "digest": digest}
        if dedupe and not applied:
            page = await self.peers.postgres("list_decisions", experiment=key, action=action, actor=actor, limit=1)
            items = page.get("items") or []
            if items and items[0].get("inputs", {}).get("digest") == digest and not items[0].get("applied"):
                return int(items[0]["id"])
        decision = {"experiment": key, "action": action, "reasoning": reasoning[:20_000], "inputs": inputs,
                    "confidence": None if confidence is None else min(1.0, max(0.0, round(confidence, 6))),
                    "actor": actor, "applied": applied}
        recorded = await self.peers.postgres("record_decision", decision=decision)
        return int(recorded["id"])

    async def _record_verdict(self, a: Analysed) -> int | None:
        r = a.result
        inputs = {
            "verdict": r.verdict.verdict, "rule_id": r.verdict.rule_id, "variant": r.verdict.variant,
            "days_left": r.verdict.days_left, "srm_p": r.srm.p_value,
            "users": {v.key: v.users for v in r.variants},
            "window": [r.window_start.isoformat(), r.window_end.isoformat()],
            "metrics": [{"metric": m.metric, "role": m.role, "variant": m.variant, "relative_lift": m.relative_lift,
                         "ci": list(m.relative_ci_sequential), "p": m.p_value, "p_sequential": m.p_value_sequential,
                         "p_adjusted": m.p_value_adjusted, "chance_to_win": m.chance_to_win, "power": m.power,
                         "guardrail": m.guardrail.status if m.guardrail else None} for m in r.metrics],
            "options": r.options.model_dump(mode="json", exclude={"record_decision", "similar_experiments"}),
        }
        reasoning = " ".join(r.narrative[:1] + [f"Rule: {r.verdict.rule}"])
        return await self._record(a.key, f"verdict_{r.verdict.verdict}", reasoning, inputs, r.verdict.confidence,
                                  ACTOR, False)

    # ================================================================ recommendations

    async def recommend_experiment_optimization(self, experiment_id: str,
                                                options: AnalysisOptions | Mapping[str, Any] | None = None
                                                ) -> OptimizationRecommendations:
        """Ranked actions grounded in the analysis and similar successful patterns; each one audited."""
        opts = _options(options).model_copy(update={"record_decision": False})
        a = await self._analyze(experiment_id, opts)
        r = a.result
        patterns = await self._patterns(a.experiment)
        actions: list[RecommendedAction] = []

        def add(action: str, variant: str | None, title: str, reasoning: str, evidence: dict[str, Any],
                confidence: float, grounded: bool = True) -> None:
            actions.append(RecommendedAction(
                rank=0, action=action, variant=variant, title=title, reasoning=reasoning, evidence=_round(evidence),
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
                if o.verdict == "ship":
                    add("ship", o.variant, f"Ship {o.variant}", o.rule, evidence, o.confidence)
                elif o.verdict == "roll_back":
                    kind = "roll_back" if len(a.treatments) == 1 or r.verdict.verdict == "roll_back" else "remove_arm"
                    guards = [m.model_dump(include={"metric", "relative_lift", "guardrail"}) for m in r.metrics
                              if m.variant == o.variant and m.guardrail and m.guardrail.status == "fail"]
                    add(kind, o.variant, f"Roll back {o.variant}" if kind == "roll_back" else f"Remove {o.variant}",
                        o.rule, {**evidence, "failing_guardrails": guards}, o.confidence, grounded=False)
                elif o.rule_id == "futility":
                    add("stop_for_futility", o.variant, f"Stop {o.variant} for futility", o.rule, evidence,
                        o.confidence)
                elif o.rule_id == "no_effect":
                    add("review_results", o.variant, f"Conclude {o.variant}: no effect of the planned size",
                        o.rule, evidence, o.confidence)
                elif o.days_left is not None and o.days_left > 0:
                    needed = math.ceil(o.days_left * r.units_per_day)
                    add("extend_duration", o.variant,
                        f"Keep running {days(o.days_left)} to reach {opts.target_power:.0%} power for a {opts.mde:.0%} effect",
                        f"{o.rule} That is about {needed} more users at {r.units_per_day:.0f}/day.",
                        {**evidence, "additional_users": needed}, o.confidence)
            if r.verdict.verdict == "keep_running" and a.primary_pairs():
                bandit = self._bandit(a)
                if bandit.updated and bandit.best_arm_probabilities:
                    proposal = _normalised(dict(zip(a.weights, bandit.weights, strict=True)))
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
        return OptimizationRecommendations(experiment_id=a.key, verdict=r.verdict, actions=actions,
                                           patterns_considered=len(patterns), narrative=narrative)

    async def _patterns(self, experiment: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not self.peers.has(CHROMA):
            return []
        try:
            hits = (await self.peers.chroma("search_optimization_patterns", query=_experiment_text(experiment),
                                            where={"outcome": "success"}, n_results=5))["hits"]
        except ServiceError:
            return []
        out = []
        for hit in hits:
            if hit["similarity"] < priors.SIMILARITY_FLOOR - 0.1:
                continue
            meta = hit.get("metadata") or {}
            out.append({"id": hit["id"], "similarity": hit["similarity"],
                        "optimization_type": meta.get("optimization_type"),
                        "improvement_percentage": meta.get("improvement_percentage"),
                        "metric": meta.get("metric"), "summary": hit["document"][:300]})
        return out

    async def _srm_driver(self, a: Analysed) -> dict[str, Any] | None:
        """The segment whose own split departs most from the weights (from the ClickHouse insights' segment cells)."""
        try:
            insights = await self.peers.clickhouse(
                "generate_analytics_insights", experiment_id=a.key, metrics=[a.specs[0].name],
                control_variant=a.control, expected_weights=a.weights, min_segment_users=2, top_segments=100)
        except ServiceError as exc:
            log.warning("segment breakdown for SRM failed: %s", exc)
            return None
        ranked = calc.segment_srm(insights.get("segment_differences", []), a.control, a.weights)
        return _round(ranked[0]) if ranked and ranked[0]["p_value"] < 0.05 else None

    # ================================================================ bandits

    def _bandit(self, a: Analysed) -> stats.BanditResult:
        primary = a.specs[0]
        arms = list(a.weights)
        rows = [a.rows.get((v, primary.name)) for v in arms]
        total = sum(int(r["n"]) for r in rows if r)
        if any(r is None for r in rows):
            return stats.BanditResult(tuple(a.weights.values()), None, (), (), False,
                                      "not every arm has exposed users yet", 0)
        statistics = [calc.to_statistics(r, cuped=False)[1] for r in rows]  # type: ignore[arg-type]
        seed = int(hashlib.sha256(f"{a.key}:{total}".encode()).hexdigest()[:8], 16)
        return stats.thompson_weights(statistics, seed=seed, min_weight=self.policy.exploration_rate / len(arms),
                                      min_n=BANDIT_MIN_UNITS, lower_is_better=primary.direction == "lower",
                                      current_weights=list(a.weights.values()))

    async def allocate_traffic(self, experiment_id: str, apply: bool = True) -> TrafficAllocation:
        """Thompson-sampling weights on the primary metric; applied through the registry when the policy allows."""
        a = await self._analyze(experiment_id, AnalysisOptions(record_decision=False, similar_experiments=0))
        policy = self.policy
        bandit = self._bandit(a)
        proposal = _normalised(dict(zip(a.weights, bandit.weights, strict=True)))
        best = dict(zip(a.weights, bandit.best_arm_probabilities, strict=True)) if bandit.best_arm_probabilities else None
        move = max(abs(proposal[k] - a.weights[k]) for k in proposal)
        min_arm = min(v.users for v in a.result.variants)
        status = a.experiment["status"]
        reasons = []
        if not apply:
            reasons.append("apply=false (proposal only)")
        if not policy.allows("reallocate"):
            reasons.append(f"the {policy.environment} policy does not allow automatic reallocation")
        if status != "running":
            reasons.append(f"the experiment is {status}")
        if a.result.srm.flagged:
            reasons.append("sample ratio mismatch: traffic is not moved on untrustworthy data")
        if not bandit.updated:
            reasons.append(f"the posterior is not usable yet ({bandit.reason or bandit.error})")
        if a.result.days_observed < policy.min_days or min_arm < policy.min_units_per_variant:
            reasons.append(f"below the policy minimum ({a.result.days_observed:.1f}/{policy.min_days:g} days, "
                           f"{min_arm}/{policy.min_units_per_variant} users in the smallest arm)")
        if move < policy.min_weight_change:
            reasons.append(f"the largest change ({move:.1%}) is below {policy.min_weight_change:.0%}")
        applied = False
        if not reasons:
            await self.peers.postgres("set_variant_weights", experiment=a.key, weights=proposal,
                                      actor=AUTOPILOT_ACTOR,
                                      reason=f"Thompson sampling on {a.specs[0].name}: P(best) {best}")
            applied = True
            why = (f"Applied: Thompson sampling on {a.specs[0].name} moves up to {move:.0%} of traffic "
                   f"(floor {policy.exploration_rate / len(a.weights):.1%} per arm).")
        else:
            why = "Not applied: " + "; ".join(reasons) + "."
        decision_id = await self._record(
            a.key, "reallocate_weights" if applied else "recommend_reallocate_weights",
            f"{why} Current {a.weights}, proposed {proposal}, P(best) {best}.",
            {"current_weights": a.weights, "proposed_weights": proposal, "best_arm_probabilities": best,
             "seed": bandit.seed, "metric": a.specs[0].name, "users": {v.key: v.users for v in a.result.variants},
             "policy": policy.as_dict()},
            max(best.values()) if best else None, AUTOPILOT_ACTOR if applied else ACTOR, applied)
        return TrafficAllocation(
            experiment_id=a.key, metric=a.specs[0].name, current_weights=a.weights, proposed_weights=proposal,
            best_arm_probabilities=best, updated=bandit.updated, reason=bandit.reason or bandit.error,
            seed=bandit.seed, min_weight=policy.exploration_rate / len(a.weights), applied=applied, why=why,
            policy=_policy_view(policy), decision_id=decision_id)

    # ================================================================ guardrails and autopilot

    def _facts(self, a: Analysed) -> tuple[AutopilotFacts, list[GuardrailCheck]]:
        policy = self.policy
        harms = tuple(MetricHarm(p.metric, p.role, p.variant, p.degradation, p.p_harm)
                      for p in a.pairs if p.role in ("primary", "guardrail") and not p.error)
        breaching = {(h.metric, h.variant) for h in policy_breaches(harms, policy, a.result.options.alpha)}
        checks = [GuardrailCheck(
            metric=p.metric, role=p.role, variant=p.variant, direction=p.direction, relative_lift=p.fixed.effect,
            degradation=p.degradation, margin=p.guardrail["margin"] if p.guardrail else None,
            status=(p.guardrail["status"] if p.guardrail else ("fail" if p.better is False else "pass"
                                                               if p.better else "inconclusive")),
            p_harm=p.p_harm, breaches_policy=(p.metric, p.variant) in breaching)
            for p in a.pairs if p.role in ("primary", "guardrail") and not p.error]
        bandit = self._bandit(a) if a.verdict.verdict == "keep_running" else None
        proposal = (_normalised(dict(zip(a.weights, bandit.weights, strict=True)))
                    if bandit is not None and bandit.updated else None)
        facts = AutopilotFacts(
            status=a.experiment["status"], verdict=a.verdict, days_observed=a.result.days_observed,
            min_arm_units=min(v.users for v in a.result.variants), harms=harms, n_arms=len(a.weights),
            control=a.control, alpha=a.result.options.alpha, bandit_weights=proposal, current_weights=a.weights,
            bandit_best_probability=max(bandit.best_arm_probabilities) if proposal and bandit and bandit.best_arm_probabilities else None)
        return facts, checks

    async def evaluate_guardrails(self, experiment_id: str,
                                  options: AnalysisOptions | Mapping[str, Any] | None = None) -> AutopilotDecision:
        """Guardrail and primary-metric harm checks against the environment policy, and the action the
        autopilot would take (recorded as a recommendation; nothing is changed)."""
        return await self._autopilot(experiment_id, options, act=False)

    async def run_autopilot(self, experiment_id: str, dry_run: bool = False,
                            options: AnalysisOptions | Mapping[str, Any] | None = None) -> AutopilotDecision:
        """Decide under the environment policy and, when allowed (and not dry_run), act through the registry."""
        return await self._autopilot(experiment_id, options, act=not dry_run)

    async def _autopilot(self, experiment_id: str, options: Any, *, act: bool) -> AutopilotDecision:
        opts = _options(options).model_copy(update={"record_decision": False, "similar_experiments": 0})
        a = await self._analyze(experiment_id, opts)
        facts, checks = self._facts(a)
        choice = decide_autopilot(facts, self.policy)
        applied = False
        outcome_note = ""
        if act and choice.should_apply:
            try:
                await self._apply(a, choice)
                applied = True
            except ServiceError as exc:
                outcome_note = f" Applying failed: {exc}"
        reasoning = choice.rule + outcome_note
        decision_id = None
        if choice.action != "none":
            actor = AUTOPILOT_ACTOR if act else ACTOR
            if choice.action == "needs_human_review" or applied:
                action = choice.action
            else:
                action = f"recommend_{choice.action}"
            decision_id = await self._record(
                a.key, action, reasoning,
                {"policy": self.policy.as_dict(), "verdict": a.verdict.verdict, "rule_id": a.verdict.rule_id,
                 "verdict_rule": a.verdict.rule, "variant": choice.variant, "weights": choice.weights,
                 "allowed": choice.allowed, "harms": [c.model_dump() for c in checks],
                 "users": {v.key: v.users for v in a.result.variants}, "days_observed": a.result.days_observed},
                choice.confidence, actor, applied)
        narrative = [reasoning]
        for c in checks:
            narrative.append(f"{c.metric} ({c.role}) for {c.variant}: {pct(c.relative_lift)}, degradation "
                             f"{pct(c.degradation)}, status {c.status}, p(harm) = {c.p_harm:.2g}"
                             + (", breaches the policy." if c.breaches_policy else "."))
        return AutopilotDecision(
            experiment_id=a.key, environment=self.policy.environment, policy=_policy_view(self.policy),  # type: ignore[arg-type]
            verdict=_rule(a.verdict), guardrails=checks, action=choice.action, variant=choice.variant,  # type: ignore[arg-type]
            weights=choice.weights, allowed=choice.allowed, applied=applied, rule=reasoning,
            confidence=max(0.0, min(1.0, choice.confidence)), decision_id=decision_id, narrative=narrative)

    async def _apply(self, a: Analysed, choice: AutopilotChoice) -> None:
        reason = choice.rule[:2000]
        if choice.action == "reallocate" or (choice.action == "roll_back" and choice.weights):
            await self.peers.postgres("set_variant_weights", experiment=a.key, weights=choice.weights,
                                      actor=AUTOPILOT_ACTOR, reason=reason)
        elif choice.action == "roll_back":
            await self.peers.postgres("stop_experiment", experiment=a.key, winner=a.control, actor=AUTOPILOT_ACTOR,
                                      reason=reason)
        elif choice.action == "ship":
            await self.peers.postgres("stop_experiment", experiment=a.key, winner=choice.variant,
                                      actor=AUTOPILOT_ACTOR, reason=reason)
        elif choice.action == "pause":
            await self.peers.postgres("stop_experiment", experiment=a.key, actor=AUTOPILOT_ACTOR, reason=reason)

    # ================================================================ prediction before running

    async def predict_experiment_outcome(self, config: ExperimentConfig | Mapping[str, Any]) -> OutcomePrediction:
        """Empirical prior over lift from similar past experiments, chance of a significant win, size, duration."""
        cfg = config if isinstance(config, ExperimentConfig) else ExperimentConfig.model_validate(config)
        metric = cfg.primary_metric if isinstance(cfg.primary_metric, MetricInput) else MetricInput(name=cfg.primary_metric)
        sign = -1.0 if metric.direction == "lower" else 1.0
        hits = (await self.peers.chroma("semantic_experiment_search", query=_config_text(cfg, metric.name),
                                        n_results=50))["hits"]
        past = [priors.PastResult(key=(h.get("metadata") or {}).get("experiment_key") or h["id"],
                                  similarity=float(h["similarity"]), lift=(h.get("metadata") or {}).get("lift"),
                                  p_value=(h.get("metadata") or {}).get("p_value"),
                                  direction=(h.get("metadata") or {}).get("metric_direction", "higher"))
                for h in hits]
        weighted = priors.weigh(past)
        used = [w for w in weighted if w.used]
        neighbours = [Neighbour(experiment_key=w.key, similarity=w.similarity, lift=w.lift, improvement=w.improvement,
                                standard_error=w.se, weight=w.weight, used=w.used, why_not=w.why_not)
                      for w in weighted[:20]]
        prior = priors.empirical_prior(weighted) if len(used) >= priors.MIN_NEIGHBOURS else None
        narrative: list[str] = []
        mde, mde_source = cfg.mde, ("stated" if cfg.mde else None)
        if mde is None and prior is not None:
            mde, mde_source = min(max(abs(prior.mean), 0.005), 1.0), "the prior's expected |improvement|"
        traffic, traffic_source = cfg.traffic_per_day, ("stated" if cfg.traffic_per_day else None)
        if traffic is None and used:
            traffic, traffic_source = await self._observed_traffic(used, metric.name)
        n_per_variant = total_n = None
        duration = p_win = None
        if cfg.baseline is not None and mde is not None:
            variance = None if cfg.baseline.sd is None else cfg.baseline.sd ** 2
            plan = stats.sample_size(mde, cfg.baseline.mean, variance, target_power=cfg.target_power, alpha=cfg.alpha,
                                     n_variants=cfg.variants, n_comparisons=cfg.variants - 1)
            if plan.ok:
                n_per_variant, total_n = plan.n_per_variant, plan.total_n
                if traffic:
                    duration = total_n / traffic
                if prior is not None:
                    se = priors.relative_se(n_per_variant, cfg.baseline.mean, variance)
                    p_win = priors.assurance(prior.mean, prior.sd, se, cfg.alpha / (cfg.variants - 1))
            else:
                narrative.append(f"No sample size: {plan.error}")
        floor = priors.SIMILARITY_FLOOR
        if prior is None:
            status = "insufficient_history"
            message = (f"Insufficient history: found {len(used)} past experiment(s) with results above the "
                       f"similarity floor {floor:.2f}; at least {priors.MIN_NEIGHBOURS} are needed, so no lift is "
                       f"predicted.")
            lift_prior = None
        else:
            status = "ok"
            mean = sign * prior.mean
            qs = priors.quantiles(mean, prior.sd)
            p_good = 1.0 - norm_cdf(-prior.mean / prior.sd) if prior.sd > 0 else float(prior.mean > 0)
            lift_prior = LiftPrior(mean=mean, sd=prior.sd, between_experiment_sd=prior.tau,
                                   observed_sd=prior.observed_sd, mean_sampling_sd=prior.mean_sampling_sd,
                                   effective_neighbours=prior.n_eff, quantiles=qs, probability_positive_effect=p_good)
            message = (f"Prior from {prior.used} similar past experiments (effective {prior.n_eff:.1f}): expected "
                       f"lift {pct(mean)} (90% {pct(qs['p05'])} to {pct(qs['p95'])}); {prob(p_good)} chance the "
                       f"true effect is an improvement.")
        narrative.insert(0, message)
        if n_per_variant:
            narrative.append(f"Planned for a {mde:.1%} relative effect ({mde_source}): {n_per_variant} users per "
                             f"variant, {total_n} in total" + (f", ≈{duration:.1f} days at {traffic:.0f} users/day "
                                                              f"({traffic_source})." if duration else "."))
        if p_win is not None:
            narrative.append(f"Chance the test ends with a significant win: {prob(p_win)} (power averaged over the prior).")
        return OutcomePrediction(
            status=status, message=message, neighbours_found=len(used), neighbours_required=priors.MIN_NEIGHBOURS,
            similarity_floor=floor, neighbours=neighbours, prior=lift_prior, probability_significant_win=p_win,
            planned_mde=mde, mde_source=mde_source, recommended_sample_size_per_variant=n_per_variant,
            recommended_total_sample_size=total_n, traffic_per_day=traffic, traffic_source=traffic_source,
            estimated_duration_days=duration, narrative=narrative)

    async def _observed_traffic(self, used: Sequence[priors.WeightedResult], metric: str
                                ) -> tuple[float | None, str | None]:
        """Median exposures/day that ClickHouse saw for the most similar past experiments."""
        rates: dict[str, float] = {}
        for w in sorted(used, key=lambda x: -x.similarity)[:5]:
            try:
                st = await self.peers.clickhouse("get_variant_statistics", experiment_id=w.key, metrics=[metric])
            except ServiceError:
                continue
            span = (_ts(st["window_end"]) - _ts(st["window_start"])).total_seconds() / 86400.0
            users = sum(int(v["users"]) for v in st["variants"])
            if span > 0 and users:
                rates[w.key] = users / max(span, 1.0)
        if not rates:
            return None, None
        return float(pystats.median(rates.values())), (
            f"median exposures/day ClickHouse saw for {len(rates)} similar experiment(s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))

    # ================================================================ planning

    async def plan_experiment(self, goal: str, baseline: Baseline | Mapping[str, Any], mde: float, traffic: float, *,
                              variants: int = 2, primary_metric: str | None = None, alpha: float = 0.05,
                              target_power: float = 0.8) -> ExperimentPlan:
        """Sample size, duration, variants, metrics and guardrails for a stated goal."""
        base = baseline if isinstance(baseline, Baseline) else Baseline.model_validate(baseline)
        if not goal.strip():
            raise InvalidInput("state the goal, e.g. 'raise mobile checkout conversion with a one-step checkout'")
        if not (traffic > 0 and math.isfinite(traffic)):
            raise InvalidInput("traffic must be a positive number of users per day")
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
        duration_seq = planning.whole_days(sizing.n_per_variant_sequential * variants, traffic)
        options = [DurationOption(days=d, n_per_variant=int(d * traffic / variants),
                                  mde=planning.mde_after(d, traffic, base.mean, variance, power=target_power,
                                                         alpha=alpha, arms=variants))
                   for d in (7, 14, 21, 28, 42)]
        plan_variants = [PlanVariant(key="control", is_control=True, weight=round(1 / variants, 4),
                                     description="the current experience")]
        plan_variants += [PlanVariant(key="treatment" if variants == 2 else f"treatment_{i}", is_control=False,
                                      weight=round(1 / variants, 4), description=f"the change that should achieve: {goal}")
                          for i in range(1, variants)]
        weights = _normalised({v.key: v.weight for v in plan_variants})
        for v in plan_variants:
            v.weight = weights[v.key]
        similar: list[SimilarExperiment] = []
        notes = [f"Sized for a two-sided test at α = {alpha} per comparison"
                 + (f" (Bonferroni over {variants - 1} treatment arms)" if variants > 2 else "")
                 + f", {target_power:.0%} power, equal split.",
                 "Run whole weeks (at least 7 days) so weekday and weekend users are both represented.",
                 f"If results will be checked while running, plan for the always-valid size "
                 f"({sizing.n_per_variant_sequential} per variant, {duration_seq} days)."]
        if self.peers.has(CHROMA):
            try:
                hits = (await self.peers.chroma("semantic_experiment_search", query=goal, n_results=5))["hits"]
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

    # ================================================================ user behaviour

    async def predict_user_behavior(self, user_id: str | None = None, steps: Sequence[str] | None = None, *,
                                    device_type: str | None = None, n_neighbors: int = 50) -> BehaviorPrediction:
        """Next action and outcome from the most similar stored journeys of other users (kNN)."""
        if not 1 <= n_neighbors <= 50:
            raise InvalidInput("n_neighbors must be between 1 and 50")
        complete = False
        source = "given"
        context: dict[str, Any] = {}
        if steps:
            current = [str(s) for s in steps]
        elif user_id:
            own = (await self.peers.chroma("find_similar_user_journeys", query="user journey",
                                           where={"user_id": user_id}, n_results=20))["hits"]
            if not own:
                raise NotFound(f"no stored journey for user {user_id!r}; pass the user's current steps instead")
            latest = max(own, key=lambda h: ((h.get("metadata") or {}).get("started_at") or 0, h["id"]))
            meta = latest.get("metadata") or {}
            current = list(meta.get("steps") or [])
            complete = bool(meta.get("conversion_outcome"))
            source = latest["id"]
            context = {k: meta[k] for k in ("device_type", "user_segment", "traffic_source") if meta.get(k)}
        else:
            raise InvalidInput("give a user_id (their latest stored journey is used) or the current steps")
        if not current:
            raise InvalidInput("the journey has no steps")
        if device_type:
            context["device_type"] = device_type
        return await self._predict_from(current, user_id, context, n_neighbors, source, complete)

    async def _predict_from(self, current: list[str], user_id: str | None, context: dict[str, Any], n_neighbors: int,
                            source: str, complete: bool) -> BehaviorPrediction:
        hits = (await self.peers.chroma("find_similar_user_journeys", journey={"steps": current, **context},
                                        n_results=JOURNEY_CANDIDATES))["hits"]
        candidates = []
        for h in hits:
            meta = h.get("metadata") or {}
            if user_id is not None and meta.get("user_id") == user_id:
                continue  # the user's own journeys never vote
            candidates.append(behavior.NeighbourJourney(tuple(meta.get("steps") or ()), meta.get("conversion_outcome"),
                                                        float(h["similarity"])))
        # The journeys most similar to a path are those that ENDED on it, so a plain top-k over-counts
        # "the session ends here". Vote among candidates that went through exactly the same steps
        # (continued or not), most similar first; with too few of those, align on the last step.
        consistent = [c for c in candidates if list(c.steps[:len(current)]) == current][:n_neighbors]
        if len(consistent) >= behavior.MIN_CONSISTENT:
            neighbours, how = consistent, "that went through exactly the same steps"
        else:
            neighbours, how = candidates[:n_neighbors], "most similar (aligned on the current last step)"
        nxt = behavior.next_step_votes(current, neighbours)
        out = behavior.outcome_votes(neighbours)
        return BehaviorPrediction(
            user_id=user_id, current_steps=current, journey_source=source, journey_complete=complete,
            next_action=nxt[0].label if nxt else None, next_action_probability=nxt[0].probability if nxt else None,
            next_actions=[OutcomeVote(label=v.label, probability=v.probability, neighbours=v.neighbours) for v in nxt[:5]],
            predicted_outcome=out[0].label if out else None, outcome_probability=out[0].probability if out else None,
            outcomes=[OutcomeVote(label=v.label, probability=v.probability, neighbours=v.neighbours) for v in out[:5]],
            neighbours_used=len(neighbours),
            mean_similarity=(sum(n.similarity for n in neighbours) / len(neighbours)) if neighbours else None,
            method=f"similarity-weighted vote of {len(neighbours)} stored journeys of other users {how}, among the "
                   f"{len(candidates)} nearest by embedding (all-MiniLM-L6-v2, cosine)",
            measured_accuracy=self.behavior_accuracy)

    async def evaluate_behavior_predictions(self, journeys: Sequence[Mapping[str, Any]], *,
                                            n_neighbors: int = 50) -> BehaviorEvaluation:
        """Held-out accuracy: each journey (not stored in memory) is cut after `cut` steps (default: before its
        last step; cut = its length means the session ended there, so the true next action is "(end)"); the
        prediction from that prefix is scored against the true next action and the journey's outcome."""
        if not journeys:
            raise InvalidInput("give at least one held-out journey")
        predicted_next, actual_next, predicted_out, actual_out = [], [], [], []
        for j in journeys:
            steps = list(j["steps"])
            cut = int(j.get("cut") or len(steps) - 1)
            if not 1 <= cut <= len(steps):
                raise InvalidInput(f"cut must be within 1..{len(steps)}")
            context = {k: j[k] for k in ("device_type", "user_segment", "traffic_source") if j.get(k)}
            p = await self._predict_from(steps[:cut], j.get("user_id"), context, n_neighbors, "held-out", False)
            predicted_next.append(p.next_action)
            actual_next.append(steps[cut] if cut < len(steps) else behavior.END)
            if j.get("conversion_outcome"):
                predicted_out.append(p.predicted_outcome)
                actual_out.append(j["conversion_outcome"])
        result = BehaviorEvaluation(
            journeys=len(journeys), next_action_accuracy=behavior.accuracy(predicted_next, actual_next),
            outcome_accuracy=behavior.accuracy(predicted_out, actual_out),
            next_action_baseline=behavior.majority_baseline(actual_next),
            outcome_baseline=behavior.majority_baseline(actual_out), n_neighbors=n_neighbors)
        self.behavior_accuracy = result.model_dump()
        return result

    # ================================================================ charts

    async def plot_experiment(self, experiment_id: str, metric: str | None = None) -> tuple[bytes, PlotSummary]:
        """PNG of the cumulative lift (always-valid band) per treatment over time and the daily metric per variant."""
        opts = AnalysisOptions(record_decision=False, similar_experiments=0, cuped=False)
        a = await self._analyze(experiment_id, opts)
        spec = next((s for s in a.specs if s.name == (metric or a.specs[0].name)), None)
        if spec is None:
            raise InvalidInput(f"{metric!r} is not a metric of {a.key}; its metrics: {[s.name for s in a.specs]}")
        first = a.result.window_start.date()
        last = (a.result.window_end - timedelta(milliseconds=1)).date()
        span = (last - first).days + 1
        step = max(1, math.ceil(span / MAX_PLOT_DAYS))
        days_list = [first + timedelta(days=k) for k in range(0, span, step)]
        if days_list[-1] != last:
            days_list.append(last)
        math_opts = calc.Settings(alpha=opts.alpha, cuped=False, sequential=True)
        series: dict[str, dict[str, list]] = {t: {"days": [], "lift": [], "lo": [], "hi": [], "users": []}
                                              for t in a.treatments}
        for day in days_list:
            st = await self.peers.clickhouse("get_variant_statistics", experiment_id=a.key, metrics=[spec.name],
                                             start_date=first.isoformat(), end_date=day.isoformat())
            rows = {s["variant"]: s for s in st["statistics"]}
            for t in a.treatments:
                s = series[t]
                s["days"].append(day.isoformat())
                c_row, t_row = rows.get(a.control), rows.get(t)
                lift = lo = hi = None
                users = int(t_row["n"]) if t_row else 0
                if c_row and t_row and min(int(c_row["n"]), int(t_row["n"])) >= 2:
                    pair = calc.compare_pair(spec.name, spec.role, spec.direction, t, a.control, c_row, t_row,
                                             math_opts, n_star=a.n_star)
                    users = pair.n + pair.control_n
                    if not pair.error:
                        lift = pair.sequential.effect
                        lo, hi = calc.interval(pair.sequential.ci)
                for name, value in (("lift", lift), ("lo", lo), ("hi", hi), ("users", users)):
                    s[name].append(value)
        daily = forecast = None
        daily_source = None
        try:
            trend = await self.peers.clickhouse("predict_experiment_trends", experiment_id=a.key, metric=spec.name,
                                                days_ahead=3)
            daily = {v["variant"]: [(p["date"], p["value"]) for p in v["history"]] for v in trend["variants"]}
            forecast = {v["variant"]: [(p["date"], p["predicted"], p["lower"], p["upper"]) for p in v["forecast"]]
                        for v in trend["variants"]}
            daily_source = f"ClickHouse daily rollup ({trend['statistic']}); forecast: {trend['model']}"
        except ServiceError as exc:
            log.info("daily panel skipped for %s: %s", a.key, exc)
        band = "shaded: 95% always-valid confidence sequence"
        lift_series = [LiftSeries(variant=t, days=s["days"], cumulative_lift=s["lift"], band_low=s["lo"],
                                  band_high=s["hi"], users=s["users"]) for t, s in series.items()]
        png = await anyio.to_thread.run_sync(lambda: charts.lift_chart(
            title=f"{a.result.name}: {spec.name} ({spec.direction} is better)", metric=spec.name, control=a.control,
            series=[{"variant": s.variant, "days": s.days, "cumulative_lift": s.cumulative_lift,
                     "band_low": s.band_low, "band_high": s.band_high} for s in lift_series],
            daily=daily, forecast=forecast, band_label=band))
        summary = PlotSummary(
            experiment_id=a.key, metric=spec.name, direction=spec.direction, control=a.control,  # type: ignore[arg-type]
            band=band, series=lift_series, daily_source=daily_source,
            final_lift={s.variant: next((x for x in reversed(s.cumulative_lift) if x is not None), None)
                        for s in lift_series},
            png_bytes=len(png))
        return png, summary


# ---------------------------------------------------------------- helpers


def _options(options: AnalysisOptions | Mapping[str, Any] | None) -> AnalysisOptions:
    if options is None:
        return AnalysisOptions()
    if isinstance(options, AnalysisOptions):
        return options
    try:
        return AnalysisOptions.model_validate(dict(options))
    except ValueError as exc:
        raise InvalidInput(f"invalid options: {exc}") from exc


def _metric_specs(experiment: Mapping[str, Any]) -> list[MetricSpec]:
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


def _experiment_text(experiment: Mapping[str, Any]) -> str:
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


def _config_text(cfg: ExperimentConfig, metric: str) -> str:
    parts = [cfg.name, cfg.description, f"Hypothesis: {cfg.hypothesis}" if cfg.hypothesis else "",
             f"{cfg.type} experiment" if cfg.type else "", f"segment {cfg.segment}" if cfg.segment else "",
             f"platform {cfg.platform}" if cfg.platform else "", f"Primary metric: {metric}"]
    return ". ".join(p.strip().rstrip(".") for p in parts if p)[:2000]


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


def _rule(o: Outcome) -> RuleOutcome:
    return RuleOutcome(verdict=o.verdict, rule_id=o.rule_id, rule=o.rule, confidence=max(0.0, min(1.0, o.confidence)),  # type: ignore[arg-type]
                       confidence_basis=o.confidence_basis, variant=o.variant,
                       days_left=o.days_left if o.days_left is None or math.isfinite(o.days_left) else None)


def _policy_view(policy: AutopilotPolicy) -> PolicyView:
    return PolicyView(environment=policy.environment, confidence_threshold=policy.confidence_threshold,  # type: ignore[arg-type]
                      max_degradation=policy.max_degradation, exploration_rate=policy.exploration_rate,
                      min_days=policy.min_days, min_units_per_variant=policy.min_units_per_variant,
                      allowed_actions=sorted(policy.allowed_actions))


__all__ = ["Analysed", "IntelligenceService"]
