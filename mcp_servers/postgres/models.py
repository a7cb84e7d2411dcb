"""Typed inputs and outputs of the PostgreSQL server (tool schemas and structuredContent)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.vocabulary import (  # noqa: F401  (re-exported: the one vocabulary)
    EXPERIMENT_KEY_PATTERN,
    METRIC_NAME_PATTERN,
    VARIANT_KEY_PATTERN,
    Direction,
    ExperimentKey,
    ExperimentRef,
    MetricName,
    VariantKey,
)

ACTION_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

ExperimentType = Literal["prompt", "model", "agent_config", "feature", "ui", "workflow"]
ExperimentStatus = Literal["draft", "running", "stopped", "concluded", "archived"]
UserId = Annotated[str, Field(min_length=1, max_length=256, description="The user (or session) id that is hashed.")]
Actor = Annotated[str, Field(min_length=1, max_length=200, description="Who acts, e.g. 'agent:claude' or 'user:alice'.")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- definitions


class MetricSpec(_Model):
    """A metric and which direction is good."""

    name: MetricName
    direction: Direction = Field(default="higher", description="'higher' (higher is better) or 'lower'.")


class GuardrailSpec(MetricSpec):
    """A metric that must not get worse."""

    non_inferiority_margin: float | None = Field(
        default=None, ge=0, le=1, description="Largest tolerated relative degradation, e.g. 0.02 for 2%."
    )


def _metric_from_string(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


def _metric_shorthand(data: Any) -> Any:
    """Accept a bare metric name wherever a metric object is expected."""
    if isinstance(data, dict):
        data = dict(data)
        if isinstance(data.get("primary_metric"), str):
            data["primary_metric"] = _metric_from_string(data["primary_metric"])
        for name in ("secondary_metrics", "guardrail_metrics"):
            if isinstance(data.get(name), list):
                data[name] = [_metric_from_string(m) for m in data[name]]
    return data


class NamespaceSpec(_Model):
    """A slice [start, end) of a namespace: experiments in one namespace with disjoint slices never share users."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    start: float = Field(ge=0, le=1)
    end: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> NamespaceSpec:
        if self.start >= self.end:
            raise ValueError(f"namespace start ({self.start}) must be below end ({self.end})")
        return self


class VariantSpec(_Model):
    """One arm of an experiment, in bucket order."""

    key: VariantKey
    name: str | None = Field(default=None, max_length=200, description="Display name; defaults to the key.")
    is_control: bool = False
    weight: float | None = Field(
        default=None, ge=0, le=1,
        description="Traffic share as a fraction (0.5 = half). Omit on every variant for an equal split.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="JSON served with the variant, e.g. {'system_prompt': '...'}."
    )


class ExperimentCreate(_Model):
    """Everything needed to define an experiment (it starts as a draft)."""

    key: ExperimentKey
    name: str = Field(min_length=1, max_length=200)
    type: ExperimentType
    primary_metric: MetricSpec = Field(description="The one metric the decision is made on (a name or {name, direction}).")
    description: str = Field(default="", max_length=10_000)
    hypothesis: str = Field(default="", max_length=10_000)
    secondary_metrics: list[MetricSpec] = Field(default_factory=list, max_length=50)
    guardrail_metrics: list[GuardrailSpec] = Field(default_factory=list, max_length=50)
    variants: list[VariantSpec] = Field(default_factory=list, max_length=20)
    targeting: dict[str, Any] | None = Field(
        default=None,
        description='Condition on user attributes, e.g. {"country": {"$in": ["US", "CA"]}, "device": "mobile"}. '
        "Operators: $eq $ne $in $nin $gt $gte $lt $lte $exists, and $and $or $not.",
    )
    coverage: float = Field(default=1.0, ge=0, le=1, description="Fraction of eligible users enrolled.")
    namespace: NamespaceSpec | None = None
    hash_seed: str | None = Field(default=None, min_length=1, max_length=200, description="Defaults to the key.")
    hash_version: Literal[1, 2] = 2
    min_sample_size: int = Field(default=0, ge=0, le=100_000_000, description="Users per variant before deciding.")
    owner: str | None = Field(default=None, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)
    forced_variations: dict[str, str] = Field(
        default_factory=dict, description="QA overrides: user_id -> variant key. Excluded from analysis."
    )

    @model_validator(mode="before")
    @classmethod
    def _metric_shorthand(cls, data: Any) -> Any:
        return _metric_shorthand(data)


# Fields update_experiment may change at any status before archive (they do not move users between arms).
SAFE_UPDATE_FIELDS = frozenset(
    {"name", "description", "hypothesis", "owner", "tags", "secondary_metrics", "guardrail_metrics",
     "min_sample_size", "forced_variations"}
)


