"""What every intelligence capability shares: the peers, the settings and policy, and the audit trail.

Each capability (performance, recommendations, traffic, autopilot, outcome, planner, journeys,
plotting) is a class over this base; `service.IntelligenceService` composes them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from schemas.settings import Settings

from .decisions import POLICIES, AutopilotPolicy
from .models import SimilarExperiment
from .peers import Peers, ToolBackend

ACTOR = "intelligence"
AUTOPILOT_ACTOR = "autopilot"


def rounded(x: Any, digits: int = 6) -> Any:
    """Floats rounded (non-finite ones become None), through dicts and lists: what the audit trail stores."""
    if isinstance(x, float):
        return round(x, digits) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [rounded(v, digits) for v in x]
    return x


def payload_digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class IntelligenceBase:
    """The state the capabilities share; no tool of its own."""

    def __init__(self, backends: Mapping[str, ToolBackend], settings: Settings | None = None, *,
                 policy: AutopilotPolicy | None = None) -> None:
        self.peers = Peers(backends)
        self.settings = settings or Settings()
        self.policy = policy or POLICIES[self.settings.environment]
        self.behavior_accuracy: dict[str, Any] | None = None  # last held-out evaluation in this process
        # Similar past experiments per search text: memory changes slowly and an agent re-analyses often.
        self._similar_cache: dict[tuple[str, int], tuple[float, list[SimilarExperiment]]] = {}

    async def _record(self, key: str, action: str, reasoning: str, inputs: dict[str, Any], confidence: float | None,
                      actor: str, applied: bool, *, dedupe: bool = True) -> int | None:
        """Append to the decisions table; an unapplied decision identical to the latest of its kind is not repeated."""
        inputs = rounded(inputs)
        digest = payload_digest({"action": action, "inputs": inputs})
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
