"""The analytical SQL of the ClickHouse server, built from trusted pieces only.

Every value (experiment key, metric names, segment values, time bounds) is a
bound parameter `{name:Type}`; the builders only choose among fixed fragments
and number the parameters. Tables are named `database.table` (the database
name is validated against `^[A-Za-z_][A-Za-z0-9_]*$` by the store).

Per-user semantics (the unit of analysis is the user):
- a user belongs to the experiment when they have an exposure in the window;
  their variant is the one of their first exposure, and users exposed to more
  than one variant are counted apart and left out of the statistics;
- a user's value of a metric is the sum of that metric over their events
  tagged with the experiment in the window; exposed users without the metric
  count as 0 (exposures define n);
- the CUPED covariate is the same metric summed over the user's events (of any
  experiment) in the pre-period [window start - lookback, window start).
Events are read with FINAL, so each event_id counts once even before merges.
FINAL runs per partition (`do_not_merge_across_partitions_select_final`): copies
of an event share its partition (the week of its own timestamp), and a partition
already merged into one part costs nothing to read FINAL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

SEGMENT_DIMENSIONS = ("device", "country", "source", "plan")


def epoch_ms(moment: datetime) -> int:
    """A time as the Unix milliseconds the `{…_ms:Int64}` parameters below take."""
    return int(moment.timestamp() * 1000)


_MS = "fromUnixTimestamp64Milli({%s:Int64}, 'UTC')"
IN_WINDOW = f"timestamp >= {_MS % 'start_ms'} AND timestamp < {_MS % 'end_ms'}"
IN_PRE = f"timestamp >= {_MS % 'pre_ms'} AND timestamp < {_MS % 'start_ms'}"
IN_EXPERIMENT = f"experiment_id = {{exp:String}} AND {IN_WINDOW}"
PER_PARTITION_FINAL = "SETTINGS do_not_merge_across_partitions_select_final = 1"


def per_user_sql(
    db: str,
    n_metrics: int,
    *,
    cuped: bool,
    segment_columns: Sequence[str] = (),
    segment_filters: Sequence[str] = (),
    include_unexposed: bool = False,
) -> str:
    """One row per user: assigned (variant), mixed, exposures, x{i} (and y{i} with CUPED), seg_<dim>.

    Metric i is bound as {m<i>:String}; segment filter <dim> as {seg_<dim>:String}.
    """
    columns = [
        "user_id",
        "argMinIf(variant, timestamp, is_exposure) AS assigned",
        "minIf(variant, is_exposure) != maxIf(variant, is_exposure) AS mixed",
        "countIf(is_exposure) AS exposures",
    ]
    for dim in dict.fromkeys([*segment_columns, *segment_filters]):
        columns.append(f"argMinIf({dim}, timestamp, is_exposure) AS seg_{dim}")
    for i in range(n_metrics):
        columns.append(f"sumIf(ifNull(value, 0), in_experiment AND metric = {{m{i}:String}}) AS x{i}")
        if cuped:
            columns.append(f"sumIf(ifNull(value, 0), in_pre AND metric = {{m{i}:String}}) AS y{i}")
    where = f"({IN_EXPERIMENT})"
    if cuped and n_metrics:
        metric_list = ", ".join(f"{{m{i}:String}}" for i in range(n_metrics))
        where += f" OR ({IN_PRE} AND metric IN ({metric_list}))"
    having = [] if include_unexposed else ["exposures > 0"]
    having += [f"seg_{dim} = {{seg_{dim}:String}}" for dim in segment_filters]
    with_clause = (
        f"WITH ({IN_EXPERIMENT}) AS in_experiment, "
        f"(in_experiment AND event_type = 'exposure') AS is_exposure"
        + (f", ({IN_PRE}) AS in_pre" if cuped else "")
    )
    sql = f"""
        {with_clause}
        SELECT {', '.join(columns)}
        FROM {db}.events FINAL
        WHERE {where}
        GROUP BY user_id"""
    if having:
        sql += "\n        HAVING " + " AND ".join(having)
    return sql


def _variant_sums(n_metrics: int, ratio_pairs: Sequence[tuple[int, int]], *, cuped: bool) -> str:
    """The per-(variant, mixed) sums over per-user rows with assigned, mixed, x{i} [and y{i}]."""
    aggregates = ["assigned AS variant", "mixed", "count() AS n"]
    for i in range(n_metrics):
        aggregates += [f"sum(x{i}) AS s{i}", f"sum(x{i} * x{i}) AS q{i}", f"countIf(x{i} != 0) AS z{i}"]
        if cuped:
            aggregates += [f"sum(y{i}) AS a{i}", f"sum(y{i} * y{i}) AS b{i}", f"sum(x{i} * y{i}) AS c{i}"]
    for k, (i, j) in enumerate(ratio_pairs):
        aggregates.append(f"sum(x{i} * x{j}) AS r{k}")
    return ", ".join(aggregates)


def variant_statistics_sql(
    db: str,
    n_metrics: int,
    ratio_pairs: Sequence[tuple[int, int]],
    *,
    cuped: bool,
    segment_filters: Sequence[str] = (),
) -> str:
    """Per (variant, mixed): n and, per metric i, s{i}=Σx q{i}=Σx² z{i}=#x≠0 [a{i}=Σy b{i}=Σy² c{i}=Σxy];
    per ratio k over metrics (i, j): r{k}=Σx_i·x_j."""
    inner = per_user_sql(db, n_metrics, cuped=cuped, segment_filters=segment_filters)
    return f"""
    SELECT {_variant_sums(n_metrics, ratio_pairs, cuped=cuped)}
    FROM ({inner})
    GROUP BY variant, mixed
    ORDER BY variant, mixed
    {PER_PARTITION_FINAL}"""


def segment_breakdown_sql(db: str, n_metrics: int) -> str:
    """Per (dimension, segment, variant, mixed): n, s{i}, q{i}; dimension 'all' = every user."""
    inner = per_user_sql(db, n_metrics, cuped=False, segment_columns=SEGMENT_DIMENSIONS)
    pairs = ", ".join(["('all', '')", *(f"('{d}', seg_{d})" for d in SEGMENT_DIMENSIONS)])
    aggregates = ["dv.1 AS dimension", "dv.2 AS segment", "assigned AS variant", "mixed", "count() AS n"]
    for i in range(n_metrics):
        aggregates += [f"sum(x{i}) AS s{i}", f"sum(x{i} * x{i}) AS q{i}"]
    return f"""
    SELECT {', '.join(aggregates)}
    FROM ({inner})
    ARRAY JOIN [{pairs}] AS dv
    GROUP BY dimension, segment, variant, mixed
    {PER_PARTITION_FINAL}"""


def exposure_bounds_sql(db: str) -> str:
    """Exposures of the experiment, its first exposure and its last event of any type."""
    return f"""
    SELECT countIf(event_type = 'exposure') AS n, minIf(timestamp, event_type = 'exposure') AS first,
           max(timestamp) AS last
    FROM {db}.events
    WHERE experiment_id = {{exp:String}}"""


def _assignment(db: str, windowed: bool) -> str:
    where = "experiment_id = {exp:String} AND event_type = 'exposure'"
    if windowed:
        where += f" AND {IN_WINDOW}"
    return f"""
        SELECT user_id, argMin(variant, timestamp) AS assigned, min(timestamp) AS first_exposure
        FROM {db}.events FINAL
        WHERE {where}
        GROUP BY user_id
        HAVING min(variant) = max(variant)"""


def exposures_by_period_sql(db: str, n_cuts: int) -> str:
    """Single-variant users of {exp:String} by variant and the period of their first exposure in the window.

    Periods split [{start_ms}, {end_ms}) at the increasing cuts {cut<i>:Int64} (Unix ms): period k holds the
    users whose first exposure is at or after cut k-1 and before cut k.
    """
    cuts = [f"first_exposure < {_MS % f'cut{i}'}, {i}" for i in range(n_cuts)]
    period = f"multiIf({', '.join(cuts)}, {n_cuts})" if n_cuts else "0"
    return f"""
    SELECT assigned AS variant, {period} AS period, count() AS users
    FROM ({_assignment(db, windowed=True)})
    GROUP BY variant, period
    ORDER BY period, variant
    {PER_PARTITION_FINAL}"""


def refresh_daily_metrics_sql(db: str) -> str:
    """Recompute every day of one experiment from the deduplicated events."""
    return f"""
    INSERT INTO {db}.experiment_daily_metrics
        (experiment_id, date, variant, metric, users, new_users, events, value_sum, value_sum_squares, computed_at)
    SELECT {{exp:String}}, day, variant, m, uniqExact(user_id),
           if(m = '', uniqExactIf(user_id, day = first_day), 0),
           sum(n_events),
           if(m = '', 0, sum(total)),
           if(m = '', 0, sum(total * total)),
           now64(3)
    FROM (
        SELECT toDate(e.timestamp) AS day, a.assigned AS variant, e.user_id AS user_id, e.metric AS metric,
               toDate(a.first_exposure) AS first_day, count() AS n_events, sum(ifNull(e.value, 0)) AS total
        FROM {db}.events AS e FINAL
        INNER JOIN ({_assignment(db, windowed=False)}) AS a ON e.user_id = a.user_id
        WHERE e.experiment_id = {{exp:String}}
        GROUP BY day, variant, user_id, metric, first_day
    )
    ARRAY JOIN if(metric = '', [''], ['', metric]) AS m
    GROUP BY day, variant, m
    {PER_PARTITION_FINAL}"""


def daily_metrics_sql(db: str) -> str:
    return f"""
    SELECT date, variant, metric, users, new_users, events, value_sum
    FROM {db}.experiment_daily_metrics FINAL
    WHERE experiment_id = {{exp:String}} AND (metric = '' OR metric = {{metric:String}})
      AND date >= {{start_day:Date}} AND date <= {{end_day:Date}}
    ORDER BY date, variant"""


def refresh_covariates_sql(db: str) -> str:
    """Per exposed user (single variant, exposed in the window): the metric summed over the pre-period."""
    return f"""
    INSERT INTO {db}.experiment_user_covariates
        (experiment_id, metric, lookback_days, user_id, variant, pre_period_start, pre_period_end,
         value, events, computed_at)
    SELECT {{exp:String}}, {{metric:String}}, {{lookback:UInt16}}, a.user_id, a.assigned,
           {_MS % 'pre_ms'}, {_MS % 'start_ms'}, p.value, p.events, now64(3)
    FROM ({_assignment(db, windowed=True)}) AS a
    LEFT JOIN (
        SELECT user_id, sum(ifNull(value, 0)) AS value, toUInt32(count()) AS events
        FROM {db}.events FINAL
        WHERE metric = {{metric:String}} AND {IN_PRE}
        GROUP BY user_id
    ) AS p ON a.user_id = p.user_id
    {PER_PARTITION_FINAL}"""


def orphan_metric_users_sql(db: str) -> str:
    """Users with metric events tagged with the experiment in the window but no exposure at all."""
    return f"""
    SELECT uniqExact(user_id) AS users, count() AS events
    FROM {db}.events FINAL
    WHERE {IN_EXPERIMENT} AND metric != ''
      AND user_id NOT IN (
          SELECT user_id FROM {db}.events
          WHERE experiment_id = {{exp:String}} AND event_type = 'exposure')
    {PER_PARTITION_FINAL}"""


def stored_duplicates_sql(db: str) -> str:
    return f"""
    SELECT (SELECT count() FROM {db}.events WHERE experiment_id = {{exp:String}})
         - (SELECT count() FROM {db}.events FINAL WHERE experiment_id = {{exp:String}}) AS pending
    {PER_PARTITION_FINAL}"""


def future_events_sql(db: str) -> str:
    return f"""
    SELECT count() AS events FROM {db}.events
    WHERE experiment_id = {{exp:String}} AND timestamp > now64(3) + INTERVAL 1 HOUR"""


def tables_sql() -> str:
    return """
    SELECT name, engine, total_rows, total_bytes, comment, sorting_key
    FROM system.tables WHERE database = {db:String} ORDER BY name"""


def columns_sql() -> str:
    return """
    SELECT table, name, type, comment FROM system.columns
    WHERE database = {db:String} ORDER BY table, position"""


# ------------------------------------------------------------------ the per-user rollup
# The same per-user semantics as `per_user_sql` over the experiment's default window
# ([first exposure, after the last event)) and a fixed CUPED lookback, stored once per user.

def rollup_build_sql(db: str, n_metrics: int, *, only_listed_users: bool) -> str:
    """Recompute rollup rows of experiment {exp:String} for window start {start_ms:Int64}, pre-period from
    {pre_ms:Int64}, lookback {lookback:UInt16}, version {version:UInt64} and metrics {m<i>:String}: every
    user with an event tagged with the experiment, or (only_listed_users) those of them listed in the
    Arrow source `{source}` (column user_id). Each metric's sums become one entry of the users' maps.
    """
    users = " AND user_id IN (SELECT user_id FROM {source})" if only_listed_users else ""
    start = _MS % "start_ms"
    names = ", ".join(f"{{m{i}:String}}" for i in range(n_metrics))
    post = ", ".join(f"sumIf(ifNull(value, 0), in_experiment AND metric = {{m{i}:String}})" for i in range(n_metrics))
    pre = ", ".join(f"sumIf(ifNull(value, 0), in_pre AND metric = {{m{i}:String}})" for i in range(n_metrics))
    pre_filter = f" OR (in_pre AND metric IN ({names}))" if n_metrics else ""
    return f"""
    INSERT INTO {db}.experiment_user_rollup
        (experiment_id, user_id, window_start, lookback_days, assigned, mixed, exposures, first_exposure, last_event,
         metric_values, pre_values, version)
    WITH (experiment_id = {{exp:String}}) AS tagged,
         (tagged AND event_type = 'exposure') AS is_exposure,
         (tagged AND timestamp >= {start}) AS in_experiment,
         ({IN_PRE}) AS in_pre
    SELECT {{exp:String}}, user_id, {start}, {{lookback:UInt16}},
           argMinIf(variant, timestamp, is_exposure), minIf(variant, is_exposure) != maxIf(variant, is_exposure),
           countIf(is_exposure), minIf(timestamp, is_exposure), maxIf(timestamp, tagged),
           mapFromArrays([{names}]::Array(String), [{post}]::Array(Float64)),
           mapFromArrays([{names}]::Array(String), [{pre}]::Array(Float64)),
           {{version:UInt64}}
    FROM {db}.events FINAL
    WHERE (tagged{pre_filter}){users}
    GROUP BY user_id
    HAVING countIf(tagged) > 0
    SETTINGS do_not_merge_across_partitions_select_final = 1, optimize_on_insert = 0"""
# optimize_on_insert = 0: collapsing the inserted block by key made a million-user build five times slower.


def experiment_metrics_sql(db: str) -> str:
    """The metric names carried by events tagged with {exp:String}."""
    return f"""
    SELECT DISTINCT metric FROM {db}.events WHERE experiment_id = {{exp:String}} AND metric != '' ORDER BY metric"""


ROLLUP_COLUMNS = ("assigned", "mixed", "exposures", "first_exposure", "last_event", "metric_values", "pre_values")


def rollup_rows_sql(db: str) -> str:
    """The current row of every user of experiment {exp:String}, without FINAL.

    A rebuild writes every user at version {base:UInt64}; refreshes write changed users at higher
    versions. Current = the base row of users no refresh touched, plus each touched user's newest
    row. Right in any merge state: a merge that replaced a base row by a newer one leaves that user
    on the newer side. Rows older than the base (earlier rebuilds) are ignored.
    """
    newer = f"{db}.experiment_user_rollup WHERE experiment_id = {{exp:String}} AND version > {{base:UInt64}}"
    latest = ", ".join(f"argMax({c}, version) AS {c}" for c in ROLLUP_COLUMNS)
    return f"""
        SELECT {', '.join(ROLLUP_COLUMNS)} FROM {db}.experiment_user_rollup
        WHERE experiment_id = {{exp:String}} AND version = {{base:UInt64}}
          AND user_id NOT IN (SELECT user_id FROM {newer})
        UNION ALL
        SELECT {latest} FROM (SELECT user_id, version, {', '.join(ROLLUP_COLUMNS)} FROM {newer}) GROUP BY user_id"""


def rollup_bounds_sql(db: str) -> str:
    """What the rollup says of experiment {exp:String}: exposed users, first exposure, last event, refreshed rows."""
    return f"""
    SELECT countIf(exposures > 0) AS users, minIf(first_exposure, exposures > 0) AS first, max(last_event) AS last,
           (SELECT count() FROM {db}.experiment_user_rollup
            WHERE experiment_id = {{exp:String}} AND version > {{base:UInt64}}) AS refreshed_rows
    FROM ({rollup_rows_sql(db)})"""


def rollup_statistics_sql(db: str, n_metrics: int, ratio_pairs: Sequence[tuple[int, int]], *, cuped: bool) -> str:
    """`variant_statistics_sql` over the rollup: the same output columns, one row per user read.
    A metric the experiment's events never carried reads as 0 for every user, as in the events."""
    columns = ["assigned", "mixed"]
    for i in range(n_metrics):
        columns.append(f"metric_values[{{m{i}:String}}] AS x{i}")
        if cuped:
            columns.append(f"pre_values[{{m{i}:String}}] AS y{i}")
    return f"""
    SELECT {_variant_sums(n_metrics, ratio_pairs, cuped=cuped)}
    FROM (SELECT {', '.join(columns)} FROM ({rollup_rows_sql(db)}) WHERE exposures > 0)
    GROUP BY variant, mixed
    ORDER BY variant, mixed"""
