"""The ClickHouse server's logic: idempotent ingest, sufficient statistics,
insights, trends and guarded read-only SQL. Plain async methods, no MCP types.

Public API for other NeonBlue parts (the stream processor, the router, the
intelligence server):

    async with open_service(settings) as ch:
        await ch.ingest_json(jsoneachrow_bytes, token="topic/0/000000-000999")
        await ch.ingest_arrow(arrow_table, token="...")
        stats = await ch.get_variant_statistics("checkout-1step", metrics=["revenue"], cuped=True)

Idempotency: a token names one batch for good. Re-sending a batch with the
same token stores nothing (insert deduplication); events re-sent in different
batches collapse on event_id (ReplacingMergeTree) and every read counts each
event_id once (FINAL).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mcp_servers import stats
from schemas.errors import BackendUnavailable, InvalidInput, NotFound, QueryRefused
from schemas.event_rows import events_to_arrow
from schemas.events import Event

from . import ddl, forecast, queries
from .ingest import JSON_COLUMNS, JSON_SELECT, json_user_ids, normalize_event_table
from .models import (
    AnalyticsInsights,
    Backtest,
    ColumnInfo,
    DailyValue,
    DailyVolume,
    DataQualityFlag,
    ExposuresByPeriod,
    ForecastPoint,
    IngestResult,
    MetricSufficientStatistics,
    MetricSummary,
    PeriodExposures,
    QueryResult,
    RatioMetric,
    SegmentDifference,
    SegmentFilter,
    TableInfo,
    TableList,
    TrendForecast,
    VariantExposure,
    VariantForecast,
    VariantStatistics,
)
from .queries import epoch_ms as _ms
from .rollup import UserRollup
from .segments import SegmentStatisticsQueries
from .sql_guard import check_ast, check_text
from .store import TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, ClickHouseStore, QueryLimits, StoreError

log = logging.getLogger(__name__)

MAX_METRICS = 20
VOLUME_DROP_RATIO = 0.5
# An experiment whose first exposure came this long after midnight has a partial first day (the
# trend model shows it, never fits it; the same for a last day that has not ended yet).
PARTIAL_DAY_GAP = timedelta(hours=1)
# Engine errors that mean "this batch is bad", not "the engine is down".
_BAD_BATCH_CODES = {6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131, 395, 469, 1001}
_BAD_QUERY_CODES = {
    1, 35, 36, 42, 43, 44, 46, 47, 48, 49, 53, 60, 62, 69, 70, 81, 107, 179, 184, 190, 215, 352, 386, 395, 407,
}


_ENGINE_NOISE = re.compile(r"^(?:Code:\s*\d+\.\s*)?(?:DB::Exception:\s*)?|\s*\([A-Z_]+\)\s*\.?$|\.?\s*Stack trace.*$")


def _engine_reason(text: str) -> str:
    """The engine's reason without its code, exception class and error name (the first line only)."""
    first = text.strip().splitlines()[0] if text.strip() else "engine error"
    return _ENGINE_NOISE.sub("", first).strip() or first


