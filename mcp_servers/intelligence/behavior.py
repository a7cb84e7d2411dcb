"""Next action and outcome by k-nearest journeys: pure voting and scoring, no I/O.

The neighbours are the stored journeys most similar to the user's current path
(cosine similarity of their sentence embeddings, from the Chroma server). Each
neighbour votes with its similarity as the weight:

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