class ExperimentUpdate(_Model):
    """A partial update: only the fields given change. Drafts accept every field; after start only
    name, description, hypothesis, owner, tags, secondary_metrics, guardrail_metrics, min_sample_size
    and forced_variations may change (use set_variant_weights for traffic)."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    hypothesis: str | None = Field(default=None, max_length=10_000)
    type: ExperimentType | None = None
    primary_metric: MetricSpec | None = None
    secondary_metrics: list[MetricSpec] | None = Field(default=None, max_length=50)
    guardrail_metrics: list[GuardrailSpec] | None = Field(default=None, max_length=50)
    variants: list[VariantSpec] | None = Field(default=None, max_length=20, description="Replaces all variants.")
    targeting: dict[str, Any] | None = Field(default=None, description="{} removes targeting.")
    coverage: float | None = Field(default=None, ge=0, le=1)
    namespace: NamespaceSpec | None = None
    clear_namespace: bool = Field(default=False, description="Remove the namespace restriction.")
    hash_seed: str | None = Field(default=None, min_length=1, max_length=200)
    hash_version: Literal[1, 2] | None = None
    min_sample_size: int | None = Field(default=None, ge=0, le=100_000_000)
    owner: str | None = Field(default=None, max_length=200)
    tags: list[str] | None = Field(default=None, max_length=50)
    forced_variations: dict[str, str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _metric_shorthand(cls, data: Any) -> Any:
        return _metric_shorthand(data)

    def given(self) -> set[str]:
        """Names of the fields this update changes."""
        fields = {name for name in self.model_fields_set if getattr(self, name) is not None}
        fields.discard("clear_namespace")
        if self.clear_namespace:
            fields.add("namespace")
        return fields


# ---------------------------------------------------------------- experiment views


class Variant(BaseModel):
    id: int
    key: str
    name: str
    is_control: bool
    weight: float
    config: dict[str, Any]


class Experiment(BaseModel):
    id: int
    key: str
    name: str
    type: ExperimentType
    status: ExperimentStatus
    description: str
    hypothesis: str
    primary_metric: MetricSpec
    secondary_metrics: list[MetricSpec]
    guardrail_metrics: list[GuardrailSpec]
    variants: list[Variant]
    targeting: dict[str, Any] | None
    coverage: float
    namespace: NamespaceSpec | None
    hash_seed: str
    hash_version: int
    min_sample_size: int
    winner: str | None
    forced_variations: dict[str, str]
    owner: str | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    concluded_at: datetime | None
    archived_at: datetime | None


class ChangeLogEntry(BaseModel):
    id: int
    change_type: str
    actor: str
    changes: dict[str, Any]
    reason: str | None
    created_at: datetime


class ExperimentDetail(Experiment):
    assignments_by_variant: dict[str, int] = Field(description="Users assigned per variant key (forced included).")
    change_log: list[ChangeLogEntry] = Field(default_factory=list, description="Most recent changes first.")


class ExperimentListItem(BaseModel):
    id: int
    key: str
    name: str
    type: ExperimentType
    status: ExperimentStatus
    primary_metric: str
    variant_keys: list[str]
    winner: str | None
    owner: str | None
    tags: list[str]
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None


class ExperimentPage(BaseModel):
    items: list[ExperimentListItem]
    total: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="Pass as offset for the next page; null on the last page.")


# ---------------------------------------------------------------- assignment


AssignmentSource = Literal["hash", "recorded", "forced", "winner", "none"]


class VariantAssignment(BaseModel):
    """What to serve this user. `in_experiment` false means: serve your default experience."""

    experiment_key: str
    user_id: str
    in_experiment: bool
    variant_key: str | None
    variant_name: str | None
    is_control: bool | None
    config: dict[str, Any] | None = Field(description="The variant's JSON config, e.g. config['system_prompt'].")
    source: AssignmentSource = Field(
        description="hash: bucketed now; recorded: earlier assignment (sticky); forced: QA override; "
        "winner: experiment concluded, serving the declared winner (not recorded); none: not served."
    )
    bucket: float | None = Field(description="The user's hash value in [0, 1), when hashing decided.")
    newly_recorded: bool
    newly_exposed: bool = Field(
        default=False, description="True when this call recorded the user's first exposure (sent on to the event "
        "store, where the analysis counts it); false when exposed before, exposed=false, forced or not in the experiment.")
    reason: str


class BucketRange(BaseModel):
    variant_key: str
    start: float
    end: float


class AssignmentPrediction(BaseModel):
    """Which variant the user WOULD get right now, and why. Nothing is recorded."""

    experiment_key: str
    user_id: str
    status: ExperimentStatus
    would_be_in_experiment: bool
    variant_key: str | None
    decided_by: Literal["status", "forced", "recorded", "targeting", "namespace", "coverage", "hash", "winner"]
    bucket: float | None
    bucket_ranges: list[BucketRange]
    recorded_variant: str | None = Field(description="The variant already recorded for this user, if any.")
    steps: list[str] = Field(description="The checks in order, as readable sentences.")


class BatchAssignment(BaseModel):
    experiment_key: str
    assigned: dict[str, str | None] = Field(description="user_id -> variant key (null: not in the experiment).")
    newly_recorded: int
    already_recorded: int
    not_in_experiment: int
    newly_exposed: int = Field(default=0, description="Users whose first exposure this call recorded (exposed=true).")


class ExposureRecord(BaseModel):
    """An exposure reported by an SDK that assigned the user itself (e.g. from a Kafka exposure event)."""

    experiment_key: str
    user_id: UserId
    variant_key: str
    assigned_at: datetime | None = None


class ExposureOutcome(BaseModel):
    recorded: int = Field(description="Exposures that are now the user's assignment (rows inserted, plus kept).")
    duplicates: int
    kept: int = Field(0, description="Of recorded: streamed exposures the hash agrees with, kept without an "
                                     "assignment row (migration 0007).")
    rejected: list[tuple[int, str]] = Field(description="(index in the batch, reason) for records refused.")


# ---------------------------------------------------------------- results and analysis


class ResultRecorded(BaseModel):
    id: int
    experiment_key: str
    user_id: str
    variant_key: str
    metric: str
    value: float
    recorded_at: datetime
    duplicate: bool = Field(description="True when this event_id had already been recorded (nothing added).")


class MetricStats(BaseModel):
    """Sufficient statistics of one metric in one variant, over per-user values."""

    metric: str
    users: int = Field(description="Users with at least one record of this metric.")
    records: int
    sum: float
    sum_squares: float
    mean: float | None = Field(description="Mean per-user value over users with data.")
    std: float | None
    conversion_rate: float | None = Field(description="Users with a value > 0 / users assigned to the variant.")
    relative_lift_vs_control: float | None = Field(description="(mean - control mean) / |control mean|.")


class VariantStats(BaseModel):
    variant_key: str
    name: str
    is_control: bool
    weight: float
    assigned_users: int
    observed_share: float | None
    metrics: dict[str, MetricStats]


class ExperimentAnalysis(BaseModel):
    experiment_key: str
    status: ExperimentStatus
    primary_metric: MetricSpec
    metrics: list[str]
    aggregation: Literal["mean", "sum"] = Field(description="How a user's several records become one value.")
    total_assigned: int
    forced_excluded: int = Field(description="QA-forced users left out of every figure.")
    min_sample_size: int
    sample_size_per_arm: int | None = Field(
        description="Users each arm needs: min_sample_size, or when that is 0 the size planned from the control's "
        "primary metric so far; null when there is nothing to plan from.")
    sample_size_basis: str = Field(description="Where sample_size_per_arm comes from, in one sentence.")
    sample_size_reached: bool = Field(description="Every arm has at least sample_size_per_arm users (false without one).")
    variants: list[VariantStats]
    notes: list[str]


class ExperimentSummary(BaseModel):
    experiment_key: str
    status: ExperimentStatus
    summary: str = Field(description="Human-readable report (markdown).")
    leader: str | None = Field(description="Variant with the best primary-metric value per assigned user so far "
                               "(not a significance claim); null when none leads.")
    sample_size_reached: bool = Field(description="Every arm has reached the sample size per arm the summary states.")


# ---------------------------------------------------------------- decisions


class DecisionCreate(_Model):
    experiment: ExperimentRef | None = Field(default=None, description="Experiment key or id; null for portfolio-wide.")
    action: str = Field(
        pattern=ACTION_PATTERN,
        description="What was recommended or done, e.g. recommend_ship, rollback, reallocate_weights, keep_running.",
    )
    reasoning: str = Field(min_length=1, max_length=20_000)
    inputs: dict[str, Any] = Field(default_factory=dict, description="The evidence the decision used (stats, ids).")
    confidence: float | None = Field(default=None, ge=0, le=1)
    actor: Actor
    applied: bool = Field(default=False, description="True when the action was carried out, not only recommended.")


class Decision(BaseModel):
    id: int
    experiment_key: str | None
    action: str
    reasoning: str
    inputs: dict[str, Any]
    confidence: float | None
    actor: str
    applied: bool
    created_at: datetime


class DecisionPage(BaseModel):
    items: list[Decision]
    total: int
    limit: int
    offset: int
    next_offset: int | None


# ---------------------------------------------------------------- SQL


class QueryColumn(BaseModel):
    name: str
    type: str


class QueryResult(BaseModel):
    statement: Literal["select", "explain", "show"]
    columns: list[QueryColumn]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    truncated_reason: str | None
    read_only_role: str | None = Field(description="Role the query ran as (null: the connecting user, READ ONLY).")
    elapsed_ms: float


class ColumnInfo(BaseModel):
    name: str
    type: str
    nullable: bool
    default: str | None
    description: str | None


class TableInfo(BaseModel):
    name: str
    description: str | None
    columns: list[ColumnInfo]
    estimated_rows: int | None


class SchemaDescription(BaseModel):
    schema_name: str
    tables: list[TableInfo]
    notes: str