def token_digest(token: str) -> str:
    """The dedup token stored by ClickHouse: a digest, so any caller string is safe."""
    if not token or len(token) > 512:
        raise InvalidInput("idempotency token must be 1..512 characters")
    return hashlib.sha256(token.encode()).hexdigest()


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    raise TypeError(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


WELCH_95 = stats.FrequentistConfig(relative=False)  # the absolute difference, two-sided, 95%


def _statistic(row: dict[str, Any], i: int) -> stats.SampleMeanStatistic:
    """Metric ``i`` of one breakdown cell as the engine's sufficient statistic (n, Σx, Σx²)."""
    return stats.SampleMeanStatistic(row["n"], float(row[f"s{i}"]), float(row[f"q{i}"]))


def _welch(variant: stats.SampleMeanStatistic, control: stats.SampleMeanStatistic):
    """95% CI (low, high) and two-sided p of variant − control by the engine's Welch test.

    None where no test is possible; two constant arms give the exact difference as a zero-width interval.
    """
    if variant.n < 2 or control.n < 2:
        return None, None, None
    if variant.variance <= 0 and control.variance <= 0:
        diff = variant.mean - control.mean
        return diff, diff, None
    result = stats.compare(control, variant, WELCH_95)
    if result.error:
        return None, None, None
    return result.ci[0], result.ci[1], result.p_value


def _mean_var(n: int, s: float, q: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    mean = s / n
    var = (q - s * s / n) / (n - 1) if n > 1 else 0.0
    return mean, max(var, 0.0)


class ClickHouseService(SegmentStatisticsQueries):
    """Events, statistics and analytics on ClickHouse (chDB or a server)."""

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        # chDB: every writer is in this process, so statistics can read a per-user rollup kept current
        # from the store's change log; a ClickHouse server (other writers) reads the events.
        self.rollup = UserRollup(store) if store.change_log is not None else None

    def _changed(self, users: pa.Array | pa.ChunkedArray | None) -> None:
        """Record the users of a stored batch (None: unknown) so the rollup recomputes them."""
        if self.store.change_log is not None:
            self.store.change_log.append(None if users is None else pc.unique(users))

    @property
    def db(self) -> str:
        return self.store.database

    async def migrate(self) -> None:
        """Create the database and tables if missing (idempotent)."""
        for statement in ddl.migrations(self.db):
            await self.store.execute(statement)

    # ------------------------------------------------------------------ ingest

    def _ingest_error(self, exc: StoreError) -> Exception:
        if exc.code in _BAD_BATCH_CODES:
            return InvalidInput(f"batch rejected, nothing stored: {exc}")
        return BackendUnavailable(f"ClickHouse ({self.store.engine}) failed to store the batch: {exc}")

    async def ingest_arrow(self, table: pa.Table, token: str) -> IngestResult:
        """Store a columnar batch of events once per `token`.

        `table` has the columns of `schemas.event_rows.EVENT_SCHEMA` (event_id, event_type,
        user_id, timestamp required; experiment_id, variant, metric, value,
        session_id, device, country, source, plan, raw optional). Conversion and
        revenue events get their default metric/value like `schemas.events.Event`.
        Raises InvalidInput (nothing stored) for a malformed batch.
        """
        digest = token_digest(token)
        started = time.perf_counter()
        batch = normalize_event_table(table)
        if batch.num_rows:
            try:
                await self.store.insert_arrow("events", batch, digest)
            except StoreError as exc:
                raise self._ingest_error(exc) from exc
            self._changed(batch.column("user_id"))
        return IngestResult(engine=self.store.engine, rows=batch.num_rows, idempotency_token=token,
                            elapsed_ms=(time.perf_counter() - started) * 1000)

    async def ingest_json(self, data: bytes, token: str) -> IngestResult:
        """Store JSONEachRow bytes (one `schemas.events.Event` JSON object per line) once per `token`.

        ClickHouse parses the lines (fast path, no Python per row); each line is
        kept verbatim in `raw`. A line without event_id/user_id/event_type/
        timestamp, with an unknown event_type or that is not JSON fails the whole
        batch (InvalidInput, nothing stored): validate upstream and send bad
        events to the DLQ.
        """
        digest = token_digest(token)
        started = time.perf_counter()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidInput("ingest_json takes bytes of JSONEachRow")
        data = bytes(data)
        rows = sum(1 for line in data.splitlines() if line.strip())
        if rows:
            try:
                await self.store.insert_json_select("events", JSON_COLUMNS, JSON_SELECT, data, digest)
            except StoreError as exc:
                raise self._ingest_error(exc) from exc
            if self.store.change_log is not None:
                self._changed(await anyio.to_thread.run_sync(json_user_ids, data))
        return IngestResult(engine=self.store.engine, rows=rows, idempotency_token=token,
                            elapsed_ms=(time.perf_counter() - started) * 1000)

    async def ingest_events(self, events: Sequence[Event], token: str) -> IngestResult:
        """Store validated `Event` models once per `token` (the `ingest_events` tool)."""
        return await self.ingest_arrow(events_to_arrow(events), token)

    # ------------------------------------------------------------------ windows

    async def _window(
        self, experiment_id: str, start_date: date | None, end_date: date | None
    ) -> tuple[datetime, datetime]:
        """[start, end): given dates (end inclusive); defaults: the first exposure, just after the last event."""
        if start_date and end_date and end_date < start_date:
            raise InvalidInput("end_date is before start_date")
        if start_date is None or end_date is None:
            row = _rows(await self.store.query(queries.exposure_bounds_sql(self.db), {"exp": experiment_id}))[0]
            if not row["n"]:
                raise NotFound(f"no exposure events for experiment {experiment_id!r} in {self.db}.events")
            first, last = _utc(row["first"]), _utc(row["last"])
        start = _day_start(start_date) if start_date else first
        end = _day_start(end_date + timedelta(days=1)) if end_date else last + timedelta(milliseconds=1)
        return start, end

    # ------------------------------------------------------------------ statistics

    async def get_variant_statistics(
        self,
        experiment_id: str,
        metrics: Sequence[str] = (),
        ratio_metrics: Sequence[RatioMetric] = (),
        *,
        start_date: date | None = None,
        end_date: date | None = None,
        segment: SegmentFilter | None = None,
        cuped: bool = False,
        cuped_lookback_days: int = 14,
        use_rollup: bool = True,
    ) -> VariantStatistics:
        """Per variant and metric: the sufficient statistics over users (see `queries`).

        Users with an exposure in the window, their first-exposure variant,
        per-user metric sums, CUPED pre-period sums — summed per variant. Over the
        default window and CUPED lookback on chDB this reads the per-user rollup
        (`rollup.py`, brought up to date first); otherwise one pass over
        `events FINAL`. Both give the same numbers (`use_rollup=False` forces the
        events, for checks).
        """
        started = time.perf_counter()
        metrics = list(dict.fromkeys(metrics))
        if not metrics and not ratio_metrics:
            raise InvalidInput("name at least one metric or ratio metric")
        if not 1 <= cuped_lookback_days <= 365:
            raise InvalidInput("cuped_lookback_days must be within 1..365")
        names = list(dict.fromkeys([*metrics, *(n for r in ratio_metrics for n in (r.numerator, r.denominator))]))
        if len(names) > MAX_METRICS:
            raise InvalidInput(f"at most {MAX_METRICS} distinct metrics per call")
        index = {name: i for i, name in enumerate(names)}
        pairs = [(index[r.numerator], index[r.denominator]) for r in ratio_metrics]
        filters = segment.items() if segment else []
        use_rollup = self.rollup is not None and use_rollup and self.rollup.serves(
            custom_window=start_date is not None or end_date is not None, segment=bool(filters), cuped=cuped,
            lookback_days=cuped_lookback_days)
        if use_rollup:
            window = await self.rollup.ensure(experiment_id)
            start, end = window.start, window.end
        else:
            start, end = await self._window(experiment_id, start_date, end_date)
        pre_start = start - timedelta(days=cuped_lookback_days)
        params: dict[str, Any] = {"exp": experiment_id, "start_ms": _ms(start), "end_ms": _ms(end),
                                  "pre_ms": _ms(pre_start)}
        params.update({f"m{i}": name for i, name in enumerate(names)})
        params.update({f"seg_{dim}": value for dim, value in filters})
        if use_rollup:
            params["base"] = window.base
            sql = queries.rollup_statistics_sql(self.db, len(names), pairs, cuped=cuped)
        else:
            sql = queries.variant_statistics_sql(self.db, len(names), pairs, cuped=cuped,
                                                 segment_filters=[d for d, _ in filters])
        try:
            rows = _rows(await self.store.query(sql, params))
        except StoreError as exc:
            raise BackendUnavailable(f"statistics query failed: {exc}") from exc
        exposure: dict[str, dict[str, int]] = defaultdict(lambda: {"users": 0, "mixed": 0})
        statistics: list[MetricSufficientStatistics] = []
        for row in rows:
            variant = row["variant"]
            if row["mixed"]:
                exposure[variant]["mixed"] += row["n"]
                continue
            exposure[variant]["users"] += row["n"]
            for name in metrics:
                i = index[name]
                statistics.append(MetricSufficientStatistics(
                    variant=variant, metric=name, kind="mean", n=row["n"], sum=row[f"s{i}"],
                    sum_squares=row[f"q{i}"], users_with_metric=row[f"z{i}"],
                    pre_sum=row[f"a{i}"] if cuped else None,
                    pre_sum_squares=row[f"b{i}"] if cuped else None,
                    post_pre_sum_of_products=row[f"c{i}"] if cuped else None,
                ))
            for k, ratio in enumerate(ratio_metrics):
                i, j = pairs[k]
                statistics.append(MetricSufficientStatistics(
                    variant=variant, metric=ratio.name, kind="ratio", n=row["n"], sum=row[f"s{i}"],
                    sum_squares=row[f"q{i}"], users_with_metric=row[f"z{i}"],
                    numerator_metric=ratio.numerator, denominator_metric=ratio.denominator,
                    denominator_sum=row[f"s{j}"], denominator_sum_squares=row[f"q{j}"],
                    m_d_sum_of_products=row[f"r{k}"],
                ))
        return VariantStatistics(
            experiment_key=experiment_id, engine=self.store.engine, window_start=start, window_end=end,
            pre_period_start=pre_start if cuped else None, pre_period_end=start if cuped else None,
            segment=segment if filters else None,
            variants=[VariantExposure(variant=v, users=e["users"], excluded_multiple_variants=e["mixed"])
                      for v, e in sorted(exposure.items())],
            statistics=statistics,
            computed_from="user rollup" if use_rollup else "events",
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    async def refresh_covariates(
        self, experiment_id: str, metrics: Sequence[str], *, lookback_days: int = 14,
        start_date: date | None = None, end_date: date | None = None,
    ) -> int:
        """Materialise per-user pre-period covariates (CUPED) into `experiment_user_covariates`.

        The rows match what `get_variant_statistics(..., cuped=True)` uses for the
        same window (a user's newest computation wins); returns the number of rows
        now stored for the experiment, the metrics and `lookback_days`.
        """
        start, end = await self._window(experiment_id, start_date, end_date)
        written = 0
        for metric in dict.fromkeys(metrics):
            params = {"exp": experiment_id, "metric": metric, "lookback": lookback_days,
                      "start_ms": _ms(start), "end_ms": _ms(end),
                      "pre_ms": _ms(start - timedelta(days=lookback_days))}
            await self.store.execute(queries.refresh_covariates_sql(self.db), params)
            count = await self.store.query(
                f"SELECT count() AS n FROM {self.db}.experiment_user_covariates FINAL "
                "WHERE experiment_id = {exp:String} AND metric = {metric:String} AND lookback_days = {lookback:UInt16}",
                params,
            )
            written += int(count.column("n")[0].as_py())
        return written

    async def get_exposures_by_period(self, experiment_id: str, boundaries: Sequence[datetime]) -> ExposuresByPeriod:
        """Users per variant by the period of their first exposure, periods split at `boundaries`.

        Counts the users first exposed in [boundaries[0], boundaries[-1]) to one variant only (as
        `get_variant_statistics` does), per period [boundaries[k], boundaries[k+1]). Naive times are UTC.
        """
        started = time.perf_counter()
        bounds = [_utc(b) for b in boundaries]
        if len(bounds) < 2 or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            raise InvalidInput("boundaries must be at least two strictly increasing times")
        params: dict[str, Any] = {"exp": experiment_id, "start_ms": _ms(bounds[0]), "end_ms": _ms(bounds[-1])}
        params.update({f"cut{i}": _ms(b) for i, b in enumerate(bounds[1:-1])})
        rows = _rows(await self.store.query(queries.exposures_by_period_sql(self.db, len(bounds) - 2), params))
        users: list[dict[str, int]] = [{} for _ in bounds[:-1]]
        for row in rows:
            users[int(row["period"])][str(row["variant"])] = int(row["users"])
        return ExposuresByPeriod(
            experiment_key=experiment_id,
            periods=[PeriodExposures(start=bounds[k], end=bounds[k + 1], users=users[k]) for k in range(len(users))],
            elapsed_ms=(time.perf_counter() - started) * 1000)

    # ------------------------------------------------------------------ daily rollups

    async def refresh_daily_metrics(self, experiment_id: str) -> None:
        """Recompute `experiment_daily_metrics` for one experiment from deduplicated events."""
        await self.store.execute(queries.refresh_daily_metrics_sql(self.db), {"exp": experiment_id})

    async def _daily(self, experiment_id: str, metric: str, start_day: date, end_day: date) -> list[dict[str, Any]]:
        return _rows(await self.store.query(
            queries.daily_metrics_sql(self.db),
            {"exp": experiment_id, "metric": metric, "start_day": start_day.isoformat(),
             "end_day": end_day.isoformat()},
        ))

    # ------------------------------------------------------------------ insights

    async def generate_analytics_insights(
        self,
        experiment_id: str,
        metrics: Sequence[str],
        *,
        control_variant: str | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        expected_weights: dict[str, float] | None = None,
        min_segment_users: int = 30,
        top_segments: int = 10,
    ) -> AnalyticsInsights:
        """Computed tables and flags for one experiment: per-variant metric table with
        Welch comparisons to the control, segment differences ranked by |z|, daily
        volume, data-quality flags; summary sentences are templates over those numbers."""
        started = time.perf_counter()
        metrics = list(dict.fromkeys(metrics))
        if not metrics or len(metrics) > MAX_METRICS:
            raise InvalidInput(f"name 1..{MAX_METRICS} metrics")
        start, end = await self._window(experiment_id, start_date, end_date)
        params: dict[str, Any] = {"exp": experiment_id, "start_ms": _ms(start), "end_ms": _ms(end)}
        params.update({f"m{i}": name for i, name in enumerate(metrics)})
        rows = _rows(await self.store.query(queries.segment_breakdown_sql(self.db, len(metrics)), params))
        cells: dict[tuple[str, str, str], dict[str, Any]] = {}
        mixed_users = 0
        for row in rows:
            if row["mixed"]:
                if row["dimension"] == "all":
                    mixed_users += row["n"]
                continue
            cells[(row["dimension"], row["segment"], row["variant"])] = row
        variants = sorted(v for (d, _, v) in cells if d == "all")
        if not variants:
            raise NotFound(f"no exposed users for experiment {experiment_id!r} in the window")
        control = control_variant or ("control" if "control" in variants else variants[0])
        if control not in variants:
            raise InvalidInput(f"control variant {control!r} has no exposed users; variants: {variants}")

        def summary(row: dict[str, Any], i: int) -> tuple[int, float, float]:
            mean, var = _mean_var(row["n"], row[f"s{i}"], row[f"q{i}"])
            return row["n"], mean, var

        metric_table: list[MetricSummary] = []
        for i, metric in enumerate(metrics):
            n_c, mean_c, var_c = summary(cells[("all", "", control)], i)
            for variant in variants:
                n_v, mean_v, var_v = summary(cells[("all", "", variant)], i)
                if variant == control:
                    metric_table.append(MetricSummary(metric=metric, variant=variant, users=n_v, mean=mean_v,
                                                      std_dev=math.sqrt(var_v), difference=None,
                                                      relative_lift=None, ci95_low=None, p_value=None))
                    continue
                diff = mean_v - mean_c
                lo, hi, p = _welch(_statistic(cells[("all", "", variant)], i), _statistic(cells[("all", "", control)], i))
                metric_table.append(MetricSummary(
                    metric=metric, variant=variant, users=n_v, mean=mean_v, std_dev=math.sqrt(var_v),
                    difference=diff, relative_lift=diff / mean_c if mean_c else None,
                    ci95_low=lo, ci95_high=hi, p_value=p))

        segment_rows: list[SegmentDifference] = []
        for (dimension, segment, variant), row in cells.items():
            if dimension == "all" or variant == control or segment == "":
                continue
            base = cells.get((dimension, segment, control))
            if base is None or row["n"] < min_segment_users or base["n"] < min_segment_users:
                continue
            for i, metric in enumerate(metrics):
                n_v, mean_v, var_v = summary(row, i)
                n_c, mean_c, var_c = summary(base, i)
                se = math.sqrt(var_v / n_v + var_c / n_c)
                if se == 0:
                    continue
                diff = mean_v - mean_c
                segment_rows.append(SegmentDifference(
                    dimension=dimension, segment=segment, metric=metric, variant=variant,
                    control_users=n_c, variant_users=n_v, control_mean=mean_c, variant_mean=mean_v,
                    difference=diff, relative_lift=diff / mean_c if mean_c else None, z_score=diff / se))
        segment_rows.sort(key=lambda s: abs(s.z_score), reverse=True)
        segment_rows = segment_rows[:top_segments]

        await self.refresh_daily_metrics(experiment_id)
        daily = await self._daily(experiment_id, "", start.date(), (end - timedelta(milliseconds=1)).date())
        volume = [DailyVolume(date=r["date"], variant=r["variant"], active_users=r["users"],
                              new_users=r["new_users"], events=r["events"]) for r in daily if r["metric"] == ""]
        flags = await self._quality_flags(experiment_id, params, start, end, cells, variants, mixed_users,
                                          volume, expected_weights)
        sentences = self._summary_sentences(experiment_id, control, variants, cells, metric_table, segment_rows,
                                            flags, start, end, volume)
        return AnalyticsInsights(
            experiment_key=experiment_id, window_start=start, window_end=end, control_variant=control,
            metric_table=metric_table, segment_differences=segment_rows, daily_volume=volume,
            data_quality=flags, summary=sentences, elapsed_ms=(time.perf_counter() - started) * 1000)

    async def _quality_flags(
        self, experiment_id: str, params: dict[str, Any], start: datetime, end: datetime,
        cells: dict[tuple[str, str, str], dict[str, Any]], variants: list[str], mixed_users: int,
        volume: list[DailyVolume], expected_weights: dict[str, float] | None,
    ) -> list[DataQualityFlag]:
        flags: list[DataQualityFlag] = []
        users = {v: cells[("all", "", v)]["n"] for v in variants}
        total = sum(users.values())
        # Sample ratio mismatch: χ² of users per variant against the intended split.
        weights = expected_weights or {v: 1.0 for v in variants}
        unknown = sorted(set(weights) - set(variants))
        weight_sum = math.fsum(weights.values())
        if len(weights) >= 2 and total and weight_sum > 0 and not unknown:
            shares = [w / weight_sum for w in weights.values()]
            srm = stats.srm_check([users.get(v, 0) for v in weights], shares)
            if srm.flagged:
                flags.append(DataQualityFlag(
                    code="sample_ratio_mismatch", severity="critical",
                    message=(f"Sample ratio mismatch: users per variant {dict(zip(weights, srm.observed, strict=True))} "
                             f"vs expected shares {dict(zip(weights, [round(x, 4) for x in shares], strict=True))} "
                             f"(chi2 = {srm.chi2:.1f}, p = {srm.p_value:.2g} < {stats.SRM_THRESHOLD})."),
                    details={"chi2": srm.chi2, "p_value": srm.p_value, "observed": users,
                             "expected": dict(zip(weights, srm.expected, strict=True))}))
        if mixed_users:
            share = mixed_users / (total + mixed_users)
            flags.append(DataQualityFlag(
                code="multiple_variant_users", severity="warning" if share > 0.01 else "info",
                message=f"{mixed_users} users ({share:.2%}) were exposed to more than one variant and are left out.",
                details={"users": mixed_users, "share": share}))
        orphan = _rows(await self.store.query(queries.orphan_metric_users_sql(self.db), params))[0]
        if orphan["users"]:
            flags.append(DataQualityFlag(
                code="metric_events_without_exposure", severity="warning",
                message=(f"{orphan['users']} users sent {orphan['events']} metric events tagged with the experiment "
                         "but have no exposure; they are not counted."),
                details={"users": orphan["users"], "events": orphan["events"]}))
        pending = _rows(await self.store.query(queries.stored_duplicates_sql(self.db), {"exp": experiment_id}))[0]
        if pending["pending"]:
            flags.append(DataQualityFlag(
                code="duplicates_pending_merge", severity="info",
                message=(f"{pending['pending']} duplicate event rows are stored awaiting merge; "
                         "every statistic counts each event_id once."),
                details={"rows": pending["pending"]}))
        future = _rows(await self.store.query(queries.future_events_sql(self.db), {"exp": experiment_id}))[0]
        if future["events"]:
            flags.append(DataQualityFlag(
                code="future_timestamps", severity="warning",
                message=f"{future['events']} events have timestamps more than 1 hour in the future.",
                details={"events": future["events"]}))
        # Daily volume: days without any event, and drops against the trailing median.
        per_day: dict[date, int] = defaultdict(int)
        for row in volume:
            per_day[row.date] += row.events
        first_day, last_day = start.date(), (end - timedelta(milliseconds=1)).date()
        all_days = [first_day + timedelta(days=k) for k in range((last_day - first_day).days + 1)]
        missing = [d for d in all_days if per_day.get(d, 0) == 0]
        if missing:
            flags.append(DataQualityFlag(
                code="missing_days", severity="warning",
                message=(f"{len(missing)} of {len(all_days)} days have no events: "
                         + ", ".join(d.isoformat() for d in missing[:10]) + ("…" if len(missing) > 10 else "") + "."),
                details={"days": [d.isoformat() for d in missing], "days_in_window": len(all_days)}))
        partial_last = end != _day_start(end.date())
        checked = all_days[:-1] if partial_last else all_days
        drops = []
        for k, day in enumerate(checked):
            history = [per_day.get(d, 0) for d in all_days[max(0, k - 7):k] if per_day.get(d, 0) > 0]
            if len(history) < 3 or per_day.get(day, 0) == 0:
                continue
            baseline = float(np.median(history))
            ratio = per_day[day] / baseline
            if ratio < VOLUME_DROP_RATIO:
                drops.append({"date": day.isoformat(), "events": per_day[day], "trailing_median": baseline,
                              "ratio": ratio})
        if drops:
            worst = min(drops, key=lambda d: d["ratio"])
            flags.append(DataQualityFlag(
                code="event_volume_drop", severity="warning",
                message=(f"Event volume fell below {VOLUME_DROP_RATIO:.0%} of the trailing 7-day median on "
                         f"{len(drops)} day(s); worst {worst['date']}: {worst['events']} events vs median "
                         f"{worst['trailing_median']:.0f} ({worst['ratio']:.0%})."),
                details={"days": drops, "last_day_partial_and_skipped": partial_last}))
        return flags

    @staticmethod
    def _summary_sentences(
        experiment_id: str, control: str, variants: list[str], cells: dict, metric_table: list[MetricSummary],
        segment_rows: list[SegmentDifference], flags: list[DataQualityFlag], start: datetime, end: datetime,
        volume: list[DailyVolume],
    ) -> list[str]:
        users = sum(cells[("all", "", v)]["n"] for v in variants)
        events = sum(v.events for v in volume)
        days = (end - start).total_seconds() / 86400
        sentences = [f"{experiment_id}: {users} exposed users in {len(variants)} variants over {days:.1f} days; "
                     f"{events} events."]
        for row in metric_table:
            if row.difference is None:
                continue
            control_mean = row.mean - row.difference
            lift = f"{row.relative_lift:+.1%}" if row.relative_lift is not None else "n/a"
            ci = (f"95% CI of the difference [{row.ci95_low:.4g}, {row.ci95_high:.4g}], p = {row.p_value:.3g}"
                  if row.ci95_low is not None and row.p_value is not None else "too few users for an interval")
            sentences.append(f"{row.variant} vs {control} on {row.metric}: {row.mean:.4g} vs {control_mean:.4g} "
                             f"per user ({lift}; {ci}).")
        if segment_rows:
            s = segment_rows[0]
            lift = f"{s.relative_lift:+.1%}" if s.relative_lift is not None else f"{s.difference:+.4g}"
            sentences.append(f"Largest segment difference: {s.dimension}={s.segment}, {s.variant} vs {control} on "
                             f"{s.metric}: {s.variant_mean:.4g} vs {s.control_mean:.4g} ({lift}, z = {s.z_score:.2f}, "
                             f"n = {s.variant_users}/{s.control_users}).")
        sentences += [f.message for f in flags]
        return sentences

    # ------------------------------------------------------------------ trends

    async def predict_experiment_trends(
        self,
        experiment_id: str,
        metric: str,
        days_ahead: int = 7,
        *,
        history_days: int = 90,
        statistic: str = "mean_per_active_user",
        interval: float = 0.95,
    ) -> TrendForecast:
        """Forecast the daily metric per variant `days_ahead` days past the last observed day."""
        started = time.perf_counter()
        if not 1 <= days_ahead <= 90:
            raise InvalidInput("days_ahead must be within 1..90")
        if not forecast.MIN_DAYS <= history_days <= 90:
            raise InvalidInput(f"history_days must be within {forecast.MIN_DAYS}..90")
        if statistic not in ("mean_per_active_user", "total", "share_of_active_users"):
            raise InvalidInput("statistic must be mean_per_active_user, total or share_of_active_users")
        if not 0.5 <= interval < 1:
            raise InvalidInput("interval must be within [0.5, 1)")
        start, end = await self._window(experiment_id, None, None)
        await self.refresh_daily_metrics(experiment_id)
        last_day = (end - timedelta(milliseconds=1)).date()
        first_day = max(start.date(), last_day - timedelta(days=history_days - 1))
        rows = await self._daily(experiment_id, metric, first_day, last_day)
        active: dict[tuple[str, date], int] = {}
        measured: dict[tuple[str, date], dict[str, Any]] = {}
        for row in rows:
            key = (row["variant"], row["date"])
            if row["metric"] == "":
                active[key] = row["users"]
            else:
                measured[key] = row
        if not measured:
            raise NotFound(f"no {metric!r} events for experiment {experiment_id!r}")
        variants = sorted({v for v, _ in active})
        # Partial days: the last one while it has not ended (today: its events are still arriving, and
        # the late conversions of yesterday's users crowd a short day), the first one when the experiment
        # started well into it. Their values are biased, so they are shown, flagged, and not fitted.
        partial = set()
        if first_day == start.date() and start - _day_start(first_day) > PARTIAL_DAY_GAP:
            partial.add(first_day)
        if _day_start(last_day + timedelta(days=1)) > datetime.now(UTC):
            partial.add(last_day)
        results: list[VariantForecast] = []
        weekly_any = False
        for variant in variants:
            days = sorted(d for v, d in active if v == variant and active[(v, d)] > 0)
            series: list[DailyValue] = []
            for day in days:
                m = measured.get((variant, day), {"value_sum": 0.0, "users": 0})
                n_active = active[(variant, day)]
                value = {"mean_per_active_user": m["value_sum"] / n_active, "total": m["value_sum"],
                         "share_of_active_users": m["users"] / n_active}[statistic]
                series.append(DailyValue(date=day, value=value, active_users=n_active, partial=day in partial))
            complete = [p for p in series if not p.partial]
            if len(complete) < forecast.MIN_DAYS:
                skipped = f" ({len(series) - len(complete)} partial day(s) not used)" if len(complete) < len(series) else ""
                raise InvalidInput(f"variant {variant!r} has {len(complete)} complete observed days{skipped}; "
                                   f"the model needs at least {forecast.MIN_DAYS}")
            obs_days = [p.date for p in complete]
            values = [p.value for p in complete]
            model = forecast.fit(obs_days, values)
            weekly_any |= model.weekly
            # From the day after the last complete one: a partial last day gets its full-day forecast.
            ahead = forecast.future_days(obs_days[-1], days_ahead + (series[-1].date - obs_days[-1]).days)
            mean, lower, upper = model.predict(ahead, interval)
            level = float(model.predict([obs_days[-1]], interval)[0][0])
            score = forecast.backtest(obs_days, values, horizon=min(days_ahead, 7), weekly=model.weekly)
            results.append(VariantForecast(
                variant=variant, history=series,
                forecast=[ForecastPoint(date=d, predicted=float(m), lower=float(lo), upper=float(hi))
                          for d, m, lo, hi in zip(ahead, mean, lower, upper, strict=True)],
                level=level, slope_per_day=model.slope, day_of_week_effects=model.weekday_effects(),
                residual_std=model.residual_std,
                backtest=Backtest(method="rolling origin, refit at each origin", origins=score.origins,
                                  horizon_days=score.horizon, mae=score.mae, mape=score.mape,
                                  naive_mae=score.naive_mae) if score else None,
            ))
        return TrendForecast(
            experiment_key=experiment_id, metric=metric, statistic=statistic,  # type: ignore[arg-type]
            model=forecast.describe_model(weekly_any), history_days=history_days, days_ahead=days_ahead,
            interval=interval, variants=results, partial_days=sorted(partial),
            elapsed_ms=(time.perf_counter() - started) * 1000)

    # ------------------------------------------------------------------ SQL

    async def _databases(self) -> list[str]:
        return [r["name"] for r in _rows(await self.store.query("SELECT name FROM system.databases"))]

    def _query_error(self, exc: StoreError) -> Exception:
        """One line for the caller: which limit stopped the query and what to do, or the engine's reason."""
        limits: QueryLimits = getattr(self.store, "limits", None) or QueryLimits()
        reason = _engine_reason(str(exc))
        if exc.code in (TIMEOUT_EXCEEDED, 160):  # 160: estimated to be too slow for the limit
            return QueryRefused(
                f"clickhouse_query stopped the query at its {limits.max_execution_seconds} s execution-time limit: "
                "filter to fewer rows (an experiment_id, a time range), aggregate instead of listing rows, or "
                "use approximate functions; the limit is the clickhouse_query_timeout_seconds setting")
        if exc.code in (241, 173):  # MEMORY_LIMIT_EXCEEDED, CANNOT_ALLOCATE_MEMORY
            return QueryRefused(
                f"clickhouse_query stopped the query at its {limits.max_memory_bytes // 2**20} MB per-query "
                "memory limit: filter rows first, group by fewer or lower-cardinality keys, or use approximate "
                "functions (uniq, quantile) instead of exact ones; the limit is the clickhouse_query_max_memory_mb "
                "setting")
        if exc.code in (396, 158, 307):  # TOO_MANY_ROWS_OR_BYTES, TOO_MANY_ROWS, TOO_MANY_BYTES
            return QueryRefused(
                f"clickhouse_query stopped the query at its result-size limit ({limits.max_result_rows} rows, "
                f"{limits.max_result_bytes // 2**20} MB): select fewer columns, aggregate or add LIMIT")
        if exc.code == TOO_MANY_SIMULTANEOUS_QUERIES:
            return BackendUnavailable(
                f"clickhouse_query is busy: {limits.max_concurrent} queries are running, the most it runs at once "
                "(the clickhouse_query_concurrency setting); try again in a few seconds")
        if exc.code == 164:
            return QueryRefused(f"refused by readonly=1 (read-only access): {reason}")
        if exc.code in _BAD_QUERY_CODES or exc.code is None:
            return InvalidInput(f"ClickHouse rejected the query: {reason}")
        return BackendUnavailable(f"ClickHouse ({self.store.engine}) failed: {reason}")

    async def run_query(self, sql: str, max_rows: int = 1000) -> QueryResult:
        """Run one read-only statement (guarded, readonly=1, limits) and return typed rows."""
        if not 1 <= max_rows <= 10_000:
            raise InvalidInput("max_rows must be within 1..10000")
        statement = check_text(sql, own_database=self.db, other_databases=await self._databases())
        try:
            ast = await self.store.sandbox_query("EXPLAIN AST " + statement)
        except StoreError as exc:
            raise self._query_error(exc) from exc
        check_ast([str(v) for v in ast.column(0).to_pylist()], own_database=self.db)
        started = time.perf_counter()
        try:
            table = await self.store.sandbox_query(statement)
        except StoreError as exc:
            raise self._query_error(exc) from exc
        elapsed = (time.perf_counter() - started) * 1000
        limits = getattr(self.store, "limits", None)
        cap = min(max_rows, limits.max_result_rows) if limits else max_rows
        truncated = table.num_rows > cap
        table = table.slice(0, cap)
        names = table.column_names
        rows = [[_json_safe(row[c]) for c in names] for row in table.to_pylist()] if names else []
        return QueryResult(
            columns=[ColumnInfo(name=f.name, type=str(f.type)) for f in table.schema],
            rows=rows, row_count=len(rows), truncated=truncated, elapsed_ms=elapsed)

    async def list_tables(self) -> TableList:
        """The store's tables with engine, size, sorting key and commented columns."""
        tables = _rows(await self.store.query(queries.tables_sql(), {"db": self.db}))
        columns: dict[str, list[ColumnInfo]] = defaultdict(list)
        for row in _rows(await self.store.query(queries.columns_sql(), {"db": self.db})):
            columns[row["table"]].append(ColumnInfo(name=row["name"], type=row["type"], comment=row["comment"]))
        return TableList(database=self.db, engine=self.store.engine, tables=[
            TableInfo(name=t["name"], engine=t["engine"], rows=t["total_rows"], bytes_on_disk=t["total_bytes"],
                      comment=t["comment"], sorting_key=t["sorting_key"], columns=columns[t["name"]])
            for t in tables])

