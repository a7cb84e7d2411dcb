"""The ClickHouse MCP server: each tool a thin typed adapter over one ClickHouseService method."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcp_servers.annotations import IDEMPOTENT_WRITE, READ_ONLY
from mcp_servers.tool_server import ToolServer
from schemas.events import Event
from schemas.vocabulary import limit

from .models import (
    AnalyticsInsights,
    ExperimentKey,
    ExposuresByPeriod,
    IdempotencyToken,
    IngestResult,
    InteractionStatistics,
    MetricName,
    QueryResult,
    RatioMetric,
    SegmentFilter,
    SegmentStatistics,
    TableList,
    TrendForecast,
    VariantStatistics,
)
from .service import ClickHouseService

INSTRUCTIONS = """\
NeonBlue's event analytics on ClickHouse. Events (exposures, conversions, metric values, page views,
LLM responses) live in the `events` table keyed by experiment, user and event_id; each event counts
once however often it was sent. Use get_variant_statistics for the per-variant sufficient statistics
(n, sum, sum of squares, CUPED and ratio cross-products) that significance tests need,
get_exposures_by_period for users per variant split by when they were first exposed,
generate_analytics_insights for a computed overview with segment differences and data-quality flags,
predict_experiment_trends for forecasts of a daily metric, clickhouse_query for your own read-only SQL
(see list_tables for the columns), ingest_events to store events idempotently."""


StartDate = Annotated[date | None, Field(default=None, description="First day (UTC) of the window, YYYY-MM-DD; default: the first exposure")]
EndDate = Annotated[date | None, Field(default=None, description="Last day (UTC, inclusive), YYYY-MM-DD; default: the last exposure")]
Experiment = Annotated[ExperimentKey, Field(description="The experiment's key, e.g. 'checkout-1step' (events.experiment_id)")]
Metrics = Annotated[list[MetricName], Field(default_factory=list, max_length=20, description="Mean metrics, e.g. ['revenue', 'conversion']")]


def build_server(service: ClickHouseService) -> MCPServer:
    """The MCP server over `service` (tools only; the service's lifetime is the caller's)."""
    mcp = ToolServer("neonblue-clickhouse", instructions=INSTRUCTIONS)

    @mcp.tool(annotations=IDEMPOTENT_WRITE)
    async def ingest_events(
        events: Annotated[list[Event], Field(min_length=1, max_length=10_000, description="Events to store")],
        idempotency_token: IdempotencyToken,
    ) -> IngestResult:
        """Store a batch of events exactly once.

        Call again with the same idempotency_token after a timeout or error: a batch
        already stored is not stored twice, and an event_id sent in two different
        batches still counts once. Conversions default to metric "conversion" with
        value 1, revenue events to metric "revenue". Returns the row count.

        Example: {"idempotency_token": "import-2025-01-06-part-1", "events": [{"event_id": "e1",
        "event_type": "exposure", "timestamp": "2025-01-06T10:00:00Z", "user_id": "u1",
        "experiment_id": "checkout-1step", "variant": "control", "segment": {"device": "mobile"}},
        {"event_id": "e2", "event_type": "revenue", "timestamp": "2025-01-06T10:05:00Z", "user_id": "u1",
        "experiment_id": "checkout-1step", "value": 42.5}]}
        """
        return await service.ingest_events(events, idempotency_token)

    @mcp.tool(annotations=READ_ONLY)
    async def get_variant_statistics(
        experiment: Experiment,
        metrics: Metrics,
        ratio_metrics: Annotated[list[RatioMetric], Field(default_factory=list, max_length=10, description="Ratio metrics (numerator / denominator per user)")],
        start_date: StartDate = None,
        end_date: EndDate = None,
        segment: Annotated[SegmentFilter | None, Field(default=None, description="Only users whose first exposure had these segment values")] = None,
        cuped: Annotated[bool, Field(description="Also return the pre-period covariate sums for CUPED")] = False,
        cuped_lookback_days: Annotated[int, Field(ge=1, le=365, description="Pre-period length before the window start")] = 14,
    ) -> VariantStatistics:
        """Per variant and metric, the sufficient statistics over users that significance tests consume.

        Users are those with an exposure in the window (variant of their first
        exposure; users seen in two variants are excluded and counted apart). Each
        user's value is the sum of the metric over their events in the window, 0 if
        none. Returns n, sum, sum_squares, users_with_metric; with cuped the same
        metric summed per user over the pre-period (pre_sum, pre_sum_squares,
        post_pre_sum_of_products); for ratio metrics denominator_sum,
        denominator_sum_squares and m_d_sum_of_products. Compute means/variances
        from them (mean = sum/n). The whole-experiment window without a segment
        filter is answered from a per-user rollup kept current (fast); other
        windows and segments read the events; `computed_from` says which.

        Example: {"experiment": "checkout-1step", "metrics": ["revenue", "conversion"], "cuped": true,
        "ratio_metrics": [{"name": "revenue_per_session", "numerator": "revenue", "denominator": "sessions"}],
        "segment": {"device": "mobile"}}
        """
        return await service.get_variant_statistics(
            experiment, metrics, ratio_metrics, start_date=start_date, end_date=end_date, segment=segment,
            cuped=cuped, cuped_lookback_days=cuped_lookback_days)

    @mcp.tool(annotations=READ_ONLY)
    async def get_exposures_by_period(
        experiment: Experiment,
        boundaries: Annotated[
            list[datetime],
            Field(min_length=2, max_length=101, description="Increasing times (UTC when no offset): the window's "
                  "start, any cut points, the window's end (exclusive)"),
        ],
    ) -> ExposuresByPeriod:
        """Count users per variant by the period in which they were first exposed.

        Use it when the traffic split changed during an experiment: each period
        between two consecutive boundaries gets its own per-variant user counts, so
        a sample-ratio check can compare each period with the weights then in force.
        Users are those first exposed in [first boundary, last boundary) to one
        variant only (users seen in two variants are left out, as in
        get_variant_statistics). Returns one entry per period with start, end and
        users per variant.

        Example: {"experiment": "checkout-1step", "boundaries": ["2025-01-06T00:00:00Z",
        "2025-01-09T12:00:00Z", "2025-01-13T00:00:00Z"]}
        """
        return await service.get_exposures_by_period(experiment, boundaries)

    @mcp.tool(annotations=READ_ONLY)
    async def generate_analytics_insights(
        experiment: Experiment,
        metrics: Annotated[list[MetricName], Field(min_length=1, max_length=20, description="Metrics to compare")],
        control_variant: Annotated[str | None, Field(default=None, description="Default: 'control' if present, else the first variant")] = None,
        start_date: StartDate = None,
        end_date: EndDate = None,
        expected_weights: Annotated[dict[str, float] | None, Field(default=None, description="Intended traffic split for the sample-ratio check; default equal")] = None,
        min_segment_users: Annotated[int, Field(ge=2, le=100_000, description="Smallest segment cell compared")] = 30,
        limit: Annotated[int, limit(100, "At most this many segment cells in the answer (largest |z| first)")] = 10,
    ) -> AnalyticsInsights:
        """A computed overview of one experiment: what differs, where, and whether the data can be trusted.

        Returns a per-variant metric table (users, mean, sd, difference to the
        control with a 95% Welch interval and p-value), the segment x variant cells
        (device, country, source, plan) with the largest differences to the control
        ranked by |z|, daily volume per variant, and data-quality flags
        (sample-ratio mismatch, users in several variants, missing days, event-volume
        drops, metric events without exposure, duplicates awaiting merge, future
        timestamps). Every sentence in `summary` is a template filled with those
        numbers. Read-only for the caller (it brings the internal daily rollup up to date first).

        Example: {"experiment": "checkout-1step", "metrics": ["revenue", "conversion"]}
        """
        return await service.generate_analytics_insights(
            experiment, metrics, control_variant=control_variant, start_date=start_date, end_date=end_date,
            expected_weights=expected_weights, min_segment_users=min_segment_users, top_segments=limit)

    @mcp.tool(annotations=READ_ONLY)
    async def get_segment_statistics(
        experiment: Experiment,
        metric: MetricName,
        start_date: StartDate = None,
        end_date: EndDate = None,
        min_users: Annotated[int, Field(ge=2, le=100_000, description="Leave out cells with fewer users")] = 2,
    ) -> SegmentStatistics:
        """Per segment (device, country, source, plan) and variant, the sufficient statistics of one metric.

        Users and their variant as in get_variant_statistics (first exposure, users in several
        variants left out); a user's segment is their first exposure's. Returns n, sum and
        sum_squares per (dimension, segment, variant), the users per variant overall, and how
        many cells were below min_users. Use it for per-segment effects and heterogeneity.

        Example: {"experiment": "checkout-1step", "metric": "conversion", "min_users": 30}
        """
        return await service.get_segment_statistics(experiment, metric, start_date=start_date, end_date=end_date,
                                                    min_users=min_users)

    @mcp.tool(annotations=READ_ONLY)
    async def get_interaction_statistics(
        experiment: Experiment,
        metric: MetricName,
        min_users: Annotated[int, Field(ge=2, le=100_000, description="Leave out cells with fewer users")] = 2,
        limit: Annotated[int, limit(100, "At most this many other experiments (most shared users first)")] = 20,
    ) -> InteractionStatistics:
        """For each other experiment sharing users with this one: this metric's sums per pair of variants.

        Over this experiment's window, users with one variant here and one variant in the
        other experiment; per (variant, other_variant) n, sum and sum_squares of this
        experiment's metric, and the shared users per other experiment. Use it for the 2x2
        interaction contrast between concurrent experiments.

        Example: {"experiment": "checkout-1step", "metric": "conversion"}
        """
        return await service.get_interaction_statistics(experiment, metric, min_users=min_users, limit=limit)

    @mcp.tool(annotations=READ_ONLY)
    async def predict_experiment_trends(
        experiment: Experiment,
        metric: MetricName,
        days_ahead: Annotated[int, Field(ge=1, le=90, description="Days to forecast past the last observed day")] = 7,
        history_days: Annotated[int, Field(ge=3, le=90, description="Days of history the model is fitted on")] = 90,
        statistic: Annotated[
            Literal["mean_per_active_user", "total", "share_of_active_users"],
            Field(description="Daily value forecast: metric sum / active users, metric sum, or users with the metric / active users"),
        ] = "mean_per_active_user",
        interval: Annotated[float, Field(ge=0.5, lt=1, description="Prediction interval level")] = 0.95,
    ) -> TrendForecast:
        """Forecast a daily metric per variant, with prediction intervals and the model's backtest error.

        The model is stated in the answer: an OLS linear trend (plus day-of-week
        effects once 14+ days are observed) fitted per variant on up to 90 days of
        the daily rollup, intervals from the residual variance, and a rolling-origin
        backtest (MAE, MAPE) next to a naive last-value forecast so you can judge it. Read-only for
        the caller (it brings the internal daily rollup up to date first).

        Example: {"experiment": "checkout-1step", "metric": "revenue", "days_ahead": 14}
        """
        return await service.predict_experiment_trends(
            experiment, metric, days_ahead, history_days=history_days, statistic=statistic, interval=interval)

    @mcp.tool(annotations=READ_ONLY)
    async def clickhouse_query(
        sql: Annotated[str, Field(min_length=1, max_length=20_000, description="One SELECT/WITH/SHOW/DESCRIBE/EXPLAIN statement")],
        limit: Annotated[int, limit(10_000, "At most this many rows returned")] = 1000,
    ) -> QueryResult:
        """Run one read-only ClickHouse SQL statement over this store's tables and return typed rows.

        Tables: events, experiment_daily_metrics, experiment_user_covariates (see
        list_tables). Read `events FINAL` to count each event once. Refused: writes
        and DDL, several statements, SETTINGS/FORMAT/INTO OUTFILE, functions that
        reach files, URLs, other servers or databases or programs (file, url, s3,
        remote, mysql, executable, ...). Limits: execution time, result rows and bytes.

        Example: {"sql": "SELECT variant, uniqExact(user_id) AS users FROM events FINAL WHERE experiment_id = 'checkout-1step' AND event_type = 'exposure' GROUP BY variant"}
        """
        return await service.run_query(sql, limit)

    @mcp.tool(annotations=READ_ONLY)
    async def list_tables() -> TableList:
        """Describe the event store's schema: list its tables with engine, row count, size, sorting key and commented columns.

        Example: {}
        """
        return await service.list_tables()

    return mcp
