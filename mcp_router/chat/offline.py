"""Offline answering: no LLM, the router's `route_query` rules pick the tools.

Without ANTHROPIC_API_KEY (or with --offline) a question goes to the router's
own `route_query` tool (intent keywords + entities such as percentages,
periods, devices → planned tool calls, see mcp_router/query_routing.py); the
planned calls run through the same MCP client the agent uses, and their
structured results are shown as tables. The answer says plainly that it came
from rules, which tools ran with which arguments, and what came back; it does
not interpret beyond the numbers the tools returned.

One completion step is done here because it needs a tool call, not a rule: a
planned call that requires an experiment but got none from the question (e.g.
"our mobile onboarding experiment") is given the best semantic match from the
experiment memory, or the registry's substring search, and the answer says so.
"""

from __future__ import annotations

import time
from typing import Any

from mcp_router.chat.agent import ChatListener, TurnResult
from mcp_router.chat.tools import ToolBridge, ToolCall

OFFLINE_LABEL = "offline mode (no ANTHROPIC_API_KEY): answered by route_query rules, no LLM"
EXPERIMENT_PARAMS = ("experiment", "experiment_id", "experiment_key")
_FILLER = {"our", "the", "a", "an", "for", "of", "to", "in", "on", "experiment", "experiments", "test",
           "recommend", "optimization", "strategies", "strategy", "what", "show", "me", "how", "is", "doing"}


class OfflineAnswerer:
    def __init__(self, tools: ToolBridge, listener: ChatListener | None = None) -> None:
        self.tools = tools
        self.listener = listener or ChatListener()

    async def ask(self, question: str) -> TurnResult:
        started = time.perf_counter()
        turn = TurnResult(mode="offline", question=question, answer="", model=None)
        if "route_query" not in self.tools.names:
            turn.stop, turn.error = "error", "the router's route_query tool is not available"
            turn.answer = turn.error
            return turn
        plan_call = await self._run(turn, "route_query", {"query": question})
        if plan_call.is_error or not isinstance(plan_call.structured, dict):
            turn.stop, turn.error = "error", f"route_query failed: {plan_call.text}"
            turn.answer = turn.error
            return turn
        plan = plan_call.structured
        lines = [f"{OFFLINE_LABEL}.",
                 f"Intent: {plan['intent']} (confidence {plan['confidence']}); {plan['reason']}."]
        if plan.get("entities"):
            lines.append("Understood: " + "; ".join(f"{k} = {v}" for k, v in plan["entities"].items()) + ".")
        if not plan["calls"]:
            turn.stop = "no_plan"
            lines.append("No tool answers this question by the rules. Name an action (search similar, analyse, "
                         "recommend, segments, plan, predict, list) or set ANTHROPIC_API_KEY for the agent chat.")
        for planned in plan["calls"]:
            arguments = dict(planned["arguments"])
            note = await self._complete(planned["tool"], arguments, question, plan.get("entities", {}), turn)
            if note:
                lines.append(note)
            call = await self._run(turn, planned["tool"], arguments)
            lines.append(summarise(call))
        turn.answer = "\n".join(lines)
        turn.latency_ms = (time.perf_counter() - started) * 1000
        return turn

    async def _run(self, turn: TurnResult, tool: str, arguments: dict[str, Any]) -> ToolCall:
        self.listener.on_tool_call(tool, arguments)
        call = await self.tools.call(tool, arguments)
        turn.tool_calls.append(call)
        self.listener.on_tool_result(call)
        return call

    async def _complete(self, tool: str, arguments: dict[str, Any], question: str, entities: dict[str, Any],
                        turn: TurnResult) -> str | None:
        """Fill a required experiment argument the question named only in words."""
        schema = next((t.input_schema for t in self.tools.tools if t.name == tool), {}) or {}
        required = set(schema.get("required", []))
        param = next((p for p in EXPERIMENT_PARAMS if p in required and p not in arguments), None)
        if param is None:
            return None
        key, how = await self._find_experiment(question, turn)
        if key is None:
            return f"{tool} needs an experiment and none matched the question ({how})."
        arguments[param] = key
        return f"The experiment is taken to be {key!r} ({how})."

    async def _find_experiment(self, question: str, turn: TurnResult) -> tuple[str | None, str]:
        words = [w.strip("?.,!\"'").lower() for w in question.split()]
        words = [w for w in words if w and w not in _FILLER]
        phrase = " ".join(words)
        if "semantic_experiment_search" in self.tools.names and phrase:
            call = await self._run(turn, "semantic_experiment_search", {"query": phrase, "n_results": 3})
            hits = (call.structured or {}).get("hits") if not call.is_error else None
            if hits:
                top = hits[0]
                key = (top.get("metadata") or {}).get("key") or top["id"]
                return key, f"best semantic match for {phrase!r}, similarity {top['similarity']:.2f}"
        if "list_experiments" in self.tools.names:
            for word in sorted(words, key=len, reverse=True)[:3]:
                call = await self._run(turn, "list_experiments", {"search": word, "limit": 5})
                items = (call.structured or {}).get("items") if not call.is_error else None
                if items:
                    return items[0]["key"], f"registry search for {word!r}"
        return None, f"no experiment matched {phrase!r}"


def summarise(call: ToolCall) -> str:
    """One honest line about what a tool returned (the tables carry the detail)."""
    args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
    head = f"{call.tool}({args})"
    if call.is_error:
        return f"{head} failed: {call.text}"
    data = call.structured
    if not isinstance(data, dict):
        return f"{head} returned: {call.text[:300]}"
    from mcp_router.chat.render import main_records

    key, records = main_records(data)
    if key is not None or records:
        return f"{head} returned {len(records)} {key or 'records'}."
    return f"{head} returned {', '.join(sorted(data)[:8])}."
