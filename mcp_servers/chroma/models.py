"""Typed inputs and outputs of the Chroma server (tool schemas and structuredContent).

Input records accept the shapes other servers produce: an experiment from the
PostgreSQL registry (`Experiment.model_dump()`, with `primary_metric` as
{name, direction} and variants with key/name/is_control/config) validates as an
`ExperimentRecord` as it is; unknown keys are ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.vocabulary import MetricName

Outcome = Literal["success", "failure", "neutral"]
CollectionName = Literal["experiments", "user_journeys", "optimization_patterns"]

_Label = Annotated[str, Field(min_length=1, max_length=200)]
_Text = Annotated[str, Field(max_length=10_000)]


def _metric_name(value: Any) -> Any:
    """A metric given as {'name': ..., 'direction': ...} (the registry's MetricSpec) becomes its name."""
    if isinstance(value, dict):
        return value.get("name")
    if isinstance(value, BaseModel):
        return getattr(value, "name", None)
    return value


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=True)


class VariantInfo(_Record):
    """One arm of an experiment, as far as its description is concerned."""

    key: _Label
    name: str | None = Field(default=None, max_length=200)
    is_control: bool = False
    weight: float | None = Field(default=None, ge=0, le=1)
    description: str | None = Field(default=None, max_length=2000, description="What this variant does differently.")
    config: dict[str, Any] | None = Field(default=None, description="The variant's config; summarised in the text.")


class ExperimentRecord(_Record):
    """An experiment as the registry knows it, plus optional result fields.

    Only `key` is required; the more fields are given, the richer the stored text.
    `lift` is relative, as a fraction (0.15 = +15%); `significance` is a confidence
    level (0.95); without it, it is derived as 1 - p_value.
    """

    key: str = Field(
        min_length=1, max_length=200,
        description="The experiment key, e.g. 'checkout-1step' (becomes the document id).",
    )
    name: str = Field(default="", max_length=200)
    description: _Text = ""
    hypothesis: _Text = ""
    type: str | None = Field(
        default=None, max_length=100, validation_alias=AliasChoices("type", "experiment_type"),
        description="prompt, model, agent_config, feature, ui, workflow, or another label.",
    )
    status: str | None = Field(default=None, max_length=50)
    industry: str | None = Field(default=None, max_length=100)
    segment: str | None = Field(
        default=None, max_length=200,
        validation_alias=AliasChoices("segment", "user_segment", "target_segment"),
        description="Targeted user segment, e.g. 'mobile users'.",
    )
    platform: str | None = Field(default=None, max_length=100, description="e.g. mobile, desktop, web, api.")
    variants: list[VariantInfo] = Field(default_factory=list, max_length=20)
    primary_metric: MetricName | None = Field(default=None, description="A metric name or {name, direction}.")
    metric_direction: Literal["higher", "lower"] = Field(
        default="higher", description="Whether a higher primary metric is better (from the registry's MetricSpec)."
    )
    secondary_metrics: list[MetricName] = Field(default_factory=list, max_length=50)
    winner: str | None = Field(default=None, max_length=200)
    lift: float | None = Field(default=None, ge=-100, le=1000, description="Relative lift as a fraction: 0.15 = +15%.")
    p_value: float | None = Field(default=None, ge=0, le=1)
    significance: float | None = Field(
        default=None, ge=0, le=1, validation_alias=AliasChoices("significance", "statistical_significance"),
        description="Confidence level reached, e.g. 0.95; default 1 - p_value.",
    )
    conversion_rate: float | None = Field(default=None, ge=0, le=1, description="Winner's (or overall) rate, 0..1.")
    sample_size: int | None = Field(default=None, ge=0)
    outcome: Outcome | None = Field(default=None, description="Derived from winner/lift/p_value when omitted.")
    tags: list[str] = Field(default_factory=list, max_length=50)
    created_at: datetime | None = None
    concluded_at: datetime | None = None

    @field_validator("primary_metric", mode="before")
    @classmethod
    def _primary_name(cls, value: Any) -> Any:
        return _metric_name(value)

    @field_validator("secondary_metrics", mode="before")
    @classmethod
    def _secondary_names(cls, value: Any) -> Any:
        return [_metric_name(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="before")
    @classmethod
    def _direction_from_metric(cls, data: Any) -> Any:
        # The registry's MetricSpec carries the direction next to the name.
        if isinstance(data, dict) and "metric_direction" not in data:
            metric = data.get("primary_metric")
            direction = metric.get("direction") if isinstance(metric, dict) else getattr(metric, "direction", None)
            if direction in ("higher", "lower"):
                data = {**data, "metric_direction": direction}
        return data


class ExperimentAnalysis(_Record):
    """The result of analysing an experiment; fields given here override the record's."""

    winner: str | None = Field(default=None, max_length=200)
    lift: float | None = Field(default=None, ge=-100, le=1000, description="Relative lift as a fraction: 0.15 = +15%.")
    lift_ci_low: float | None = Field(default=None, description="Lower bound of the lift's interval (fraction).")
    lift_ci_high: float | None = Field(default=None, description="Upper bound of the lift's interval (fraction).")
    p_value: float | None = Field(default=None, ge=0, le=1)
    significance: float | None = Field(default=None, ge=0, le=1)
    conversion_rate: float | None = Field(default=None, ge=0, le=1)
    sample_size: int | None = Field(default=None, ge=0)
    outcome: Outcome | None = None
    summary: str | None = Field(default=None, max_length=4000, description="A sentence or two on what was learned.")


class JourneyRecord(_Record):
    """A user's path through the product in one session."""

    journey_id: str | None = Field(
        default=None, min_length=1, max_length=200, validation_alias=AliasChoices("journey_id", "id"),
        description="Document id; default: a hash of the journey's content (so re-storing it is idempotent).",
    )
    steps: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=1, max_length=100, description="Pages or actions in order, e.g. ['landing_page', 'product_detail', 'add_to_cart', 'purchase']."
    )
    user_id: str | None = Field(default=None, max_length=256)
    user_segment: str | None = Field(default=None, max_length=200, validation_alias=AliasChoices("user_segment", "segment"))
    device_type: str | None = Field(default=None, max_length=50, validation_alias=AliasChoices("device_type", "device"))
    traffic_source: str | None = Field(default=None, max_length=100)
    session_duration_s: float | None = Field(
        default=None, ge=0, le=86_400 * 7, validation_alias=AliasChoices("session_duration_s", "session_duration"),
        description="Session length in seconds.",
    )
    conversion_outcome: str | None = Field(
        default=None, max_length=100, validation_alias=AliasChoices("conversion_outcome", "outcome"),
        description="e.g. purchased, signed_up, abandoned_cart, bounced.",
    )
    value: float | None = Field(default=None, description="Order or conversion value.")
    experiment_key: str | None = Field(default=None, max_length=200, description="The experiment the session was in.")
    variant: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=2000, description="Free text: intent, errors seen…")
    started_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _minutes_to_seconds(cls, data: Any) -> Any:
        # Events carry the session length in minutes (properties.session_minutes).
        if isinstance(data, dict) and data.get("session_minutes") is not None and not (
            {"session_duration_s", "session_duration"} & data.keys()
        ):
            try:
                data = {**data, "session_duration_s": float(data["session_minutes"]) * 60}
            except (TypeError, ValueError):
                pass  # left to the field validation below, which reports it
        return data


