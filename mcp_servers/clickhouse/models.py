"""Typed inputs and outputs of the ClickHouse server (tool schemas and structuredContent)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.vocabulary import ExperimentKey, MetricName  # noqa: F401  (the one vocabulary)

IdempotencyToken = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        description="Caller-chosen name of this batch; re-sending a batch with the same token stores nothing new.",
    ),
]
SegmentDimension = Literal["device", "country", "source", "plan"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ ingest


class IngestResult(_Model):
    table: str = "events"
    engine: str = Field(description="chdb (embedded) or clickhouse (server)")
    rows: int = Field(description="Rows in the batch")
    idempotency_token: str
    deduplication: str = Field(
        description="How duplicates are kept from counting twice",
        default="insert token (non_replicated_deduplication_window) + ReplacingMergeTree key "
        "(experiment_id, user_id, event_id) + FINAL on read",
    )
    elapsed_ms: float


# ------------------------------------------------------------------ sufficient statistics


class SegmentFilter(_Model):
    """Keep users whose first exposure carried these segment values (AND of the given ones)."""

    device: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, max_length=64)
    source: str | None = Field(default=None, max_length=64)
    plan: str | None = Field(default=None, max_length=64)

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class RatioMetric(_Model):
    """A ratio metric: per user numerator / denominator (e.g. revenue per session)."""

    name: MetricName = Field(description="Name reported in the output")
    numerator: MetricName
    denominator: MetricName


class MetricSufficientStatistics(_Model):
    """Per (variant, metric): the sufficient statistics over users (the unit of analysis).

    Each user contributes x = the sum of the metric over their events in the window
    (0 when exposed without the metric). n counts exposed users.
    - mean metrics: n, sum = Σx, sum_squares = Σx²; with CUPED also the covariate y
      (the same metric per user in the pre-period): pre_sum = Σy,
      pre_sum_squares = Σy², post_pre_sum_of_products = Σx·y.
    - ratio metrics: sum/sum_squares are the numerator's (Σm, Σm²), plus
      denominator_sum = Σd, denominator_sum_squares = Σd², m_d_sum_of_products = Σm·d.
    """

    variant: str
    metric: str
    kind: Literal["mean", "ratio"]
    n: int = Field(description="Exposed users")
    sum: float
    sum_squares: float
    users_with_metric: int = Field(description="Users with a non-zero value (numerator for ratios)")
    pre_sum: float | None = None
    pre_sum_squares: float | None = None
    post_pre_sum_of_products: float | None = None
    numerator_metric: str | None = None
    denominator_metric: str | None = None
    denominator_sum: float | None = None
    denominator_sum_squares: float | None = None
    m_d_sum_of_products: float | None = None

    mean: float = Field(default=0.0, description="sum/n for mean metrics, sum/denominator_sum for ratios (0 if undefined)")

    @model_validator(mode="after")
    def _fill_mean(self) -> MetricSufficientStatistics:
        if self.kind == "ratio":
            self.mean = self.sum / self.denominator_sum if self.denominator_sum else 0.0
        else:
            self.mean = self.sum / self.n if self.n else 0.0
        return self


class VariantExposure(_Model):
    variant: str
    users: int = Field(description="Users counted (first exposure in the window, one variant only)")
    excluded_multiple_variants: int = Field(description="Users exposed to more than one variant, left out")


class VariantStatistics(_Model):
    experiment_key: str
    engine: str
    window_start: datetime
    window_end: datetime = Field(description="Exclusive")
    pre_period_start: datetime | None = None
    pre_period_end: datetime | None = None
    segment: SegmentFilter | None = None
    variants: list[VariantExposure]
    statistics: list[MetricSufficientStatistics]
    deduplication: str = "events read with FINAL: each event_id counted once"
    computed_from: Literal["events", "user rollup"] = Field(
        default="events",
        description="'user rollup': per-user rows recomputed from deduplicated events whenever a user's events "
        "change (default window and CUPED lookback on chDB); 'events': one pass over the events")
    elapsed_ms: float

    def get(self, variant: str, metric: str) -> MetricSufficientStatistics:
        for s in self.statistics:
            if s.variant == variant and s.metric == metric:
                return s
        raise KeyError((variant, metric))


class PeriodExposures(_Model):
    start: datetime
    end: datetime = Field(description="Exclusive")
    users: dict[str, int] = Field(description="Per variant: users whose first exposure falls in [start, end)")


class ExposuresByPeriod(_Model):
    experiment_key: str
    periods: list[PeriodExposures] = Field(description="One per consecutive pair of boundaries, in order")
    deduplication: str = "events read with FINAL; users exposed to more than one variant are left out"
    elapsed_ms: float


# ------------------------------------------------------------------ insights


class MetricSummary(_Model):
    metric: str
    variant: str
    users: int
    mean: float
    std_dev: float
    difference: float | None = Field(description="mean - control mean (None for the control)")
    relative_lift: float | None = Field(description="difference / control mean")
    ci95_low: float | None = Field(description="95% Welch interval of the difference")
    ci95_high: float | None = None
    p_value: float | None = Field(description="Two-sided Welch t-test of the difference")


class SegmentDifference(_Model):
    dimension: SegmentDimension
    segment: str
    metric: str
    variant: str
    control_users: int
    variant_users: int
    control_mean: float
    variant_mean: float
    difference: float
    relative_lift: float | None
    z_score: float = Field(description="difference / its standard error: the ranking key")


class SegmentCell(_Model):
    dimension: SegmentDimension
    segment: str
    variant: str
    n: int = Field(description="Users of this variant whose first exposure had this segment value")
    sum: float = Field(description="Σx: the metric summed over those users")
    sum_squares: float = Field(description="Σx² over those users (per-user sums squared)")


class SegmentStatistics(_Model):
    experiment_key: str
    metric: str
    window_start: datetime
    window_end: datetime
    users: dict[str, int] = Field(description="Users per variant over the whole window (all segments)")
    cells: list[SegmentCell] = Field(description="Per (dimension, segment, variant); empty segment values left out")
    cells_below_min_users: int = Field(description="Cells left out for having fewer than min_users users")
    elapsed_ms: float


class InteractionCell(_Model):
    other_experiment_key: str
    variant: str = Field(description="The user's variant in this experiment")
    other_variant: str = Field(description="The user's variant in the other experiment")
    n: int
    sum: float = Field(description="Σx of this experiment's metric over the cell's users")
    sum_squares: float


class InteractionStatistics(_Model):
    experiment_key: str
    metric: str
    window_start: datetime
    window_end: datetime
    shared_users: dict[str, int] = Field(description="Per other experiment: users exposed to both (one variant each)")
    cells: list[InteractionCell]
    elapsed_ms: float


class DailyVolume(_Model):
    date: date
    variant: str
    active_users: int
    new_users: int
    events: int


class DataQualityFlag(_Model):
    code: Literal[
        "missing_days",
        "event_volume_drop",
        "sample_ratio_mismatch",
        "multiple_variant_users",
        "metric_events_without_exposure",
        "duplicates_pending_merge",
        "future_timestamps",
    ]
    severity: Literal["info", "warning", "critical"]
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class AnalyticsInsights(_Model):
    experiment_key: str
    window_start: datetime
    window_end: datetime
    control_variant: str
    metric_table: list[MetricSummary]
    segment_differences: list[SegmentDifference] = Field(
        description="Segment x variant differences vs control, largest |z| first"
    )
    daily_volume: list[DailyVolume]
    data_quality: list[DataQualityFlag]
    summary: list[str] = Field(description="Template sentences filled with the numbers above")
    elapsed_ms: float


# ------------------------------------------------------------------ trends


class DailyValue(_Model):
    date: date
    value: float
    active_users: int
    partial: bool = Field(default=False, description="Only part of this day is observed: the last day while it "
                          "has not ended (today, UTC), or a first day the experiment started more than an hour "
                          "into. Shown, not fitted; a partial last day is forecast as a full day")


class ForecastPoint(_Model):
    date: date
    predicted: float
    lower: float
    upper: float


class Backtest(_Model):
    method: str
    origins: int
    horizon_days: int
    mae: float
    mape: float | None = Field(description="Mean absolute percentage error; None when actuals are 0")
    naive_mae: float = Field(description="MAE of repeating the last observed value, for comparison")


class VariantForecast(_Model):
    variant: str
    history: list[DailyValue]
    forecast: list[ForecastPoint]
    level: float = Field(description="Fitted value on the last observed day")
    slope_per_day: float
    day_of_week_effects: dict[str, float] | None = Field(description="Mon..Sun effects vs Monday, when fitted")
    residual_std: float
    backtest: Backtest | None = Field(description="None when the history is too short to backtest")


class TrendForecast(_Model):
    experiment_key: str
    metric: str
    statistic: Literal["mean_per_active_user", "total", "share_of_active_users"]
    model: str = Field(description="The fitted model, stated")
    history_days: int
    days_ahead: int
    interval: float
    variants: list[VariantForecast]
    partial_days: list[date] = Field(default_factory=list, description="Days observed only in part: flagged "
                                     "in each history, left out of the fit and the backtest")
    elapsed_ms: float


# ------------------------------------------------------------------ SQL


class ColumnInfo(_Model):
    name: str
    type: str
    comment: str = ""


class QueryResult(_Model):
    columns: list[ColumnInfo]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="True when more rows existed than max_rows")
    elapsed_ms: float


class TableInfo(_Model):
    name: str
    engine: str
    rows: int | None
    bytes_on_disk: int | None
    comment: str
    sorting_key: str
    columns: list[ColumnInfo]


class TableList(_Model):
    database: str
    engine: str
    tables: list[TableInfo]


class DateWindow(_Model):
    start_date: date | None = None
    end_date: date | None = None

    @model_validator(mode="after")
    def _ordered(self) -> DateWindow:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self
