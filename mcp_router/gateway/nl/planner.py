"""A question → the tool calls that answer it, with every argument filled and validated.

1. Intent by meaning (`classifier.py`); a question joining two requests ("analyse checkout and
   recommend what to do next") is split and each part classified: a two-step plan.
2. Entities from the text (`entities.py`) and against the live data (`Lookup`): the experiments it
   names (`experiments.py`), their metrics, segment values, and periods anchored to the events
   that exist (a window with no events is re-anchored at the latest event, and the plan says so).
3. Arguments filled to the chosen tool's input schema and validated with it (jsonschema) before
   anything runs. A value the question does not give is either assumed, and the assumption is
   stated (`assumptions`), or asked for (`missing`): chat asks it, `neonblue ask` says it cannot
   answer without it.

Below the classifier's confidence floor the plan has no calls, says so, and lists the closest
things it can do (`alternatives`). Writes (start, stop, archive, create) are planned, never run
from a question (`writes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import anyio
import jsonschema
import mcp.types as types
from pydantic import BaseModel, Field

from mcp_router.gateway.nl.classifier import (
    MIN_CONFIDENCE,
    MIN_SIMILARITY,
    Classification,
    IntentClassifier,
    shared_classifier,
)
from mcp_router.gateway.nl.entities import (
    COUNTRY_WORDS,
    DEVICE_WORDS,
    SOURCE_WORDS,
    STOPWORDS,
    Entities,
    Period,
    content_words,
    extract,
    find_period,
    resolve_period,
    words,
)
from mcp_router.gateway.nl.experiments import (
    ACTION_WORDS,
    STRONG,
    ExperimentIndex,
    Match,
    metric_specs,
    metrics_named,
    similar,
)
from mcp_router.gateway.nl.intents import INTENTS, IntentSpec

MAX_FAN_OUT = 6
DEFAULT_MDE = 0.05  # the analysis' default relative MDE (mcp_servers/intelligence AnalysisOptions.mde)
DEFAULT_TRAFFIC = 1_000.0


class PlannedCall(BaseModel):
    tool: str
    server: str
    arguments: dict[str, Any]
    bind: dict[str, str] = Field(default_factory=dict, description=(
        "Arguments taken from an earlier step's result when it runs: argument → 'step N: path', "
        "e.g. {'experiment': 'step 1: hits.0.metadata.experiment_key'}."))
    purpose: str = Field(default="", description="What this call answers, in words.")


class RoutePlan(BaseModel):
    intent: str = Field(description="The intent (two-step plans: 'first+second'); 'unknown' when declined.")
    calls: list[PlannedCall] = Field(description="Tool calls that answer the request, in order.")
    entities: dict[str, Any] = Field(description="What the question names, resolved against the live data.")
    reason: str
    confidence: float = Field(ge=0, le=1, description="Calibrated probability of the intent (softmax over "
                              "nearest labelled examples; temperature fitted by leave-one-out).")
    method: str = Field(default="embedding", description="embedding (all-MiniLM-L6-v2) or keywords (fallback).")
    assumptions: list[str] = Field(default_factory=list, description="Values the question did not give, assumed.")
    missing: list[str] = Field(default_factory=list, description="Values needed and not found: ask the user.")
    writes: bool = Field(default=False, description="True when a call changes data (never run from a question).")
    alternatives: list[str] = Field(default_factory=list, description="When declined: what it can answer.")
    candidates: list[str] = Field(default_factory=list, description=(
        "Tools that may answer it, most likely first (the planned ones, then the runner-up intents' tools): "
        "what an agent should be offered for this question."))


class Lookup(Protocol):
    """The live data the planner resolves against (the router answers it with its own backends)."""

    async def experiments(self) -> list[dict[str, Any]]: ...

    async def event_range(self, keys: list[str]) -> tuple[date | None, date | None]: ...

    async def exposures_per_day(self) -> float | None: ...


@dataclass
class _Context:
    question: str
    entities: Entities
    index: ExperimentIndex
    today: date
    tools: dict[str, types.Tool] = field(default_factory=dict)
    resolved: dict[str, Any] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


_CLAUSE = re.compile(
    r"\s*(?:\bthen\s+(?=(?:recommend|plot|chart|graph|forecast|predict|analy[sz]e|check|plan|list|show|tell|give|"
    r"stop|start|archive|draw|suggest)\b)|"
    r",?\s*\band then\b|,\s*then\b|;\s*|,?\s*\band also\b|,\s*and\b|\band\b)\s*(?=(?:what|how|is|are|"
    r"should|recommend|plot|chart|graph|show|tell|give|forecast|predict|analy[sz]e|check|compare|plan|list|find|"
    r"search|which|who|stop|start|archive|draw)\b)", re.I)
_DESCRIBED = re.compile(r"\b(?:experiment|test|one)\s+(?:about|where|that|which|testing|on|with)\b", re.I)
_PLURAL = re.compile(r"\b(experiments|tests|all|every|each|both|ones)\b", re.I)
_COMPARE = re.compile(r"\b(compare|comparison|vs\.?|versus|against|and)\b", re.I)
_BELOW = ("less than", "under", "below", "at most", "<")
_MDE_AFTER = ("lift", "uplift", "improvement", "increase", "change", "effect", "difference", "boost", "gain",
              "drop", "decrease", "relative", "rise", "better", "higher", "more", "mde")
_MDE_BEFORE = ("detect", "mde", "by", "see", "effect", "lift")
_BASE_AFTER = ("conversion", "baseline", "rate", "ctr", "click", "open", "activation", "base", "converting",
               "signup", "retention", "churn")
_BASE_BEFORE = ("baseline", "on", "at", "from", "currently", "converts", "of", "is", "rate", "base")


def _percent_kind(p: Any, before: list[str], after: list[str]) -> str | None:
    """Is this percent the effect to detect ('a 2% lift', 'mde 4%') or the baseline ('a 10% conversion
    rate', 'baseline 25%')? Points are always an effect. The words right after weigh most."""
    if p.unit == "points":
        return "mde"
    mde = 3 * any(w.startswith(_MDE_AFTER) for w in after) + 2 * any(w in _MDE_BEFORE for w in before[-2:])
    base = 3 * any(w.startswith(_BASE_AFTER) for w in after) + 2 * any(w in _BASE_BEFORE for w in before[-2:])
    if mde == base:
        return None
    return "mde" if mde > base else "baseline"
_SUBJECT_DROP = frozenset("""
similar past previous prior earlier old find searching about related history historical relating regarding show experiments
ones tried before ran done happened increased improved raised lifted boosted decreased reduced conversion
strategies strategy recommend recommendations worked work works working successful success
patterns pattern journeys journey users user sessions session predict lift expect expected
outcome chance win likely would could might plan design set sample size long detect need needed
""".split()) | {"like", "what", "which", "any", "have", "we", "did", "that", "do"}


class Planner:
    def __init__(self, classifier: IntentClassifier | None = None) -> None:
        self.classifier = classifier or shared_classifier()

    async def plan(self, question: str, tools: dict[str, types.Tool], server_of: dict[str, str], lookup: Lookup,
                   today: date | None = None) -> RoutePlan:
        question = " ".join(question.split())
        today = today or datetime.now(UTC).date()
        clauses = [c for c in _CLAUSE.split(question) if c and len(c.split()) >= 2]
        texts = [question, *clauses] if len(clauses) > 1 else [question]
        index = ExperimentIndex(await lookup.experiments())
        masked = [index.mask(text) for text in texts]
        classes = await anyio.to_thread.run_sync(self.classifier.classify_many, masked)
        whole, parts = classes[0], classes[1:]
        ctx = _Context(question, extract(question), index, today, tools)

        whole = _with_write_cue(whole, question)
        parts = [_with_write_cue(c, text) for c, text in zip(parts, clauses, strict=False)]
        steps: list[tuple[str, Classification]] = []
        if parts and all(_accepted(c) for c in parts) and len({c.intent for c in parts}) == len(parts):
            steps = list(zip(clauses, parts, strict=True))
        elif _accepted(whole):
            steps = [(question, whole)]
        if not steps:
            return self._declined(ctx, whole)

        calls: list[PlannedCall] = []
        reasons, writes = [], False
        for text, c in steps:
            spec = INTENTS[c.intent]
            tool = next((t for t in spec.tools if t in tools), None)
            if tool is None:
                ctx.missing.append(f"a tool for {spec.name} ({' or '.join(spec.tools)}), not in the catalogue")
                continue
            writes = writes or spec.writes
            planned = await self._calls(spec, tool, text, ctx, lookup, tools, server_of)
            calls.extend(planned)
            reasons.append(f"{spec.name} (confidence {c.confidence:.2f}; nearest example {c.nearest!r}) → {tool}")
        calls = self._validated(calls, tools, ctx)
        intent = "+".join(c.intent for _, c in steps)
        confidence = min(c.confidence for _, c in steps)
        return RoutePlan(intent=intent, calls=calls, entities={**ctx.entities.as_dict(), **ctx.resolved},
                         reason="; ".join(reasons) or "no tool in the catalogue answers this",
                         confidence=confidence, method=whole.method, assumptions=ctx.assumptions,
                         missing=ctx.missing, writes=writes,
                         candidates=_candidates([c.tool for c in calls], whole, tools))

    def _declined(self, ctx: _Context, c: Classification) -> RoutePlan:
        if c.intent == "decline":
            why = f"it is not about experiments (closest example: {c.nearest!r})"
        elif c.similarity < MIN_SIMILARITY:
            why = f"it is not close to any question it knows (best similarity {c.similarity:.2f})"
        else:
            why = f"its best reading, {c.intent}, has confidence {c.confidence:.2f} only"
        closest = [INTENTS[name].summary for name, _ in c.ranked if name != "decline"][:3]
        return RoutePlan(intent="unknown", calls=[], entities=ctx.entities.as_dict(), confidence=c.confidence,
                         method=c.method, reason=f"I can't answer that offline: {why}", alternatives=closest,
                         candidates=_candidates([], c, ctx.tools))

    # ------------------------------------------------------------ experiments

    def _experiments(self, spec: IntentSpec, text: str, ctx: _Context) -> list[Match]:
        """The experiments a step is about: named in its own words, else in the whole question."""
        segment_words = frozenset(w for value in ctx.entities.segment.values() for w in words(value)) | frozenset(
            w for w in words(ctx.question) if w in _SEGMENT_WORDS)
        matches: list[Match] = []
        for source in (text, ctx.question):
            for ignore in (segment_words, frozenset()):  # "checkout on mobile": mobile filters, it does not name
                matches = [m for m in ctx.index.match(source, ignore) if m.score >= STRONG]
                if matches:
                    break
            if matches:
                break
        if not matches:
            return []
        best = matches[0]
        plural = bool(_PLURAL.search(ctx.question)) or bool(_COMPARE.search(ctx.question)) and len(matches) > 1
        if plural:
            distinct = [m for m in matches if m.score >= max(STRONG, 0.5 * best.score)
                        and (m is best or set(m.words) - set(best.words) or m.score >= 0.8 * best.score)]
            return distinct[:MAX_FAN_OUT]
        tied = [m for m in matches if m.score >= 0.8 * best.score]
        if len(tied) > 1 and best.score < 100:
            if spec.experiment == "many":
                ctx.assumptions.append(f"{', '.join(m.key for m in tied[:MAX_FAN_OUT])} match the question equally: "
                                       "answered for each")
                return tied[:MAX_FAN_OUT]
            ctx.missing.append("which experiment? " + ", ".join(f"{m.key} ({m.name})" for m in tied[:8]))
            return []
        return [best]

    async def _experiment_keys(self, spec: IntentSpec, text: str, ctx: _Context, tools: dict[str, types.Tool],
                               server_of: dict[str, str]) -> tuple[list[str], PlannedCall | None]:
        before = len(ctx.missing)
        matches = self._experiments(spec, text, ctx)
        if len(ctx.missing) > before:  # ambiguous: asked which
            return [], None
        if matches:
            how = "; ".join(f"{m.key} ({m.name}: matched {', '.join(m.words)})" for m in matches)
            ctx.resolved["experiments"] = [m.key for m in matches]
            ctx.resolved.setdefault("resolved", how)
            variants = {m.key: m.variant for m in matches if m.variant}
            if variants:
                ctx.resolved["variants"] = variants
            return [m.key for m in matches], None
        running = [k for k, e in ctx.index.experiments.items() if e.get("status") == "running"]
        naming = [w for w in content_words(text) if w not in ACTION_WORDS and w not in _SUBJECT_DROP
                  and not w.isdigit()]
        if (naming and spec.experiment in ("one", "many") and _DESCRIBED.search(text)
                and "semantic_experiment_search" in tools and ctx.index.experiments):
            # Resolve, then answer: the registry experiment closest in meaning to the words used.
            keys = sorted(ctx.index.experiments)
            search = PlannedCall(tool="semantic_experiment_search", server=server_of["semantic_experiment_search"],
                                 arguments={"query": " ".join(naming), "where": {"experiment_key": {"$in": keys}},
                                            "limit": 1},
                                 purpose=f"find the experiment the words {' '.join(naming)!r} describe")
            ctx.assumptions.append(f"no experiment is named by key or name: the one closest in meaning to "
                                   f"{' '.join(naming)!r} is used")
            return [], search
        if spec.experiment == "many" and running:
            ctx.assumptions.append(f"no experiment named: answered for the {len(running[:MAX_FAN_OUT])} running "
                                   f"ones ({', '.join(running[:MAX_FAN_OUT])})")
            ctx.resolved["experiments"] = running[:MAX_FAN_OUT]
            return running[:MAX_FAN_OUT], None
        if len(running) == 1:
            ctx.assumptions.append(f"no experiment named: the only running one, {running[0]}, is used")
            ctx.resolved["experiments"] = running
            return running, None
        if spec.experiment == "optional":
            return [], None
        names = ", ".join(f"{k} ({ctx.index.experiments[k].get('name', k)})" for k in (running or
                                                                                        sorted(ctx.index.experiments))[:8])
        ctx.missing.append(f"which experiment? {names or 'the registry has none'}")
        return [], None

    # ------------------------------------------------------------ periods and metrics

    async def _period(self, ctx: _Context, lookup: Lookup, keys: list[str]) -> Period | None:
        words_ = find_period(ctx.question)
        if words_ is None:
            return None
        period = resolve_period(words_, ctx.today)
        first, last = await lookup.event_range(keys)
        ctx.resolved["period"] = {"from": period.start.isoformat(), "to": period.end.isoformat(),
                                  "label": period.label}
        if last is None:
            ctx.assumptions.append(f"{words_!r} read as {period.start} to {period.end}; no events are stored for "
                                   f"{', '.join(keys) or 'any experiment'} yet")
        elif last < period.start or (first is not None and first > period.end):
            anchored = resolve_period(words_, last)
            ctx.assumptions.append(f"no events between {period.start} and {period.end}: {words_!r} read up to the "
                                   f"latest event ({last}), {anchored.start} to {anchored.end}")
            period = anchored
            ctx.resolved["period"] = {"from": period.start.isoformat(), "to": period.end.isoformat(),
                                      "label": f"{period.label}, anchored at the latest event"}
        else:
            ctx.assumptions.append(f"{words_!r} read as {period.label}: {period.start} to {period.end}")
        return period

    def _metric(self, ctx: _Context, key: str) -> str:
        experiment = ctx.index.experiments.get(key) or {}
        named, _ = _named_metrics(ctx, key)
        chosen = named[0] if named else (experiment.get("primary_metric") or {}).get("name", "conversion")
        ctx.resolved.setdefault("metrics", {})[key] = chosen
        direction = next((m.get("direction") for m in metric_specs(experiment) if m.get("name") == chosen), None)
        if direction:
            ctx.resolved.setdefault("directions", {})[key] = direction
        if not named:
            ctx.assumptions.append(f"metric for {key}: {chosen}, its primary metric")
        return chosen

    # ------------------------------------------------------------ arguments per intent

    async def _calls(self, spec: IntentSpec, tool: str, text: str, ctx: _Context, lookup: Lookup,
                     tools: dict[str, types.Tool], server_of: dict[str, str]) -> list[PlannedCall]:
        props = set((tools[tool].input_schema or {}).get("properties", {}))

        def call(arguments: dict[str, Any], purpose: str = "", bind: dict[str, str] | None = None) -> PlannedCall:
            return PlannedCall(tool=tool, server=server_of[tool], arguments=arguments, bind=bind or {},
                               purpose=purpose)

        if spec.experiment == "none" or tool in ("search_optimization_patterns",):
            return [call(await self._arguments_without_experiment(spec, tool, text, ctx, lookup, props))]

        keys, resolve = await self._experiment_keys(spec, text, ctx, tools, server_of)
        if resolve is not None:
            bound = {"experiment": "step 1: hits.0.metadata.experiment_key"}
            base = {k: v for k, v in (await self._arguments_for(spec, tool, "", ctx, lookup, props)).items()
                    if k != "experiment"}
            return [resolve, call(base, spec.summary, bound)]
        if not keys:
            if spec.experiment == "optional":
                return [call(await self._arguments_for(spec, tool, "", ctx, lookup, props))]
            return []
        period = await self._period(ctx, lookup, keys) if {"start_date", "date_from"} & props else None
        out = []
        for key in keys:
            arguments = await self._arguments_for(spec, tool, key, ctx, lookup, props)
            if period is not None and "start_date" in props:
                arguments["start_date"], arguments["end_date"] = period.start.isoformat(), period.end.isoformat()
            out.append(call(arguments, f"{spec.name} for {key}"))
        return out

    async def _arguments_for(self, spec: IntentSpec, tool: str, key: str, ctx: _Context, lookup: Lookup,
                             props: set[str]) -> dict[str, Any]:
        """Arguments of a tool that takes one experiment (key may be '' when bound later)."""
        entities = ctx.entities
        args: dict[str, Any] = {"experiment": key} if key and "experiment" in props else {}
        if spec.name in ("allocate", "autopilot") and "dry_run" in props:
            args["dry_run"] = True
            ctx.assumptions.append(f"{spec.name}: a dry run; nothing changes until you apply it")
        if tool == "generate_analytics_insights" and key:
            args["metrics"] = [self._metric(ctx, key)]
        if tool == "get_variant_statistics":
            if entities.segment and "segment" in props:
                args["segment"] = dict(entities.segment)
            named, own = _named_metrics(ctx, key)
            if named or own:  # the tool needs at least one: the named ones, else all of the experiment's
                args["metrics"] = named or own
        if tool == "predict_experiment_trends" and key:
            args["metric"] = self._metric(ctx, key)
            if entities.days_ahead:
                args["days_ahead"] = min(entities.days_ahead, 30)
        if tool == "plot_experiment" and key:
            named, _ = _named_metrics(ctx, key)
            if named:
                args["metric"] = named[0]
        if tool in ("predict_user_assignment",):
            if entities.users:
                args["user_id"] = entities.users[0]
            else:
                ctx.missing.append("which user? (a user id, e.g. 'user u_42')")
            if entities.segment:
                args["attributes"] = dict(entities.segment)
        if tool == "stop_experiment":
            variant = (ctx.resolved.get("variants") or {}).get(key)
            if variant and re.search(r"\b(ship|winner|wins?|won|roll ?out|launch|keep|declare|as the)\b", ctx.question, re.I):
                args["winner"] = variant
            args["reason"] = ctx.question[:500]
        if tool in ("start_experiment", "archive_experiment"):
            args["reason"] = ctx.question[:500]
        if tool == "list_decisions" and "limit" in props:
            args["limit"] = 20
        return args

    async def _arguments_without_experiment(self, spec: IntentSpec, tool: str, text: str, ctx: _Context,
                                            lookup: Lookup, props: set[str]) -> dict[str, Any]:
        entities = ctx.entities
        args: dict[str, Any] = {}
        if tool in ("semantic_experiment_search", "search_optimization_patterns", "find_similar_user_journeys"):
            args["query"] = subject(text, entities)
            field_ = {"semantic_experiment_search": "lift", "search_optimization_patterns": "improvement"}.get(tool)
            where = _improvement_filter(entities, field_) if field_ else None
            if where:
                args["where"] = where
        elif tool == "list_experiments":
            if entities.statuses:
                args["status"] = entities.statuses
            topic = [w for w in content_words(text) if w not in ACTION_WORDS and w not in _SUBJECT_DROP
                     and w not in _STATUS_WORDS]
            tags = {t for e in ctx.index.experiments.values() for t in e.get("tags") or []}
            tag = next((t for t in tags if any(_same(w, t) for w in topic)), None)
            if tag:
                args["tag"] = tag
            elif topic:
                args["search"] = topic[0]
        elif tool == "plan_experiment":
            args.update(await self._plan_arguments(text, ctx, lookup))
        elif tool == "predict_experiment_outcome":
            config: dict[str, Any] = {"name": subject(text, entities)[:200] or text[:200], "hypothesis": text[:4000]}
            metrics = metrics_named(ctx.question, ctx.index.metric_names() | {"conversion", "revenue"})
            config["primary_metric"] = metrics[0] if metrics else "conversion"
            if not metrics:
                ctx.assumptions.append("primary metric: conversion (none named)")
            plan = await self._plan_arguments(text, ctx, lookup, required=False)
            for name in ("baseline", "mde", "traffic_per_day"):
                if name in plan:
                    config[name] = plan[name]
            args["experiment_config"] = config
        elif tool == "predict_user_behavior":
            if entities.users:
                args["user_id"] = entities.users[0]
            elif entities.segment.get("device"):
                args["device_type"] = entities.segment["device"]
            else:
                ctx.missing.append("which user? (a user id, e.g. 'user u_42')")
        elif tool == "clickhouse_query":
            args["sql"] = await self._count_sql(ctx, lookup)
        elif tool == "create_experiment":
            ctx.missing.append("an experiment definition (key, variants, primary metric): plan_experiment drafts "
                               "one, then call create_experiment with it")
        return args

    async def _plan_arguments(self, text: str, ctx: _Context, lookup: Lookup, *, required: bool = True) -> dict[str, Any]:
        entities = ctx.entities
        args: dict[str, Any] = {"goal": text[:500]}
        baseline = mde = None
        unlabelled = []
        for p in entities.percents:
            before = re.split(r"[,;.]", p.before)[-1].split()[-3:]
            after = re.split(r"[,;.]", p.after)[0].split()[:2]
            if "power" in after or "power" in before:
                if 50 < p.value < 100:
                    args["target_power"] = round(p.value / 100, 4)
                continue
            if any(w.startswith(("confiden", "significan")) for w in after):
                if 50 < p.value < 100:
                    args["alpha"] = round(1 - p.value / 100, 4)
                continue
            kind = _percent_kind(p, before, after)
            if kind == "mde" and mde is None:
                mde = p
            elif kind == "baseline" and baseline is None:
                baseline = p
            else:
                unlabelled.append(p)
        for p in unlabelled:  # the other of the two, in the order people say them
            if baseline is None and p.unit == "%" and (mde is not None or len(unlabelled) > 1):
                baseline = p
            elif mde is None:
                mde = p
        if baseline is not None:
            args["baseline"] = {"mean": _sig(baseline.value / 100)}
        if mde is not None:
            if mde.unit == "points" and baseline is not None:
                args["mde"] = _sig(mde.value / baseline.value)
                ctx.assumptions.append(f"{mde.value:g} points on a {baseline.value:g}% baseline is a relative "
                                       f"MDE of {args['mde']:.1%}")
            else:
                args["mde"] = _sig(mde.value / 100)
                ctx.assumptions.append(f"the {mde.value:g}% lift is relative ({baseline.value if baseline else 'the baseline'}"
                                       f"{'%' if baseline else ''} → x{1 + args['mde']:g})")
        elif required:
            args["mde"] = DEFAULT_MDE
            ctx.assumptions.append(f"no effect size given: a relative MDE of {DEFAULT_MDE:.0%} (the analysis default)")
        if entities.traffic_per_day:
            args["traffic_per_day"] = entities.traffic_per_day
        elif required:
            observed = await lookup.exposures_per_day()
            if observed:
                args["traffic_per_day"] = round(observed, 1)
                ctx.assumptions.append(f"no traffic given: {observed:,.0f} users/day, the new exposures per day "
                                       "stored over the last 14 days")
            else:
                args["traffic_per_day"] = DEFAULT_TRAFFIC
                ctx.assumptions.append(f"no traffic given and none stored: {DEFAULT_TRAFFIC:,.0f} users/day assumed")
        if entities.variants:
            args["variants"] = entities.variants
        if required and "baseline" not in args:
            ctx.missing.append("the baseline: the control's current rate or mean (e.g. 'a 10% conversion rate')")
        return args

    async def _count_sql(self, ctx: _Context, lookup: Lookup) -> str:
        matches = [m for m in ctx.index.match(ctx.question) if m.score >= STRONG]
        keys = [matches[0].key] if matches else []
        period = await self._period(ctx, lookup, keys)
        where = []
        if keys:
            where.append(f"experiment_id = '{keys[0]}'")
            ctx.resolved["experiments"] = keys
        if period is not None:
            where.append(f"timestamp >= toDateTime64('{period.start} 00:00:00', 3, 'UTC') AND "
                         f"timestamp < toDateTime64('{period.end + timedelta(days=1)} 00:00:00', 3, 'UTC')")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return (f"SELECT event_type, count() AS events, uniqExact(user_id) AS users FROM events{clause} "
                "GROUP BY event_type ORDER BY events DESC")

    # ------------------------------------------------------------ validation

    def _validated(self, calls: list[PlannedCall], tools: dict[str, types.Tool], ctx: _Context) -> list[PlannedCall]:
        """Each call's arguments checked against its tool's input schema; a bound argument counts as given."""
        out = []
        for planned in calls:
            schema = dict(tools[planned.tool].input_schema or {})
            required = [r for r in schema.get("required", []) if r not in planned.bind]
            trial = {**planned.arguments, **{name: "bound" for name in planned.bind}}
            errors = sorted(jsonschema.Draft202012Validator({**schema, "required": required}).iter_errors(trial),
                            key=lambda e: list(e.path))
            if errors:
                for error in errors:
                    where = ".".join(str(p) for p in error.path) or "arguments"
                    text = f"{planned.tool}: {where}: {error.message}"
                    if not any(planned.tool in m for m in ctx.missing):
                        ctx.missing.append(text)
                continue
            out.append(planned)
        return out


_SEGMENT_WORDS = frozenset(DEVICE_WORDS) | frozenset(SOURCE_WORDS) | frozenset(
    w for w in COUNTRY_WORDS if " " not in w and len(w) > 2)
_STATUS_WORDS = frozenset({"running", "live", "active", "ongoing", "draft", "drafts", "planned", "stopped",
                           "paused", "ended", "finished", "concluded", "completed", "archived"})


def _candidates(planned: list[str], c: Classification, tools: dict[str, types.Tool]) -> list[str]:
    out = list(dict.fromkeys(planned))
    for intent, _ in c.ranked:
        spec = INTENTS.get(intent)
        for tool in spec.tools if spec else ():
            if tool in tools and tool not in out:
                out.append(tool)
    return out[:8]


def _sig(x: float) -> float:
    """Nine significant figures: exact enough for any rate, without float noise (0.1, not 0.1000000001)."""
    return float(f"{x:.9g}")


# A write is planned only when the question says that write: "kick off" must never plan a stop.
WRITE_CUES = {
    "start": r"\b(start|launch|begin|kick(?:s|ing)?\s*off|go(?:es)? live|live|turn on|switch on|enable|activate|"
             r"resume|fire up|roll out|open|get\s+(?:\S+\s+){0,4}going|unpause)\b",
    "stop": r"\b(stop|end|halt|pause|kill|shut|turn off|switch off|disable|conclude|finish|roll(?:ing)? ?back|"
            r"wrap up|cancel|ship)\b",
    "archive": r"\b(archiv\w*|retire|clean up|remove|delete)\b",
    "create": r"\b(create|new|set up|setup|add|register|define|make)\b",
}


def _with_write_cue(c: Classification, text: str) -> Classification:
    """A write intent the words do not say is not planned: the next reading the words do say, or a decline."""
    if _write_cue_ok(c.intent, text):
        return c
    if c.intent in WRITE_CUES:  # the words say another write: that one ("kick off" read as a stop → start)
        said = [intent for intent in ("start", "stop", "archive") if intent != c.intent and _write_cue_ok(intent, text)]
        if len(said) == 1:
            # The classifier was sure it is this kind of write; the words say which: their probabilities add.
            confidence = min(1.0, c.confidence + dict(c.ranked).get(said[0], 0.0))
            return replace(c, intent=said[0], confidence=round(confidence, 4))
    for intent, probability in c.ranked[1:]:
        if _write_cue_ok(intent, text) and (intent in WRITE_CUES or probability >= MIN_CONFIDENCE):
            return replace(c, intent=intent, confidence=probability)
    return replace(c, intent="decline", confidence=0.0)


def _write_cue_ok(intent: str, text: str) -> bool:
    cue = WRITE_CUES.get(intent)
    if cue is None:
        return True
    if intent == "stop" and re.search(WRITE_CUES["start"], text, re.I) and not re.search(
            r"\b(stop|end|halt|pause|kill|shut|disable|conclude|roll(?:ing)? ?back)\b", text, re.I):
        return False  # "kick off" / "turn on": a start, whatever the classifier leans to
    return re.search(cue, text, re.I) is not None


def _accepted(c: Classification) -> bool:
    return c.intent != "decline" and c.confidence >= MIN_CONFIDENCE and c.similarity >= MIN_SIMILARITY


def _same(word: str, tag: str) -> bool:
    return any(similar(word, part) for part in words(tag))


def _named_metrics(ctx: _Context, key: str) -> tuple[list[str], list[str]]:
    """(the metrics the question names that the experiment has, all the experiment's metrics)."""
    own = list(dict.fromkeys(m["name"] for m in metric_specs(ctx.index.experiments.get(key) or {}) if m.get("name")))
    return [m for m in metrics_named(ctx.question, ctx.index.metric_names()) if m in own], own


def _improvement_filter(entities: Entities, field_: str) -> dict[str, Any] | None:
    where = []
    for p in entities.percents:
        if p.unit != "%":
            continue
        below = any(w in p.before[-20:] for w in _BELOW)
        where.append({field_: {"$lte" if below else "$gte": round(p.value / 100, 6)}})
    if not where:
        return None
    return where[0] if len(where) == 1 else {"$and": where}


def subject(text: str, entities: Entities) -> str:
    """The phrase to search for: quoted text, or the request minus its framing words and filters."""
    if entities.quoted:
        return entities.quoted
    head = re.split(r"\b(?:that|which|where|with|whose)\b[^%]*\d+(?:\.\d+)?\s*%", text, maxsplit=1)[0]
    head = re.sub(r"\d+(?:\.\d+)?\s*%", " ", head)
    head = re.sub(r"(?i)^\s*(?:please\s+)?(?:search|look up|look for|find)\b(?:\s+for)?", " ", head)
    kept = [w for w in words(head) if w not in STOPWORDS and w not in _SUBJECT_DROP]
    return " ".join(kept) or " ".join(content_words(text)) or text
