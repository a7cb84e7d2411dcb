"""The ClickHouse tables, created idempotently in the store's database.

- `events`: the firehose. A ReplacingMergeTree keyed by (experiment_id, user_id,
  event_id), so a replay with any batch boundaries collapses to one row per
  event on merge, and every statistics query reads it with FINAL so an event is
  counted once even before the merge. `non_replicated_deduplication_window`
  makes the caller's idempotency token (`insert_deduplication_token`) drop a
  re-sent batch at insert time. Partitions are weeks of the event's own
  timestamp, so copies of one event always share a partition (FINAL can work
  partition by partition), a time-ordered stream touches one or two partitions
  per insert, and settled weeks merge into single parts that FINAL reads free.
- `experiment_daily_metrics`: daily per-variant rollups, recomputed from the
  deduplicated events by `refresh_daily_metrics` (ReplacingMergeTree on the
  computation time: the newest computation of a day wins).
- `experiment_user_covariates`: per-user pre-period values of a metric for CUPED,
  materialised by `refresh_covariates`.
- `experiment_user_rollup`: one row per (experiment, user) with everything
  `get_variant_statistics` needs over the experiment's whole window — variant,
  per-metric sums and pre-period sums — kept current by `rollup.py`
  (users whose events changed are recomputed from `events FINAL`), so a
  statistics call reads a million users instead of re-aggregating every event.

Every column carries a comment: `list_tables` shows them to the model.
"""

from __future__ import annotations

# Insert blocks whose tokens are remembered per table; a batch re-sent after this many
# newer inserts is still collapsed by the ReplacingMergeTree key.
DEDUP_WINDOW = 10_000

EVENTS = """
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id String COMMENT 'Unique id of the event; replays of one event collapse to one row',
    event_type LowCardinality(String) COMMENT 'exposure, conversion, metric, revenue, page_view, click, llm_response, ...',
    experiment_id LowCardinality(String) COMMENT 'Experiment key; empty when the event belongs to none',
    variant LowCardinality(String) COMMENT 'Variant key carried by the event (exposures define the user''s variant)',
    user_id String COMMENT 'The unit of analysis',
    metric LowCardinality(String) COMMENT 'Metric measured (conversion and revenue events default to their type); empty if none',
    value Nullable(Float64) COMMENT 'Measured value (conversion defaults to 1); NULL when the event carries none',
    timestamp DateTime64(3, 'UTC') COMMENT 'When the event happened (UTC)',
    session_id String COMMENT 'Session id, empty if unknown',
    device LowCardinality(String) COMMENT 'segment.device',
    country LowCardinality(String) COMMENT 'segment.country',
    source LowCardinality(String) COMMENT 'segment.source',
    plan LowCardinality(String) COMMENT 'segment.plan',
    raw String CODEC(ZSTD(1)) COMMENT 'The original event JSON',
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When NeonBlue stored the row',
    CONSTRAINT event_id_present CHECK event_id != '',
    CONSTRAINT user_id_present CHECK user_id != '',
    CONSTRAINT event_type_present CHECK event_type != ''
)
ENGINE = ReplacingMergeTree
PARTITION BY toMonday(timestamp)
ORDER BY (experiment_id, user_id, event_id)
SETTINGS non_replicated_deduplication_window = {window}
COMMENT 'Raw events, one row per event_id after merges; read with FINAL to count each event once'
"""

DAILY_METRICS = """
CREATE TABLE IF NOT EXISTS {db}.experiment_daily_metrics
(
    experiment_id LowCardinality(String),
    date Date COMMENT 'UTC day',
    variant LowCardinality(String) COMMENT 'Variant of the user''s first exposure',
    metric LowCardinality(String) COMMENT 'Metric name; empty = all activity of the day (users active, new users, events)',
    users UInt64 COMMENT 'Users with the metric that day (empty metric: users active that day)',
    new_users UInt64 COMMENT 'Users first exposed that day (empty metric only)',
    events UInt64 COMMENT 'Events that day',
    value_sum Float64 COMMENT 'Sum of values that day',
    value_sum_squares Float64 COMMENT 'Sum over users of (their value that day) squared',
    computed_at DateTime64(3, 'UTC') COMMENT 'When this row was computed; the newest wins'
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (experiment_id, metric, variant, date)
COMMENT 'Daily per-variant rollups recomputed from deduplicated events (read with FINAL)'
"""

USER_COVARIATES = """
CREATE TABLE IF NOT EXISTS {db}.experiment_user_covariates
(
    experiment_id LowCardinality(String),
    metric LowCardinality(String),
    lookback_days UInt16 COMMENT 'Length of the pre-period',
    user_id String,
    variant LowCardinality(String) COMMENT 'Variant of the user''s first exposure',
    pre_period_start DateTime64(3, 'UTC'),
    pre_period_end DateTime64(3, 'UTC') COMMENT 'Experiment start: the pre-period ends here',
    value Float64 COMMENT 'Sum of the metric for the user in the pre-period (0 if none)',
    events UInt32 COMMENT 'Metric events in the pre-period',
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY (experiment_id, metric, lookback_days, user_id)
COMMENT 'Per-user pre-period covariates for CUPED (read with FINAL)'
"""

USER_ROLLUP = """
CREATE TABLE IF NOT EXISTS {db}.experiment_user_rollup
(
    experiment_id LowCardinality(String),
    user_id String,
    window_start DateTime64(3, 'UTC') COMMENT 'The experiment''s first exposure: metric sums count events from here on',
    lookback_days UInt16 COMMENT 'Length of the CUPED pre-period ending at window_start',
    assigned LowCardinality(String) COMMENT 'Variant of the user''s first exposure',
    mixed UInt8 COMMENT '1 when the user was exposed to more than one variant (left out of the statistics)',
    exposures UInt32 COMMENT 'Exposure events of the user (0: events tagged with the experiment but no exposure yet)',
    first_exposure DateTime64(3, 'UTC'),
    last_event DateTime64(3, 'UTC') COMMENT 'Latest event of the user tagged with the experiment',
    metric_values Map(LowCardinality(String), Float64) COMMENT 'Per metric: the user''s sum of values in the experiment',
    pre_values Map(LowCardinality(String), Float64) COMMENT 'Per metric: the user''s sum in the pre-period (any experiment)',
    version UInt64 COMMENT 'When the row was computed (ns); the newest wins'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (experiment_id, user_id)
COMMENT 'Per-user rollup of each experiment for get_variant_statistics (read with FINAL)'
"""

TABLES = ("events", "experiment_daily_metrics", "experiment_user_covariates", "experiment_user_rollup")


def migrations(database: str) -> list[str]:
    """The statements that create the database and its tables (all idempotent)."""
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        EVENTS.format(db=database, window=DEDUP_WINDOW),
        DAILY_METRICS.format(db=database),
        USER_COVARIATES.format(db=database),
        USER_ROLLUP.format(db=database),
    ]
