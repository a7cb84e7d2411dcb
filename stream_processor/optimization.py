"""The seeds' real-time optimization loop, made honest and bounded.

After a batch lands, every running experiment that received `experiment_metrics`
events (or, on a timer, every running experiment) is handed to the Experiment
Intelligence autopilot, which decides under the environment's policy (pause,
roll back, ship, reallocate, or ask a human) and writes the decision to the
audit trail. Each experiment is evaluated at most once per `min_interval`
seconds, so a busy topic cannot turn the loop into an analysis storm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ConfirmationRequired

log = logging.getLogger(__name__)

RunAutopilot = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass
class OptimizationLoop:
    run_autopilot: RunAutopilot
    min_interval: float = 60.0
    trigger_topics: tuple[str, ...] = ("experiment_metrics",)
    last_run: dict[str, float] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # most recent first, bounded
    errors: int = 0

    def due(self, key: str, now: float) -> bool:
        return now - self.last_run.get(key, float("-inf")) >= self.min_interval

    async def on_batch(self, touched: set[tuple[str, str]]) -> None:
        """Evaluate experiments whose metrics just arrived (the processor calls this after each commit-ready
        batch with the (topic, experiment key) pairs of its valid events)."""
        keys = {key for topic, key in touched if key and topic.rsplit(".", 1)[-1] in self.trigger_topics}
        await self.evaluate(sorted(keys))

    async def evaluate(self, keys: list[str]) -> None:
        now = time.monotonic()
        for key in keys:
            if not self.due(key, now):
                continue
            self.last_run[key] = now
            try:
                decision = await self.run_autopilot(key)
            except Exception as exc:  # noqa: BLE001 - the loop must not stop ingestion; router_status shows errors
                self.errors += 1
                log.warning("autopilot for %s failed: %s", key, exc)
                continue
            self.decisions.insert(0, {"experiment_key": key, **{k: decision.get(k) for k in (
                "action", "applied", "awaiting_confirmation")}})
            del self.decisions[50:]
            log.info("autopilot %s: %s (applied=%s)", key, decision.get("action"), decision.get("applied"))


def autopilot_via(backend: Any, standing_reason: str | None = None) -> RunAutopilot:
    """Run the autopilot through the router's intelligence backend (in-process or remote).

    An autopilot action changes traffic or stops an experiment, so a person confirms it
    (`mcp_servers.confirmation`); nobody watches this loop. With `standing_reason` (the operator set
    NEONBLUE_AUTOPILOT_UNATTENDED) the loop confirms with that reason, which the audit trail keeps.
    Without it, an action waiting for a person is recorded as a recommendation (a dry run), nothing
    changes, and the decision says `awaiting_confirmation`: run_autopilot from an agent or
    `neonblue call` carries it out once someone confirms."""

    async def run(key: str) -> dict[str, Any]:
        if standing_reason:
            return await backend.call("run_autopilot", {"experiment": key, "confirm": True, "reason": standing_reason})
        try:
            return await backend.call("run_autopilot", {"experiment": key})
        except ConfirmationRequired as waiting:
            log.warning("autopilot for %s waits for a person to confirm: %s", key, waiting.question)
            decision = await backend.call("run_autopilot", {"experiment": key, "dry_run": True})
            return {**decision, "awaiting_confirmation": True}

    return run
