"""predict_user_behavior: the next action and outcome of a user's journey from the most similar stored journeys
of other users (kNN over embeddings; the voting is `behavior`), and its held-out evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.errors import InvalidInput, NotFound

from . import behavior
from .base import IntelligenceBase
from .models import BehaviorEvaluation, BehaviorPrediction, OutcomeVote

JOURNEY_CANDIDATES = 100  # nearest journeys retrieved before voting (the Chroma server's maximum)


class BehaviorPredictor(IntelligenceBase):
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
                                           where={"user_id": user_id}, limit=20))["hits"]
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
                                        limit=JOURNEY_CANDIDATES))["hits"]
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
