"""Offline answering: no LLM, the router's `route_query` rules pick the tools.

Without ANTHROPIC_API_KEY (or with --offline) a question goes to the router's
own `route_query` tool (intent keywords + entities such as percentages,
periods, devices → planned tool calls, see mcp_router/gateway/query_routing.py); the
planned calls run through the same MCP client the agent uses, and their
structured results are shown as tables. The answer says plainly that it came
from rules, which tools ran with which arguments, and what came back; it does
not interpret beyond the numbers the tools returned.

One completion step is done here because it needs tool calls, not rules: a
planned call that requires an experiment the question named only in words
gets it from a lookup, and the answer says how:
- "our mobile onboarding experiment" (one): the best semantic match in the
  experiment memory, else the registry's substring search;
- "pricing experiments" (several): the registry's experiments matching the
  topic (up to MAX_FAN_OUT), each queried, results combined.
"""

from __future__ import annotations

import re
import time
from typing import Any

from mcp_router.apps.chat.agent import ChatListener, TurnResult
from mcp_router.apps.chat.tools import ToolBridge, ToolCall

OFFLINE_LABEL = "offline mode (no ANTHROPIC_API_KEY): answered by route_query rules, no LLM"
EXPERIMENT_PARAMS = ("experiment",)
MAX_FAN_OUT = 5
_SAFE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")  # an experiment key that may appear in SQL as a literal
_FILLER = {"our", "the", "a", "an", "for", "of", "to", "in", "on", "experiment", "experiments", "test", "tests",
           "recommend", "optimization", "optimisation", "strategies", "strategy", "what", "show", "me", "how",
           "is", "doing", "which", "user", "users", "segments", "segment", "responded", "best", "last", "quarter",
           "month", "week", "did", "do", "does", "my", "with", "and", "that", "by"}


