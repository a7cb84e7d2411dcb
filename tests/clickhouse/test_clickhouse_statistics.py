"""get_variant_statistics: per-user sufficient statistics equal numpy's on the raw events.

The reference below recomputes, from the generated events with pandas/numpy,
exactly the documented semantics: users with an exposure in the window, the
variant of their first exposure, users in two variants left out, each user's
metric = sum of their experiment-tagged events in the window (0 if none), the
CUPED covariate = the same metric over any events in the pre-period.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mcp_servers.clickhouse import open_service
from mcp_servers.clickhouse.models import RatioMetric, SegmentFilter
from mcp_servers.clickhouse.synthetic import SyntheticExperiment, generate
from schemas.errors import InvalidInput, NotFound
from schemas.event_rows import EVENT_SCHEMA, events_to_arrow
from schemas.events import Event
from schemas.settings import Settings

START = datetime(2025, 1, 6, tzinfo=UTC)
SPEC = SyntheticExperiment(
    experiment_id="stats-exp", users=3000, variants=("control", "v1", "v2"),
    conversion_rate={"control": 0.2, "v1": 0.25, "v2": 0.3},
    revenue_mean={"control": 20.0, "v1": 24.0, "v2": 20.0},
    purchases_per_user=1.5, pre_purchases_per_user=1.5, days=14, start=START, seed=7,
)


def _extra_events() -> pa.Table:
    """Edge cases the generator does not make: a user in two variants, a late exposure
    outside a narrowed window, an event of another experiment in the window."""
    t = START + timedelta(days=2)
    events = [
        Event(event_id="mix-1", event_type="exposure", timestamp=t, user_id="mixer", experiment_id="stats-exp",
              variant="control"),
        Event(event_id="mix-2", event_type="exposure", timestamp=t + timedelta(hours=1), user_id="mixer",
              experiment_id="stats-exp", variant="v1"),
        Event(event_id="mix-3", event_type="revenue", timestamp=t + timedelta(hours=2), user_id="mixer",
              experiment_id="stats-exp", value=1000.0),
        Event(event_id="other-1", event_type="revenue", timestamp=t, user_id="u1", experiment_id="another-exp",
              value=500.0),
    ]
    return events_to_arrow(events)


@pytest.fixture(scope="module")
def raw_events() -> pa.Table:
    return pa.concat_tables([generate(SPEC), _extra_events()])


@pytest.fixture(scope="module")
async def loaded(chdb_path, raw_events):
    """One database for the module: the events, sent twice with overlapping batch boundaries."""
    database = f"t_stats_{uuid.uuid4().hex[:8]}"
    async with open_service(Settings(), chdb_path=chdb_path, database=database, clickhouse_url="") as ch:
        await ch.store.execute(f"SYSTEM STOP MERGES {database}.events")  # keep the replayed copies visible
        for k in range(0, raw_events.num_rows, 4000):
            await ch.ingest_arrow(raw_events.slice(k, 4000), f"first-{k}")
        # A replay with other boundaries and other tokens: only event_id dedup can catch it.
        for k in range(1500, raw_events.num_rows, 7000):
            await ch.ingest_arrow(raw_events.slice(k, 7000), f"replay-{k}")
        yield ch


def reference(events: pa.Table, start: datetime, end: datetime, metrics: list[str], lookback_days: int = 14,
              segment: dict[str, str] | None = None) -> dict[tuple[str, str], dict[str, float]]:
    df = events.to_pandas()
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True)
    df["value"] = df["value"].fillna(0.0)
    in_window = (df.ts >= start) & (df.ts < end)
    exp = df[(df.experiment_id == SPEC.experiment_id) & in_window]
    exposures = exp[exp.event_type == "exposure"].sort_values("ts")
    first = exposures.groupby("user_id").first()
    n_variants = exposures.groupby("user_id")["variant"].nunique()
    users = first[n_variants == 1]
    for dim, value in (segment or {}).items():
        users = users[users[dim] == value]
    pre = df[(df.ts >= start - timedelta(days=lookback_days)) & (df.ts < start)]
    out = {}
    for metric in metrics:
        x = exp[exp.metric == metric].groupby("user_id")["value"].sum().reindex(users.index, fill_value=0.0)
        y = pre[pre.metric == metric].groupby("user_id")["value"].sum().reindex(users.index, fill_value=0.0)
        for variant, idx in users.groupby("variant").groups.items():
            xv, yv = x.loc[idx].to_numpy(), y.loc[idx].to_numpy()
            out[(variant, metric)] = {"n": len(xv), "sum": xv.sum(), "sum_squares": (xv * xv).sum(),
                                      "nonzero": int((xv != 0).sum()), "pre_sum": yv.sum(),
                                      "pre_sum_squares": (yv * yv).sum(), "cross": (xv * yv).sum(), "x": xv}
    return out


def assert_matches(stats, ref, metrics):
    assert {(s.variant, s.metric) for s in stats.statistics} == {k for k in ref if k[1] in metrics}
    for s in stats.statistics:
        r = ref[(s.variant, s.metric)]
        assert s.n == r["n"]
        assert s.users_with_metric == r["nonzero"]
        assert s.sum == pytest.approx(r["sum"], rel=1e-9, abs=1e-9)
        assert s.sum_squares == pytest.approx(r["sum_squares"], rel=1e-9, abs=1e-9)
        if s.pre_sum is not None:
            assert s.pre_sum == pytest.approx(r["pre_sum"], rel=1e-9, abs=1e-9)
            assert s.pre_sum_squares == pytest.approx(r["pre_sum_squares"], rel=1e-9, abs=1e-9)
            assert s.post_pre_sum_of_products == pytest.approx(r["cross"], rel=1e-9, abs=1e-9)


async def test_sufficient_statistics_equal_numpy_on_the_raw_events(loaded, raw_events):
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue", "conversion"], cuped=True)
    # Default window: first exposure .. last event of the experiment.
    ref = reference(raw_events, stats.window_start, stats.window_end, ["revenue", "conversion"])
    assert_matches(stats, ref, ["revenue", "conversion"])
    assert stats.window_start >= START
    assert stats.pre_period_end == stats.window_start
    assert stats.pre_period_start == stats.window_start - timedelta(days=14)
    # Exposed users without any revenue are in n as zeros.
    control = stats.get("control", "revenue")
    assert control.users_with_metric < control.n
    assert sum(v.users for v in stats.variants) == SPEC.users


async def test_replayed_events_are_counted_once(loaded, raw_events):
    stored = await loaded.store.query(f"SELECT count() AS n FROM {loaded.db}.events")
    assert stored.column("n")[0].as_py() > raw_events.num_rows  # the replay is really stored twice...
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, ["conversion"])
    ref = reference(raw_events, stats.window_start, stats.window_end, ["conversion"])
    assert_matches(stats, ref, ["conversion"])  # ...and counted once


async def test_users_exposed_to_two_variants_are_left_out_and_counted(loaded):
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue"])
    excluded = {v.variant: v.excluded_multiple_variants for v in stats.variants}
    assert excluded == {"control": 1, "v1": 0, "v2": 0}  # "mixer" was first exposed to control


async def test_date_range_and_segment_filters_match_numpy(loaded, raw_events):
    window = dict(start_date=date(2025, 1, 8), end_date=date(2025, 1, 14))
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue"], cuped=True,
                                                cuped_lookback_days=7, segment=SegmentFilter(device="mobile"),
                                                **window)
    assert stats.window_start == datetime(2025, 1, 8, tzinfo=UTC)
    assert stats.window_end == datetime(2025, 1, 15, tzinfo=UTC)
    ref = reference(raw_events, stats.window_start, stats.window_end, ["revenue"], lookback_days=7,
                    segment={"device": "mobile"})
    assert_matches(stats, ref, ["revenue"])
    everyone = await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue"], **window)
    assert sum(v.users for v in stats.variants) < 0.7 * sum(v.users for v in everyone.variants)


async def test_ratio_metrics_return_the_delta_method_cross_products(loaded, raw_events):
    ratio = RatioMetric(name="revenue_per_conversion", numerator="revenue", denominator="conversion")
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, [], [ratio])
    ref = reference(raw_events, stats.window_start, stats.window_end, ["revenue", "conversion"])
    for s in stats.statistics:
        assert s.kind == "ratio" and s.metric == "revenue_per_conversion"
        num, den = ref[(s.variant, "revenue")], ref[(s.variant, "conversion")]
        assert s.sum == pytest.approx(num["sum"], rel=1e-9)
        assert s.sum_squares == pytest.approx(num["sum_squares"], rel=1e-9)
        assert s.denominator_sum == pytest.approx(den["sum"], rel=1e-9)
        assert s.denominator_sum_squares == pytest.approx(den["sum_squares"], rel=1e-9)
        assert s.m_d_sum_of_products == pytest.approx(float(np.dot(num["x"], den["x"])), rel=1e-9)
        assert s.mean == pytest.approx(num["sum"] / den["sum"])


async def test_planted_effects_and_cuped_correlation_are_visible(loaded):
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue", "conversion"], cuped=True)
    conv = {v: stats.get(v, "conversion").mean for v in SPEC.variants}
    assert conv["control"] < conv["v1"] < conv["v2"]  # 0.20 < 0.25 < 0.30 planted
    assert conv["v2"] == pytest.approx(0.30, abs=0.04)
    s = stats.get("control", "revenue")
    cov = s.post_pre_sum_of_products / s.n - (s.sum / s.n) * (s.pre_sum / s.n)
    var_x = s.sum_squares / s.n - (s.sum / s.n) ** 2
    var_y = s.pre_sum_squares / s.n - (s.pre_sum / s.n) ** 2
    assert cov / np.sqrt(var_x * var_y) > 0.2  # shared propensity makes the covariate useful


async def test_materialised_covariates_match_the_statistics(loaded):
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue"], cuped=True)
    rows = await loaded.refresh_covariates(SPEC.experiment_id, ["revenue"], lookback_days=14)
    assert rows == sum(v.users for v in stats.variants)
    table = await loaded.store.query(
        f"SELECT variant, count() AS n, sum(value) AS s FROM {loaded.db}.experiment_user_covariates FINAL "
        "WHERE experiment_id = {exp:String} GROUP BY variant", {"exp": SPEC.experiment_id})
    for row in table.to_pylist():
        s = stats.get(row["variant"], "revenue")
        assert row["n"] == s.n
        assert row["s"] == pytest.approx(s.pre_sum, rel=1e-9)
    # Refreshing again replaces, never adds.
    assert await loaded.refresh_covariates(SPEC.experiment_id, ["revenue"], lookback_days=14) == rows


async def test_unknown_experiment_and_bad_arguments_are_clear_errors(loaded):
    with pytest.raises(NotFound, match="no exposure events for experiment 'nope'"):
        await loaded.get_variant_statistics("nope", ["revenue"])
    with pytest.raises(InvalidInput, match="at least one metric"):
        await loaded.get_variant_statistics(SPEC.experiment_id, [])
    with pytest.raises(InvalidInput, match="end_date is before start_date"):
        await loaded.get_variant_statistics(SPEC.experiment_id, ["revenue"], start_date=date(2025, 1, 9),
                                            end_date=date(2025, 1, 8))


async def test_values_are_bound_never_spliced(loaded):
    """Metric names and segment values with quotes are data, not SQL."""
    evil = "revenue' OR 1=1 --"
    stats = await loaded.get_variant_statistics(SPEC.experiment_id, [evil], segment=SegmentFilter(device="x' OR '1'='1"))
    assert stats.statistics == [] and stats.variants == []


def test_event_schema_is_the_arrow_contract():
    assert EVENT_SCHEMA.names[:5] == ["event_id", "event_type", "experiment_id", "variant", "user_id"]
