"""Offline answering: no LLM; the router's `route_query` plans the calls, this runs them.

Without ANTHROPIC_API_KEY (or with --offline) a question goes to the router's `route_query` tool
(intent by meaning with a calibrated confidence, entities resolved against the live data,
arguments validated against each tool's schema; see mcp_router/gateway/nl/). Then:

- a plan with calls: they run through the same MCP client the agent uses (a later step's argument
  bound to an earlier result is filled in first), and the answer says what ran, what was assumed,
  and what came back: names, verdicts and numbers from the results (`facts.py`), nothing more;
- a plan that needs a value the question did not give (which experiment? which user?): chat asks
  for it and the next line completes the question; `ask` says what is missing and fails;
- a write (start, stop, archive, create): never run from a question; the answer shows the exact
  `neonblue call` command that would do it;
- a declined question ("I can't answer that offline"): the closest things it can answer.

`turn.error` is set whenever the question was not answered, so `neonblue ask` exits non-zero.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from mcp_router.apps.chat.agent import ChatListener, TurnResult
from mcp_router.apps.chat.facts import facts, pct, sentence
from mcp_router.apps.chat.tools import ToolBridge, ToolCall

OFFLINE_LABEL = ("offline mode (no ANTHROPIC_API_KEY): answered by route_query (intent by meaning, entities from "
                 "your data), no LLM")
EXPERIMENT_PARAMS = ("experiment",)
# A short reply to a question that asked for a value completes the pending question.
MAX_REPLY_WORDS = 8


class OfflineAnswerer:
    def __init__(self, tools: ToolBridge, listener: ChatListener | None = None) -> None:
        self.tools = tools
        self.listener = listener or ChatListener()
        self.pending: str | None = None  # a question waiting for a missing value (chat)
        self.data: list[dict[str, Any]] = []  # key facts of the last answer, for --json

    async def ask(self, question: str) -> TurnResult:
        started = time.perf_counter()
        turn = TurnResult(mode="offline", question=question, answer="", model=None)
        lines = [f"{OFFLINE_LABEL}."]
        self.data = []
        asked = question
        if self.pending is not None and len(question.split()) <= MAX_REPLY_WORDS:
            asked = f"{self.pending} {question}"
        self.pending = None
        try:
            await self._answer(asked, turn, lines)
        finally:
            turn.data = self.data
            turn.answer = "\n".join(lines)
            turn.latency_ms = (time.perf_counter() - started) * 1000
        return turn

    async def _answer(self, question: str, turn: TurnResult, lines: list[str]) -> None:
        plan_call = await self._run(turn, "route_query", {"query": question})
        if plan_call.is_error or not isinstance(plan_call.structured, dict):
            turn.stop, turn.error = "error", f"route_query failed: {plan_call.text}"
            lines.append(turn.error)
            return
        plan = plan_call.structured
        if not plan["calls"] and plan["intent"] == "unknown":
            turn.stop, turn.error = "no_plan", plan["reason"]
            lines.append(plan["reason"] + ".")
            if plan.get("alternatives"):
                lines.append("What I can answer offline, closest first:")
                lines.extend(f"  - {alternative}" for alternative in plan["alternatives"])
            lines.append("Set ANTHROPIC_API_KEY for the agent chat, which can combine any of the tools.")
            return
        lines.append(f"Understood: {plan['reason']}.")
        resolved = {k: v for k, v in (plan.get("entities") or {}).items()}
        if resolved.get("resolved"):
            lines.append(f"Experiments: {resolved['resolved']}.")
        for assumption in plan.get("assumptions") or []:
            lines.append(f"Assumed: {assumption}.")
        if plan.get("missing"):
            turn.stop = "needs_input"
            turn.error = "cannot answer without: " + "; ".join(plan["missing"])
            self.pending = question
            lines.append("To answer, I need " + "; and ".join(plan["missing"]) + " — reply with it.")
            return
        if plan.get("writes"):
            turn.stop = "not_run"
            turn.error = "a change to your experiments is never made from a question; run the command shown"
            lines.append("This changes your experiments, so it is not done from a question. To do it:")
            for planned in plan["calls"]:
                lines.append(f"  neonblue call {planned['tool']} {shlex.quote(json.dumps(planned['arguments']))}")
            return
        calls: list[ToolCall] = []
        for planned in plan["calls"]:
            arguments = dict(planned["arguments"])
            unresolved = self._bind(planned.get("bind") or {}, calls, arguments)
            if unresolved:
                lines.append(f"{planned['tool']} not run: {unresolved}.")
                continue
            calls.append(await self._run(turn, planned["tool"], arguments))
        self.data = [{"tool": c.tool, "arguments": c.arguments, **({"error": c.text} if c.is_error else facts(c))}
                     for c in calls]
        lines.extend(summarise_many(calls, resolved.get("directions") or {}))
        if not calls or all(c.is_error for c in calls):
            turn.stop = "error"
            turn.error = "; ".join(c.text for c in calls if c.is_error)[:500] or "no call could run"

    @staticmethod
    def _bind(bind: dict[str, str], done: list[ToolCall], arguments: dict[str, Any]) -> str | None:
        """Fill `arguments` from earlier results ('step N: a.0.b'); the reason when one cannot be."""
        for name, ref in bind.items():
            step, _, path = ref.partition(":")
            index = int(step.split()[-1]) - 1
            if index >= len(done) or done[index].is_error:
                return f"step {index + 1} gave no result for {name}"
            value: Any = done[index].structured
            for part in path.strip().split("."):
                if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                    value = value[int(part)]
                elif isinstance(value, dict) and part in value:
                    value = value[part]
                else:
                    return f"no {name} in step {index + 1}'s result (nothing matched)"
            arguments[name] = value
        return None

    async def _run(self, turn: TurnResult, tool: str, arguments: dict[str, Any]) -> ToolCall:
        self.listener.on_tool_call(tool, arguments)
        call = await self.tools.call(tool, arguments)
        turn.tool_calls.append(call)
        self.listener.on_tool_result(call)
        return call


# ---------------------------------------------------------------- summaries


def _head(call: ToolCall) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
    return f"{call.tool}({args})"


def summarise(call: ToolCall) -> str:
    """What one call returned, in words made from its result's key data."""
    return f"{_head(call)}: {sentence(call)}" if call.is_error else f"{_head(call)} → {sentence(call)}"


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
                f"({pct(cell.get('relative_lift'))}, z {cell['z_score']:.1f}, "
                f"{cell['variant_users']} vs {cell['control_users']} users)")
    elif any(_segments(c) for c in calls):
        lines.append("No segment did better than its control.")
    return lines


def _experiment_of(call: ToolCall) -> str:
    return next((str(v) for k, v in call.arguments.items() if k in EXPERIMENT_PARAMS), "?")


def _segments(call: ToolCall) -> list[dict[str, Any]]:
    data = call.structured if isinstance(call.structured, dict) and not call.is_error else {}
    return list(data.get("segment_differences") or [])
