"""The Kafka event schema (the seeds' event JSON), validated with pydantic.

Producers can validate against `schemas/event.schema.json`, exported from
`Event` by `neonblue schema` (a test keeps the file in sync).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

MAX_EVENT_BYTES = 64 * 1024
MAX_ID_CHARS = 128
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]


class EventType(StrEnum):
    # experiment traffic
    EXPOSURE = "exposure"
    CONVERSION = "conversion"
    METRIC = "metric"
    REVENUE = "revenue"
    # user behaviour
    PAGE_VIEW = "page_view"
    CLICK = "click"
    SESSION_START = "session_start"
    SESSION_END = "session_end"
    JOURNEY_COMPLETED = "journey_completed"
    # LLM app telemetry (prompt/model experiments)
    LLM_RESPONSE = "llm_response"
    FEEDBACK = "feedback"
    # experiment lifecycle
    EXPERIMENT_CREATED = "experiment_created"
    EXPERIMENT_STARTED = "experiment_started"
    EXPERIMENT_STOPPED = "experiment_stopped"
    EXPERIMENT_CONCLUDED = "experiment_concluded"


# Event types that carry a measured value for a metric.
VALUE_EVENT_TYPES = frozenset({EventType.CONVERSION, EventType.METRIC, EventType.REVENUE, EventType.LLM_RESPONSE})
# The metric an event measures when it names none, and the value when it gives none.
DEFAULT_METRICS = {EventType.CONVERSION: "conversion", EventType.REVENUE: "revenue"}
DEFAULT_VALUES = {EventType.CONVERSION: 1.0}
LIFECYCLE_EVENT_TYPES = frozenset(
    {
        EventType.EXPERIMENT_CREATED,
        EventType.EXPERIMENT_STARTED,
        EventType.EXPERIMENT_STOPPED,
        EventType.EXPERIMENT_CONCLUDED,
    }
)


class Segment(BaseModel):
    """User attributes used for segment breakdowns and targeting."""

    model_config = ConfigDict(extra="forbid")
    device: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=64)
    plan: str | None = Field(default=None, max_length=64)


class AIContext(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_journey_stage: str | None = None
    behavioral_score: float | None = Field(default=None, ge=0, le=1)
    intent_prediction: str | None = None
    segment: str | None = None


class SemanticContext(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(default=None, max_length=8192)
    context_keywords: list[str] = Field(default_factory=list, max_length=64)
    sentiment_score: float | None = Field(default=None, ge=-1, le=1)


class RoutingMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: str | None = Field(default=None, pattern="^(high|medium|low)$")
    source: str | None = None
    trace_id: str | None = None


class Event(BaseModel):
    """One event on a NeonBlue Kafka topic, keyed by `user_id`."""

    model_config = ConfigDict(extra="forbid")

    event_id: Identifier
    event_type: EventType
    timestamp: AwareDatetime = Field(description="ISO 8601 with a timezone, e.g. 2026-11-01T10:00:00Z.")
    user_id: Identifier
    experiment_id: Identifier | None = Field(default=None, description="Experiment key.")
    variant: Identifier | None = None
    metric: Identifier | None = Field(default=None, description="Metric name (defaults from event_type).")
    value: Annotated[float, Field(allow_inf_nan=False, strict=True)] | None = Field(
        default=None, description="A JSON number (a numeric string is refused)."
    )
    session_id: Identifier | None = None
    segment: Segment | None = None
    properties: dict[str, str | float | int | bool | None] = Field(default_factory=dict, max_length=64)
    ai_context: AIContext | None = None
    semantic_context: SemanticContext | None = None
    routing_metadata: RoutingMetadata | None = None

    @model_validator(mode="after")
    def _metric_events_have_values(self) -> Event:
        # Kept to plain attribute checks: this runs per event on the stream's hot path.
        if self.event_type in VALUE_EVENT_TYPES:
            if self.experiment_id is None:
                raise ValueError(f"{self.event_type.value} events need experiment_id")
            if self.event_type is EventType.CONVERSION:
                return self  # value defaults to 1.0, metric to "conversion"
            if self.value is None:
                raise ValueError(f"{self.event_type.value} events need a numeric value")
            if self.metric is None and self.event_type is not EventType.REVENUE:
                raise ValueError(f"{self.event_type.value} events need a metric name")
        if self.event_type is EventType.EXPOSURE and self.experiment_id is None:
            raise ValueError("exposure events need experiment_id")
        if self.event_type in LIFECYCLE_EVENT_TYPES and self.experiment_id is None:
            raise ValueError(f"{self.event_type.value} events need experiment_id")
        return self

    @property
    def metric_name(self) -> str | None:
        """The metric this event measures, with defaults per event type."""
        if self.metric is not None:
            return self.metric
        return DEFAULT_METRICS.get(self.event_type)

    @property
    def metric_value(self) -> float | None:
        """The measured value, with defaults per event type."""
        if self.value is not None:
            return self.value
        return DEFAULT_VALUES.get(self.event_type)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema producers validate against."""
    schema = Event.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://neonblue.dev/schemas/event.schema.json"
    return schema
