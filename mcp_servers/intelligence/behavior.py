"""Next action and outcome by k-nearest journeys: pure voting and scoring, no I/O.

The candidates are the stored journeys most similar to the user's current path
(cosine similarity of their sentence embeddings, from the Chroma server). The
voters are the candidates that went through exactly the user's steps so far
(whether they continued or ended there), or, when fewer than MIN_CONSISTENT
did, the nearest candidates. Each voter weighs its similarity:

* next action: the step that followed the user's current last step in the
  neighbour's path (the occurrence aligned closest to the user's position);
  "(end)" when the neighbour's session ended there; neighbours that never
  visited that step do not vote;
* outcome: the neighbour's recorded conversion outcome.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

END = "(end)"
MIN_CONSISTENT = 3  # voters needed among journeys with exactly the user's steps before falling back


@dataclass(frozen=True)
class NeighbourJourney:
    steps: tuple[str, ...]
    outcome: str | None
    similarity: float


@dataclass(frozen=True)
class Vote:
    label: str
    probability: float
    neighbours: int


def next_step(current: Sequence[str], steps: Sequence[str]) -> str | None:
    """What followed `current[-1]` in `steps`, aligned to the user's position; None if never visited."""
    if not current:
        return steps[0] if steps else None
    last, position = current[-1], len(current) - 1
    hits = [i for i, s in enumerate(steps) if s == last]
    if not hits:
        return None
    i = min(hits, key=lambda j: (abs(j - position), -j))
    return steps[i + 1] if i + 1 < len(steps) else END


def _tally(labels: Sequence[tuple[str, float]]) -> list[Vote]:
    weight: dict[str, float] = defaultdict(float)
    count: Counter[str] = Counter()
    for label, w in labels:
        weight[label] += max(w, 1e-6)
        count[label] += 1
    total = sum(weight.values())
    votes = [Vote(label, weight[label] / total, count[label]) for label in weight]
    votes.sort(key=lambda v: (-v.probability, v.label))
    return votes


def next_step_votes(current: Sequence[str], neighbours: Sequence[NeighbourJourney]) -> list[Vote]:
    labels = []
    for n in neighbours:
        step = next_step(current, n.steps)
        if step is not None:
            labels.append((step, n.similarity))
    return _tally(labels)


def outcome_votes(neighbours: Sequence[NeighbourJourney]) -> list[Vote]:
    return _tally([(n.outcome, n.similarity) for n in neighbours if n.outcome])


def accuracy(predicted: Sequence[str | None], actual: Sequence[str]) -> float:
    if not actual:
        return 0.0
    return sum(p == a for p, a in zip(predicted, actual, strict=True)) / len(actual)


def majority_baseline(actual: Sequence[str]) -> float:
    """Accuracy of always answering the most common label (an upper bound for any constant guess)."""
    if not actual:
        return 0.0
    return Counter(actual).most_common(1)[0][1] / len(actual)


# ---------------------------------------------------------------- synthetic journeys (for measuring accuracy)

_INTENTS: dict[str, dict] = {
    # intent: (paths with weights, outcome per path end, devices)
    "buyer": {"paths": [(["landing_page", "search", "product_detail", "add_to_cart", "checkout", "payment", "purchase"], 5),
                        (["landing_page", "category", "product_detail", "product_detail", "add_to_cart", "checkout",
                          "payment", "purchase"], 3),
                        (["landing_page", "search", "product_detail", "add_to_cart", "checkout", "payment"], 2)],
              "outcome": {"purchase": "purchased", "payment": "abandoned_cart"}},
    "researcher": {"paths": [(["landing_page", "blog", "pricing", "docs", "signup"], 5),
                             (["landing_page", "pricing", "docs", "pricing", "signup"], 3),
                             (["landing_page", "blog", "pricing", "docs"], 2)],
                   "outcome": {"signup": "signed_up", "docs": "bounced"}},
    "browser": {"paths": [(["landing_page", "category", "product_detail", "category", "product_detail"], 5),
                          (["landing_page", "category", "category", "product_detail"], 3),
                          (["landing_page", "category"], 2)],
                "outcome": {"product_detail": "bounced", "category": "bounced"}},
    "support": {"paths": [(["landing_page", "help_center", "faq", "contact_support"], 5),
                          (["landing_page", "account", "help_center", "contact_support"], 3),
                          (["landing_page", "help_center", "faq"], 2)],
                "outcome": {"contact_support": "support_ticket", "faq": "self_served"}},
}
_DEVICES = ("mobile", "desktop", "tablet")


def with_random_cuts(journeys: list[dict], seed: int = 0) -> list[dict]:
    """Each journey with a `cut` uniform over 1..len: the prefix an in-session prediction sees
    (cut = len: the session ended, the true next action is END)."""
    import random

    rng = random.Random(seed)
    return [{**j, "cut": rng.randint(1, len(j["steps"]))} for j in journeys]


def synthetic_journeys(n: int, seed: int = 0, prefix: str = "user") -> list[dict]:
    """`n` journeys (JourneyRecord-shaped dicts) from four intents with known paths and outcomes.

    Each intent has a few typical paths; the outcome follows from where the path
    ends. A third of journeys drop one middle step, so neighbours are similar
    rather than identical. Used by the tests and the bench to measure held-out accuracy.
    """
    import random

    rng = random.Random(seed)
    intents = list(_INTENTS)
    out = []
    for i in range(n):
        intent = _INTENTS[intents[rng.randrange(len(intents))]]
        paths, weights = zip(*intent["paths"], strict=True)
        steps = list(rng.choices(paths, weights=weights)[0])
        if len(steps) > 4 and rng.random() < 1 / 3:
            del steps[rng.randrange(1, len(steps) - 2)]
        out.append({"journey_id": f"{prefix}-{seed}-{i:05d}", "user_id": f"{prefix}-{seed}-{i:05d}",
                    "steps": steps, "device_type": rng.choice(_DEVICES),
                    "session_duration_s": float(rng.randint(30, 1800)),
                    "conversion_outcome": intent["outcome"][steps[-1]]})
    return out