class OfflineAnswerer:
    def __init__(self, tools: ToolBridge, listener: ChatListener | None = None) -> None:
        self.tools = tools
        self.listener = listener or ChatListener()
        self.directions: dict[str, str] = {}  # experiment key -> its primary metric's better direction

    async def ask(self, question: str) -> TurnResult:
        started = time.perf_counter()
        turn = TurnResult(mode="offline", question=question, answer="", model=None)
        lines = [f"{OFFLINE_LABEL}."]
        try:
            await self._answer(question, turn, lines)
        finally:
            turn.answer = "\n".join(lines)
            turn.latency_ms = (time.perf_counter() - started) * 1000
        return turn

    async def _answer(self, question: str, turn: TurnResult, lines: list[str]) -> None:
        if "route_query" not in self.tools.names:
            turn.stop, turn.error = "error", "the router's route_query tool is not available"
            lines.append(turn.error)
            return
        plan_call = await self._run(turn, "route_query", {"query": question})
        if plan_call.is_error or not isinstance(plan_call.structured, dict):
            turn.stop, turn.error = "error", f"route_query failed: {plan_call.text}"
            lines.append(turn.error)
            return
        plan = plan_call.structured
        entities = plan.get("entities") or {}
        lines.append(f"Intent: {plan['intent']} (confidence {plan['confidence']}); {plan['reason']}.")
        if entities:
            lines.append("Understood: " + "; ".join(f"{k} = {v}" for k, v in entities.items()) + ".")
        if not plan["calls"]:
            turn.stop = "no_plan"
            lines.append("No tool answers this question by the rules. Name an action (search similar, analyse, "
                         "recommend, segments, plan, predict, list) or set ANTHROPIC_API_KEY for the agent chat.")
            return
        for planned in plan["calls"]:
            tool, base = planned["tool"], dict(planned["arguments"])
            param = self._missing_experiment_param(tool, base)
            if param is None:
                lines.extend(summarise_many([await self._run(turn, tool, base)]))
                continue
            keys, how = await self._experiments_for(question, entities, turn)
            if not keys:
                lines.append(f"{tool} needs an experiment and none matched the question ({how}).")
                continue
            lines.append(f"Experiments: {', '.join(keys)} ({how}).")
            calls = []
            for key in keys:
                arguments = {**base, param: key}
                if "metrics" in self._required(tool) and "metrics" not in arguments:
                    metric, source = await self._metric_of(key, turn)
                    if metric is None:
                        lines.append(f"{key}: no metric to compare ({source}).")
                        continue
                    arguments["metrics"] = [metric]
                    lines.append(f"{key}: comparing {metric} ({source}).")
                calls.append(await self._run(turn, tool, arguments))
            lines.extend(summarise_many(calls, self.directions))

    async def _run(self, turn: TurnResult, tool: str, arguments: dict[str, Any]) -> ToolCall:
        self.listener.on_tool_call(tool, arguments)
        call = await self.tools.call(tool, arguments)
        turn.tool_calls.append(call)
        self.listener.on_tool_result(call)
        return call

    def _required(self, tool: str) -> set[str]:
        schema = next((t.input_schema for t in self.tools.tools if t.name == tool), None) or {}
        return set(schema.get("required", []))

    def _missing_experiment_param(self, tool: str, arguments: dict[str, Any]) -> str | None:
        required = self._required(tool)
        return next((p for p in EXPERIMENT_PARAMS if p in required and p not in arguments), None)

    async def _metric_of(self, key: str, turn: TurnResult) -> tuple[str | None, str]:
        """The experiment's primary metric from the registry, else the metric its events carry most."""
        if "get_experiment" in self.tools.names:
            call = await self._run(turn, "get_experiment", {"experiment": key})
            if not call.is_error and isinstance(call.structured, dict):
                primary = call.structured["primary_metric"]
                self.directions[key] = primary.get("direction", "higher")
                return primary["name"], "the registry's primary metric"
        if "clickhouse_query" in self.tools.names and _SAFE_KEY.match(key):
            sql = (f"SELECT metric, count() AS events FROM events WHERE experiment_id = '{key}' "
                   "AND metric != '' GROUP BY metric ORDER BY events DESC LIMIT 1")
            call = await self._run(turn, "clickhouse_query", {"sql": sql})
            rows = (call.structured or {}).get("rows") if not call.is_error else None
            if rows:
                return rows[0][0], "the metric its events carry most (no registry entry)"
        return None, "not in the registry and no metric events"

    async def _experiments_for(self, question: str, entities: dict[str, Any],
                               turn: TurnResult) -> tuple[list[str], str]:
        """The experiment(s) a question names in words, and how they were found."""
        words = [w for w in re.findall(r"[a-z0-9]+", question.lower()) if w not in _FILLER]
        phrase = " ".join(words)
        several = re.search(r"\bexperiments\b", question.lower()) is not None
        topics = entities.get("topics") or words[:3]
        if several and "list_experiments" in self.tools.names:
            found: list[str] = []
            for topic in topics:
                call = await self._run(turn, "list_experiments", {"search": topic, "limit": MAX_FAN_OUT})
                found += [i["key"] for i in (call.structured or {}).get("items", []) if not call.is_error]
            keys = list(dict.fromkeys(found))[:MAX_FAN_OUT]
            if keys:
                return keys, f"registry experiments matching {' / '.join(topics)!r}"
        if "semantic_experiment_search" in self.tools.names and phrase:
            call = await self._run(turn, "semantic_experiment_search", {"query": phrase, "limit": 3})
            hits = (call.structured or {}).get("hits") if not call.is_error else None
            if hits:
                top = hits[0]
                key = (top.get("metadata") or {}).get("experiment_key") or top["id"]
                return [key], f"best semantic match for {phrase!r}, similarity {top['similarity']:.2f}"
        if "list_experiments" in self.tools.names:
            for word in sorted(words, key=len, reverse=True)[:3]:
                call = await self._run(turn, "list_experiments", {"search": word, "limit": 1})
                items = (call.structured or {}).get("items") if not call.is_error else None
                if items:
                    return [items[0]["key"]], f"registry search for {word!r}"
        return [], f"no experiment matched {phrase!r}"


# ---------------------------------------------------------------- summaries


def _pct(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:+.1f}%"


def _head(call: ToolCall) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
    return f"{call.tool}({args})"


