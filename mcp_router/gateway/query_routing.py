"""route_query: natural-language request → server, tool and arguments, offline.

Rules find the intent (search similar / analyse / recommend / predict /
segments / plan / SQL numbers / list), entities are pulled out with regular
expressions (experiment keys, percentages, periods, devices), and the plan
names only tools that exist in the live catalogue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field


class PlannedCall(BaseModel):
    tool: str
    server: str
    arguments: dict[str, Any]


class RoutePlan(BaseModel):
    intent: str
    calls: list[PlannedCall] = Field(description="Tool calls that answer the request, in order.")
    entities: dict[str, Any]
    reason: str
    confidence: float = Field(ge=0, le=1, description="Share of intent keywords matched, 0..1.")


@dataclass(frozen=True)
class Intent:
    name: str
    keywords: tuple[str, ...]
    tools: tuple[str, ...]  # first one present in the catalogue wins


INTENTS = (
    Intent("search_similar", ("similar", "like our", "past experiment", "find experiment", "search", "related"),
           ("semantic_experiment_search",)),
    Intent("recommend", ("recommend", "optimi", "strateg", "what should", "improve", "next step"),
           ("recommend_experiment_optimization", "search_optimization_patterns")),
    Intent("segments", ("segment", "responded best", "which users", "breakdown", "cohort"),
           ("generate_analytics_insights",)),
    Intent("predict", ("predict", "forecast", "will it", "trend", "expected outcome"),
           ("predict_experiment_outcome", "predict_experiment_trends")),
    Intent("plan", ("plan", "sample size", "how long", "how many users", "design"),
           ("plan_experiment",)),
    Intent("analyze", ("analy", "result", "significan", "winner", "lift", "p-value", "how is", "perform"),
           ("analyze_experiment_performance", "analyze_experiment_data")),
    Intent("numbers", ("how many", "count", "sum of", "average", "total", "sql"),
           ("clickhouse_query",)),
    Intent("list", ("list", "show all", "running experiments", "which experiments"),
           ("list_experiments",)),
)

_KEY = re.compile(r"\b([a-z0-9]+(?:[-_][a-z0-9]+)+)\b")
_PERCENT = re.compile(r"(more than|over|above|at least|>=?|less than|under|below)?\s*(\d+(?:\.\d+)?)\s*%")
_QUOTED = re.compile(r"[\"“']([^\"”']{3,80})[\"”']")
_DEVICES = ("mobile", "desktop", "tablet")


def _period(text: str, today: date) -> dict[str, str] | None:
    if "last quarter" in text:
        q = (today.month - 1) // 3
        year, q = (today.year - 1, 4) if q == 0 else (today.year, q)
        start = date(year, 3 * (q - 1) + 1, 1)
        end = date(year + (q == 4), (3 * q) % 12 + 1, 1) - timedelta(days=1)
        return {"date_from": start.isoformat(), "date_to": end.isoformat()}
    m = re.search(r"last (\d+) days", text)
    if m:
        return {"date_from": (today - timedelta(days=int(m.group(1)))).isoformat(), "date_to": today.isoformat()}
    if "last month" in text:
        return {"date_from": (today - timedelta(days=30)).isoformat(), "date_to": today.isoformat()}
    return None


def extract_entities(query: str, today: date | None = None) -> dict[str, Any]:
    text = query.lower()
    entities: dict[str, Any] = {}
    keys = [k for k in _KEY.findall(text) if not k.replace("-", "").isdigit()]
    if keys:
        entities["experiment_keys"] = keys
    if (m := _PERCENT.search(text)) is not None:
        op = (m.group(1) or "").strip()
        entities["min_improvement_pct" if op not in ("less than", "under", "below") else "max_improvement_pct"] = (
            float(m.group(2))
        )
    if (period := _period(text, today or datetime.now(UTC).date())) is not None:
        entities["period"] = period
    devices = [d for d in _DEVICES if d in text]
    if devices:
        entities["device"] = devices[0]
    for topic in ("checkout", "pricing", "onboarding", "prompt", "model", "search", "signup", "retention"):
        if topic in text:
            entities.setdefault("topics", []).append(topic)
    if (q := _QUOTED.search(query)) is not None:
        entities["quoted"] = q.group(1)
    return entities


def _subject(query: str, entities: dict[str, Any]) -> str:
    """The phrase to search for: quoted text, or the request minus its framing words."""
    if "quoted" in entities:
        return entities["quoted"]
    text = re.sub(r"(?i)\b(show|find|me|give|list|please|experiments?|similar|to|our|that|which|the|a|an|"
                  r"increased|more than|by|with|for|recommend|optimization strategies)\b", " ", query)
    text = _PERCENT.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip(" ?.,") or query


def plan_query(query: str, catalogue: Any, today: date | None = None) -> RoutePlan:
    text = query.lower()
    entities = extract_entities(query, today)
    scored = []
    for rank, intent in enumerate(INTENTS):
        hits = [k for k in intent.keywords if k in text]
        if hits:
            scored.append((len(hits), -rank, intent, hits))
    if not scored:
        return RoutePlan(intent="unknown", calls=[], entities=entities, confidence=0.0,
                         reason="no intent keyword matched; try naming an action (analyse, search, recommend, plan)")
    scored.sort(reverse=True)
    hit_count, _, intent, hits = scored[0]
    tool = next((t for t in intent.tools if t in catalogue.tools), None)
    if tool is None:
        return RoutePlan(intent=intent.name, calls=[], entities=entities, confidence=0.0,
                         reason=f"intent {intent.name} needs one of {list(intent.tools)}, none is in the catalogue")
    args = _arguments(intent.name, tool, query, entities, catalogue)
    server = catalogue.routes[tool].backend.name
    return RoutePlan(
        intent=intent.name,
        calls=[PlannedCall(tool=tool, server=server, arguments=args)],
        entities=entities,
        confidence=round(min(1.0, hit_count / 2), 2),
        reason=f"matched {hits} → {intent.name}; {tool} on {server}",
    )


# Which metadata field a search tool filters an improvement on, and the factor from percent to its unit
# (mcp_servers/chroma: experiments carry `lift`, patterns `improvement`, both fractions).
IMPROVEMENT_FILTERS: dict[str, tuple[str, float]] = {
    "semantic_experiment_search": ("lift", 0.01),
    "search_optimization_patterns": ("improvement", 0.01),
}
_STATUSES = ("running", "draft", "stopped", "concluded", "archived")


def _arguments(intent: str, tool: str, query: str, entities: dict[str, Any], catalogue: Any) -> dict[str, Any]:
    props = set(catalogue.tools[tool].input_schema.get("properties", {}))
    args: dict[str, Any] = {}
    key = (entities.get("experiment_keys") or [None])[0]
    if key:
        if "experiment" in props:  # every tool's experiment argument (schemas/vocabulary.py)
            args["experiment"] = key
    if "query" in props:
        args["query"] = _subject(query, entities)
    if "where" in props:
        where: list[dict[str, Any]] = []
        field, per_percent = IMPROVEMENT_FILTERS.get(tool, ("improvement", 0.01))
        if "min_improvement_pct" in entities:
            where.append({field: {"$gte": round(entities["min_improvement_pct"] * per_percent, 6)}})
        if "max_improvement_pct" in entities:
            where.append({field: {"$lte": round(entities["max_improvement_pct"] * per_percent, 6)}})
        if "device" in entities and intent == "search_similar":
            pass  # the device is part of the query text; metadata may not carry it
        if where:
            args["where"] = where[0] if len(where) == 1 else {"$and": where}
    if intent == "list" and "status" in props:
        statuses = [status for status in _STATUSES if status in query.lower()]
        if statuses:
            args["status"] = statuses
    if "period" in entities:
        # Tools name their window date_from/date_to or start_date/end_date (ClickHouse).
        for start, end in (("date_from", "date_to"), ("start_date", "end_date")):
            if start in props and end in props:
                args[start], args[end] = entities["period"]["date_from"], entities["period"]["date_to"]
    return args
