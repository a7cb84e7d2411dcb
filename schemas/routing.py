"""Event classification rules: which stores take each Kafka event.

A contract every room shares: the stream processor routes events by it and the
router's `classify_event` tool shows it to agents. Events are classified by
deterministic rules on their fields (it runs per event, so it must be cheap and
predictable). The result is the seeds' DataClassification: what the data is, how
urgent, which servers take it (primary first, then secondaries), how to process
it and how long to keep it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict

from schemas.events import LIFECYCLE_EVENT_TYPES, VALUE_EVENT_TYPES, Event, EventType
from schemas.servers import SERVER_NAMES

ServerName = Literal[SERVER_NAMES]  # the names of schemas.servers


class DataClassification(BaseModel):
    model_config = ConfigDict(frozen=True)  # shared between events by the cache below

    data_type: Literal["experiment", "user_behavior", "analytics", "llm_telemetry", "lifecycle"]
    priority: Literal["high", "medium", "low"]
    primary: ServerName
    secondary: tuple[ServerName, ...] = ()
    processing_strategy: Literal["real_time", "batch", "stream"]
    retention_policy: str
    reason: str

    @property
    def targets(self) -> tuple[ServerName, ...]:
        return (self.primary, *self.secondary)


_BEHAVIOUR = frozenset({EventType.PAGE_VIEW, EventType.CLICK, EventType.SESSION_START, EventType.SESSION_END})


def classify_event(event: Event) -> DataClassification:
    """Route one event. Rules, in order: lifecycle, exposure, journeys, LLM telemetry, metrics, behaviour.

    The rules read only the event type and the producer's priority hint, so results are cached:
    this runs once per event on the stream's hot path.
    """
    priority = event.routing_metadata.priority if event.routing_metadata else None
    return _classify(event.event_type, priority)


@lru_cache(maxsize=256)
def _classify(kind: EventType, priority: str | None) -> DataClassification:
    if kind in LIFECYCLE_EVENT_TYPES:
        secondary: list[ServerName] = ["clickhouse"]
        if kind is EventType.EXPERIMENT_CONCLUDED:
            secondary.append("chromadb")  # a concluded experiment becomes searchable memory
        c = DataClassification(data_type="lifecycle", priority="high", primary="postgres", secondary=secondary,
                               processing_strategy="real_time", retention_policy="permanent",
                               reason=f"{kind.value}: the registry is the system of record for lifecycle")
    elif kind is EventType.EXPOSURE:
        c = DataClassification(data_type="experiment", priority="high", primary="clickhouse", secondary=["postgres"],
                               processing_strategy="batch", retention_policy="experiment lifetime + 2 years",
                               reason="exposure: the event store counts it; the registry records the assignment")
    elif kind is EventType.JOURNEY_COMPLETED:
        c = DataClassification(data_type="user_behavior", priority="medium", primary="clickhouse",
                               secondary=["chromadb"], processing_strategy="stream", retention_policy="1 year",
                               reason="journey: stored as events and embedded for similar-journey search")
    elif kind in (EventType.LLM_RESPONSE, EventType.FEEDBACK):
        c = DataClassification(data_type="llm_telemetry", priority="medium", primary="clickhouse",
                               processing_strategy="batch", retention_policy="2 years",
                               reason=f"{kind.value}: LLM quality/latency/token metrics aggregate in ClickHouse")
    elif kind in VALUE_EVENT_TYPES:
        c = DataClassification(data_type="analytics", priority="medium", primary="clickhouse",
                               processing_strategy="batch", retention_policy="2 years",
                               reason=f"{kind.value}: metric values aggregate in ClickHouse")
    elif kind in _BEHAVIOUR:
        c = DataClassification(data_type="user_behavior", priority="low", primary="clickhouse",
                               processing_strategy="batch", retention_policy="90 days raw, rollups kept",
                               reason=f"{kind.value}: behavioural firehose, analytics only")
    else:  # pragma: no cover - EventType is closed; a new member must get a rule
        raise ValueError(f"no classification rule for event type {kind.value}")
    if priority:
        c = c.model_copy(update={"priority": priority})
    return c