def _hit_line(hit: dict[str, Any]) -> str:
    meta = hit.get("metadata") or {}
    facts = []
    if meta.get("lift") is not None:
        facts.append(f"lift {_pct(meta['lift'])}")
    if meta.get("improvement") is not None:
        facts.append(f"improvement {meta['improvement'] * 100:+g}%")
    for name in ("outcome", "primary_metric", "optimization_type", "winner"):
        if meta.get(name):
            facts.append(f"{name.replace('_', ' ')} {meta[name]}")
    facts.append(f"similarity {hit['similarity']:.2f}")
    return f"  - {meta.get('experiment_key') or hit['id']}: {', '.join(facts)}"


def summarise(call: ToolCall) -> str:
    """Honest lines about what one tool returned (the tables carry the detail)."""
    head = _head(call)
    if call.is_error:
        return f"{head} failed: {call.text}"
    data = call.structured
    if not isinstance(data, dict):
        return f"{head} returned: {call.text[:300]}"
    if isinstance(data.get("hits"), list):
        hits = data["hits"]
        if not hits:
            return f"{head} found nothing that matches."
        return "\n".join([f"{head} found {len(hits)}, most similar first:", *(_hit_line(h) for h in hits[:5])])
    if isinstance(data.get("actions"), list):  # ranked recommendations
        verdict = data.get("verdict")
        verdict = verdict.get("verdict") if isinstance(verdict, dict) else verdict
        lines = [f"{head}: verdict {verdict}, {len(data['actions'])} actions, most urgent first:"]
        for action in data["actions"][:5]:
            patterns = ", ".join(p.get("id") or p.get("pattern_id") or "?" for p in action.get("supporting_patterns", []))
            lines.append(f"  {action['rank']}. {action['action']}{' ' + action['variant'] if action.get('variant') else ''}: "
                         f"{action['title']} (confidence {action['confidence']:.2f})"
                         + (f"; similar patterns: {patterns}" if patterns else ""))
            lines.append(f"     {action['reasoning']}")
        return "\n".join(lines)
    lists = {k: v for k, v in data.items() if isinstance(v, list)}
    if lists:
        key = max(lists, key=lambda k: len(lists[k]))
        return f"{head} returned {len(lists[key])} {key}."
    return f"{head} returned {', '.join(sorted(data)[:8])}."


def summarise_many(calls: list[ToolCall], directions: dict[str, str] | None = None) -> list[str]:
    """Per-call lines; segment breakdowns (of one or several experiments) are ranked together,
    best first: the largest z-score in the direction that is better for the metric."""
    directions = directions or {}
    lines = []
    for call in calls:
        cells = _segments(call)
        lines.append(summarise(call) if call.is_error or not cells else
                     f"{_head(call)} returned {len(cells)} segment differences "
                     f"({_experiment_of(call)}, window {call.structured.get('window_start', '?')} to "
                     f"{call.structured.get('window_end', '?')}).")

    def goodness(cell_call: tuple[dict[str, Any], ToolCall]) -> float:
        cell, call = cell_call
        sign = -1.0 if directions.get(_experiment_of(call)) == "lower" else 1.0
        return sign * cell.get("z_score", 0.0)

    ranked = sorted(((d, c) for c in calls for d in _segments(c)), key=goodness, reverse=True)
    ranked = [dc for dc in ranked if goodness(dc) > 0]
    if ranked:
        lines.append("Segments that responded best (largest z-score of the difference vs control, "
                     "in the metric's better direction):")
        for cell, call in ranked[:5]:
            lines.append(
                f"  - {cell['dimension']}={cell['segment']} in {_experiment_of(call)}: {cell['metric']} "
                f"{cell['control_mean']:.4g} → {cell['variant_mean']:.4g} for {cell['variant']} "
                f"({_pct(cell.get('relative_lift'))}, z {cell['z_score']:.1f}, "
                f"{cell['variant_users']} vs {cell['control_users']} users)")
    elif any(_segments(c) for c in calls):
        lines.append("No segment did better than its control.")
    return lines


def _experiment_of(call: ToolCall) -> str:
    return next((str(v) for k, v in call.arguments.items() if k in EXPERIMENT_PARAMS), "?")


def _segments(call: ToolCall) -> list[dict[str, Any]]:
    data = call.structured if isinstance(call.structured, dict) and not call.is_error else {}
    return list(data.get("segment_differences") or [])