class PatternRecord(_Record):
    """A reusable lesson: an optimization that was tried, and what it did."""

    pattern_id: str | None = Field(
        default=None, min_length=1, max_length=200, validation_alias=AliasChoices("pattern_id", "id"),
        description="Document id; default: a hash of type + description.",
    )
    optimization_type: str = Field(min_length=1, max_length=100, description="e.g. checkout_flow, pricing, onboarding, prompt.")
    description: str = Field(min_length=1, max_length=4000, description="What was changed, e.g. 'Reduced checkout steps from 4 to 2'.")
    outcome: Outcome
    improvement: float | None = Field(
        default=None, ge=-1, le=100,
        description="Relative change in the metric as a fraction (0.35 = +35%, -0.08 = -8%).",
    )
    metric: MetricName | None = None
    applied_to_segments: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=list, max_length=50)
    industry: str | None = Field(default=None, max_length=100)
    implementation_effort: Literal["low", "medium", "high"] | None = None
    source_experiments: list[str] = Field(default_factory=list, max_length=100)
    created_at: datetime | None = None


# ---------------------------------------------------------------- outputs


class StoredDocument(BaseModel):
    collection: CollectionName
    id: str
    status: Literal["created", "updated", "unchanged"] = Field(
        description="'unchanged' when the same text and metadata were already stored (nothing re-embedded)."
    )
    document: str = Field(description="The text that was embedded.")
    metadata: dict[str, Any]


class SearchHit(BaseModel):
    id: str
    similarity: float = Field(description="1 - cosine distance: 1 = same direction, 0 = unrelated.")
    document: str
    metadata: dict[str, Any]


class SearchResult(BaseModel):
    collection: CollectionName
    query: str
    where: dict[str, Any] | None = Field(description="The filter as applied (after normalisation).")
    hits: list[SearchHit] = Field(description="Most similar first.")


class SyncFailure(BaseModel):
    key: str | None
    reason: str


class SyncReport(BaseModel):
    received: int = Field(description="Records read from the registry or the request.")
    created: int
    updated: int
    unchanged: int = Field(description="Already stored with the same text and metadata; not re-embedded.")
    failed: list[SyncFailure] = Field(default_factory=list)
    seconds: float


class CollectionInfo(BaseModel):
    name: CollectionName
    count: int
    embedding_function: str = Field(description="'<function name>:<model>' recorded in the collection.")
    space: str | None
    hnsw: dict[str, Any] = Field(description="The index configuration recorded in the collection.")


class CollectionStats(BaseModel):
    backend: str = Field(description="'persistent:<path>' or 'http:<url>'.")
    embedding_function: str = Field(description="The configured '<function name>:<model>'.")
    collections: list[CollectionInfo]
