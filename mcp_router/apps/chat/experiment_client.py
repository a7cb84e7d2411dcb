"""The chat as an experiment client: NeonBlue testing its own AI.

A prompt or model experiment in the registry decides, per user, which system
prompt and model the chat uses (the variant's config keys `system_prompt`,
`model`, and optionally `max_tokens`), exactly as any LLM app would use
NeonBlue: `get_variant` once per user (sticky), then `record_result` per turn.

Recorded per answered turn, for each metric the experiment declares:

- `latency_ms`: wall time from question to final answer, tool calls included;
- `input_tokens`, `output_tokens`: summed over the turn's API requests;
- `resolved` (1/0): the user's verdict when they give one (`/resolved`,
  `/unresolved` in the chat); otherwise a heuristic, stated plainly: 1 when the
  turn ended with an answer (no API error, no tool or token limit hit, not cut
  off by the response limit), else 0. The verdict for a turn is recorded when
  the next question arrives or the session closes, so a user's word replaces
  the heuristic instead of adding to it. The result's metadata says which
  (`"source": "user"` or `"heuristic"`).

Metrics the experiment does not declare are skipped with one notice (the
registry refuses undeclared metrics); every record carries an `event_id`, so a
retried write never counts twice.

When the router has the ClickHouse `ingest_events` tool, the same facts also go
to the event store (the user's exposure, then one `metric` event per recorded
value, with the same event ids), so the statistics engine
(`analyze_experiment_performance`) can judge the prompt experiment like any other.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mcp_router.apps.chat.agent import ChatAgent, TurnResult
from mcp_router.apps.chat.tools import ToolBridge

log = logging.getLogger("neonblue.chat.experiment")

CHAT_METRICS = ("resolved", "latency_ms", "input_tokens", "output_tokens")
LLM_TYPES = ("prompt", "model", "agent_config")


class ChatSetupError(RuntimeError):
    """The chat cannot start as asked (e.g. the experiment does not exist); the message says why."""


@dataclass
class Arm:
    """What the experiment serves this user."""

    experiment: str
    user_id: str
    in_experiment: bool
    variant: str | None
    system_prompt: str | None
    model: str | None
    max_tokens: int | None
    reason: str


@dataclass
class _Pending:
    turn: int
    resolved: bool


@dataclass
class ChatExperiment:
    """Per-user prompt/model choice from a registry experiment, and per-turn results back into it."""

    tools: ToolBridge
    experiment: str
    user_id: str
    attributes: dict[str, Any] | None = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    arm: Arm | None = None
    declared: set[str] = field(default_factory=set)
    notices: list[str] = field(default_factory=list)
    recorded: list[dict[str, Any]] = field(default_factory=list)
    _turns: int = 0
    _pending: _Pending | None = None
    _events: list[dict[str, Any]] = field(default_factory=list)

    async def enroll(self) -> Arm:
        """Assign the user (get_variant) and read which chat metrics the experiment declares."""
        for needed in ("get_variant", "record_result", "get_experiment"):
            if needed not in self.tools.names:
                raise ChatSetupError(f"--experiment needs the router's {needed} tool: the postgres server is "
                                     "not connected")
        detail = await self._call("get_experiment", {"experiment": self.experiment})
        metrics = [detail["primary_metric"], *detail.get("secondary_metrics", []), *detail.get("guardrail_metrics", [])]
        self.declared = {m["name"] if isinstance(m, dict) else str(m) for m in metrics}
        if detail.get("type") not in LLM_TYPES:
            self.notices.append(f"experiment {detail['key']!r} is a {detail.get('type')} experiment; only the "
                                "system_prompt/model keys of its variant configs affect the chat")
        missing = [m for m in CHAT_METRICS if m not in self.declared]
        if missing:
            self.notices.append(f"experiment {detail['key']!r} does not declare {', '.join(missing)}: not recorded "
                                "(add them as secondary metrics to collect them)")
        args: dict[str, Any] = {"experiment": self.experiment, "user_id": self.user_id}
        if self.attributes:
            args["attributes"] = self.attributes
        served = await self._call("get_variant", args)
        config = served.get("config") or {}
        self.arm = Arm(
            experiment=served["experiment_key"], user_id=self.user_id, in_experiment=bool(served["in_experiment"]),
            variant=served.get("variant_key"),
            system_prompt=config.get("system_prompt") if isinstance(config.get("system_prompt"), str) else None,
            model=config.get("model") if isinstance(config.get("model"), str) else None,
            max_tokens=config.get("max_tokens") if isinstance(config.get("max_tokens"), int) else None,
            reason=served.get("reason", ""),
        )
        if not self.arm.in_experiment:
            self.notices.append(f"user {self.user_id!r} is not in {self.arm.experiment!r} ({self.arm.reason}); "
                                "default prompt and model, nothing recorded")
        else:
            self._event("exposure", f"chat:{self.arm.experiment}:{self.user_id}:exposure",
                        segment=self._segment())
            await self._ship_events()
        return self.arm

    @property
    def mirrors_events(self) -> bool:
        return "ingest_events" in self.tools.names

    def _segment(self) -> dict[str, str] | None:
        attrs = self.attributes or {}
        segment = {k: str(attrs[k]) for k in ("device", "country", "source", "plan") if attrs.get(k) is not None}
        return segment or None

    def _event(self, event_type: str, event_id: str, **fields: Any) -> None:
        if not self.mirrors_events or self.arm is None:
            return
        if len(event_id) > 128:  # the event schema's identifier limit; long user ids are hashed
            event_id = "chat:" + hashlib.sha256(event_id.encode()).hexdigest()[:40]
        event = {"event_id": event_id, "event_type": event_type, "timestamp": datetime.now(UTC).isoformat(),
                 "user_id": self.user_id, "experiment_id": self.arm.experiment, "variant": self.arm.variant,
                 "session_id": self.session_id}
        event.update({k: v for k, v in fields.items() if v is not None})
        self._events.append(event)

    async def _ship_events(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        token = f"chat:{self.session_id}:{events[0]['event_id']}:{len(events)}"
        call = await self.tools.call("ingest_events", {"events": events, "idempotency_token": token})
        if call.is_error:
            message = f"could not store {len(events)} chat events for {self.user_id!r}: {call.text}"
            log.warning(message)
            self.notices.append(message)

    def apply(self, agent: ChatAgent) -> None:
        """Give the agent the variant's system prompt and model (defaults stay where the config is silent)."""
        agent.user_id = self.user_id
        if self.arm is None or self.arm.variant is None:
            return
        if self.arm.system_prompt:
            agent.system = self.arm.system_prompt
        if self.arm.model:
            agent.model = self.arm.model
        if self.arm.max_tokens:
            agent.limits = type(agent.limits)(**{**agent.limits.__dict__, "max_response_tokens": self.arm.max_tokens})

    @property
    def recording(self) -> bool:
        return self.arm is not None and self.arm.in_experiment

    async def record_turn(self, turn: TurnResult) -> None:
        """Record latency and tokens now; hold the resolved verdict until the user can still give theirs."""
        turn.variant = self.arm.variant if self.arm else None
        if not self.recording:
            return
        await self.flush()
        self._turns += 1
        n = self._turns
        await self._record("latency_ms", round(turn.latency_ms, 3), n, {"model": turn.model})
        await self._record("input_tokens", turn.usage.input_tokens, n, {"model": turn.model})
        await self._record("output_tokens", turn.usage.output_tokens, n, {"model": turn.model})
        self._pending = _Pending(n, resolved_heuristic(turn))
        await self._ship_events()

    async def mark(self, resolved: bool) -> bool:
        """The user's verdict on the last answer. False when there is no answer to judge."""
        if self._pending is None:
            return False
        pending, self._pending = self._pending, None
        await self._record("resolved", 1.0 if resolved else 0.0, pending.turn, {"source": "user"})
        await self._ship_events()
        return True

    async def flush(self) -> None:
        """Record the heuristic verdict of the last turn if the user gave none."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        await self._record("resolved", 1.0 if pending.resolved else 0.0, pending.turn, {"source": "heuristic"})
        await self._ship_events()

    async def _record(self, metric: str, value: float, turn: int, metadata: dict[str, Any]) -> None:
        if metric not in self.declared or self.arm is None:
            return
        args = {"experiment": self.arm.experiment, "user_id": self.user_id, "metric": metric, "value": float(value),
                "event_id": f"chat:{self.session_id}:{turn}:{metric}",
                "metadata": {**metadata, "session": self.session_id, "turn": turn, "variant": self.arm.variant}}
        call = await self.tools.call("record_result", args)
        if call.is_error:
            message = f"could not record {metric} for {self.user_id!r}: {call.text}"
            log.warning(message)
            self.notices.append(message)
            return
        self.recorded.append({"metric": metric, "value": float(value), "turn": turn})
        self._event("metric", args["event_id"], metric=metric, value=float(value))

    async def _call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        call = await self.tools.call(tool, args)
        if call.is_error or not isinstance(call.structured, dict):
            raise ChatSetupError(f"experiment {self.experiment!r}: {tool} failed: {call.text}")
        return call.structured


def resolved_heuristic(turn: TurnResult) -> bool:
    """1 when the turn ended with an answer within every limit and without an API error."""
    return turn.ok and turn.stop == "answered" and bool(turn.answer.strip())
