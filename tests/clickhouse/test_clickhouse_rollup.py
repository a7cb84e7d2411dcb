"""The per-user rollup behind get_variant_statistics stays equal to a pass over the events.

Each test changes the events the way a live stream does (new users, more events of
known users, a replay with other boundaries, a re-sent event with another value, an
earlier exposure, a new metric, raw JSON lines) and checks that the rollup answer
equals the events answer (`use_rollup=False`), and which refresh ran.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pytest

from mcp_servers.clickhouse import open_service
from mcp_servers.clickhouse.models import RatioMetric, SegmentFilter
from mcp_servers.clickhouse.store import ChangeLog
from mcp_servers.clickhouse.synthetic import SyntheticExperiment, generate
from schemas.event_rows import events_to_arrow
from schemas.events import Event
from schemas.settings import Settings

START = datetime(2025, 3, 3, tzinfo=UTC)
EXP = "rollup-exp"
SPEC = SyntheticExperiment(experiment_id=EXP, users=4000, variants=("control", "treatment"),
                           purchases_per_user=1.2, pre_purchases_per_user=1.2, days=14, start=START, seed=11)
METRICS = ["revenue", "conversion"]
RATIO = RatioMetric(name="revenue_per_conversion", numerator="revenue", denominator="conversion")


def event(event_id: str, event_type: str, at: datetime, user: str, **fields) -> Event:
    return Event(event_id=event_id, event_type=event_type, timestamp=at, user_id=user, experiment_id=EXP, **fields)


async def assert_rollup_equals_events(ch, metrics=METRICS, **kwargs) -> None:
    fast = await ch.get_variant_statistics(EXP, metrics, [RATIO], cuped=True, **kwargs)
    slow = await ch.get_variant_statistics(EXP, metrics, [RATIO], cuped=True, use_rollup=False, **kwargs)
    assert fast.computed_from == "user rollup" and slow.computed_from == "events"
    assert (fast.window_start, fast.window_end) == (slow.window_start, slow.window_end)
    assert fast.variants == slow.variants
    assert len(fast.statistics) == len(slow.statistics)
    for a, b in zip(fast.statistics, slow.statistics, strict=True):
        da, db = a.model_dump(), b.model_dump()
        for key, value in db.items():
            if isinstance(value, float):
                assert da[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (a.variant, a.metric, key)
            else:
                assert da[key] == value, (a.variant, a.metric, key)


@pytest.fixture
async def ch(chdb_path):
    database = f"t_rollup_{uuid.uuid4().hex[:8]}"
    async with open_service(Settings(), chdb_path=chdb_path, database=database, clickhouse_url="") as service:
        table = generate(SPEC)
        for k in range(0, table.num_rows, 5000):
            await service.ingest_arrow(table.slice(k, 5000), f"load-{k}")
        yield service


async def test_first_call_builds_and_equals_the_events(ch):
    await assert_rollup_equals_events(ch)
    assert ch.rollup.rebuilds == 1
    await assert_rollup_equals_events(ch)  # nothing changed: no refresh at all
    assert ch.rollup.rebuilds == 1 and ch.rollup.refreshed_users == 0


async def test_new_events_refresh_only_their_users(ch):
    await assert_rollup_equals_events(ch)
    t = START + timedelta(days=5)
    batch = events_to_arrow([
        # new users, one of them in both variants
        event("n-1", "exposure", t, "newcomer", variant="treatment"),
        event("n-2", "revenue", t + timedelta(hours=1), "newcomer", value=50.0),
        event("n-3", "exposure", t, "switcher", variant="control"),
        event("n-4", "exposure", t + timedelta(minutes=5), "switcher", variant="treatment"),
        # more events of known users, and a pre-period purchase of a known user (no experiment tag)
        event("k-1", "revenue", t, "u1", value=75.0),
        event("k-2", "conversion", t, "u2"),
        Event(event_id="k-3", event_type="page_view", timestamp=START - timedelta(days=3), user_id="u3"),
        Event(event_id="k-4", event_type="metric", timestamp=START - timedelta(days=2), user_id="u4",
              experiment_id="earlier-exp", metric="revenue", value=30.0),
    ])
    await ch.ingest_arrow(batch, "live-1")
    await ch.ingest_arrow(batch, "live-1")  # the same token again: stored once
    await ch.ingest_arrow(batch.slice(2), "live-1-replay")  # other boundaries: counted once by event_id
    await assert_rollup_equals_events(ch)
    assert ch.rollup.rebuilds == 1
    assert ch.rollup.refreshed_users == 6  # newcomer, switcher, u1..u4
    stats = await ch.get_variant_statistics(EXP, ["revenue"])
    assert {v.variant: v.excluded_multiple_variants for v in stats.variants}["control"] == 1


async def test_a_resent_event_with_another_value_replaces_the_old_one(ch):
    first = event("r-1", "revenue", START + timedelta(days=3), "u7", value=10.0)
    await ch.ingest_events([first], "resend-a")
    await assert_rollup_equals_events(ch)
    before = (await ch.get_variant_statistics(EXP, ["revenue"])).statistics
    await ch.ingest_events([first.model_copy(update={"value": 1010.0})], "resend-b")
    after = (await ch.get_variant_statistics(EXP, ["revenue"])).statistics
    assert sum(s.sum for s in after) == pytest.approx(sum(s.sum for s in before) + 1000.0)
    await assert_rollup_equals_events(ch)


async def test_an_earlier_exposure_moves_the_window_and_rebuilds(ch):
    await assert_rollup_equals_events(ch)
    start = (await ch.get_variant_statistics(EXP, ["revenue"])).window_start
    early = start - timedelta(days=1)
    await ch.ingest_events([event("e-1", "exposure", early, "early-bird", variant="control"),
                            event("e-2", "revenue", early + timedelta(hours=2), "early-bird", value=5.0)], "early")
    await assert_rollup_equals_events(ch)
    assert (await ch.get_variant_statistics(EXP, ["revenue"])).window_start == early
    assert ch.rollup.rebuilds == 2


async def test_a_new_metric_rebuilds_so_every_pre_period_has_it(ch):
    await assert_rollup_equals_events(ch, metrics=["latency_ms"])
    t = START + timedelta(days=4)
    await ch.ingest_events([
        event("m-1", "metric", t, "u5", metric="latency_ms", value=420.0),
        Event(event_id="m-2", event_type="metric", timestamp=START - timedelta(days=1), user_id="u6",
              experiment_id="older-exp", metric="latency_ms", value=380.0),  # u6's pre-period only
    ], "new-metric")
    await assert_rollup_equals_events(ch, metrics=["latency_ms", "revenue"])
    stats = await ch.get_variant_statistics(EXP, ["latency_ms"], cuped=True)
    assert sum(s.pre_sum for s in stats.statistics) == pytest.approx(380.0)


async def test_raw_json_lines_are_tracked_too(ch):
    await assert_rollup_equals_events(ch)
    t = START + timedelta(days=6)
    lines = b"\n".join(orjson.dumps(e.model_dump(mode="json", exclude_none=True)) for e in [
        event("j-1", "exposure", t, "json-user", variant="treatment"),
        event("j-2", "revenue", t + timedelta(minutes=1), "json-user", value=12.5),
        event("j-3", "revenue", t, "u9", value=3.5),
    ])
    await ch.ingest_json(lines, "json-1")
    await assert_rollup_equals_events(ch)
    assert ch.rollup.rebuilds == 1 and ch.rollup.refreshed_users == 2


async def test_many_changed_users_rebuild_instead(ch):
    await assert_rollup_equals_events(ch)
    more = generate(SyntheticExperiment(experiment_id=EXP, users=3000, variants=("control", "treatment"),
                                        start=START, days=14, user_prefix="w", seed=12))
    await ch.ingest_arrow(more, "wave")
    await assert_rollup_equals_events(ch)
    assert ch.rollup.rebuilds == 2 and ch.rollup.refreshed_users == 0


async def test_windows_segments_and_other_lookbacks_read_the_events(ch):
    stats = await ch.get_variant_statistics(EXP, ["revenue"], start_date=START.date())
    assert stats.computed_from == "events"
    stats = await ch.get_variant_statistics(EXP, ["revenue"], segment=SegmentFilter(device="mobile"))
    assert stats.computed_from == "events"
    stats = await ch.get_variant_statistics(EXP, ["revenue"], cuped=True, cuped_lookback_days=7)
    assert stats.computed_from == "events"
    stats = await ch.get_variant_statistics(EXP, ["revenue"], cuped_lookback_days=7)  # lookback unused without CUPED
    assert stats.computed_from == "user rollup"


def test_change_log_reports_distinct_users_and_forgets_beyond_capacity():
    log = ChangeLog(capacity=5)
    start = log.position
    log.append(pa.array(["a", "b"]))
    log.append(pa.array(["b", "c"]))
    assert sorted(log.since(start).to_pylist()) == ["a", "b", "c"]
    middle = log.position
    log.append(None)  # users unknown
    assert log.since(middle) is None
    after = log.position
    log.append(pa.array(["d", "e", "f"]))
    log.append(pa.array(["g"]))
    assert sorted(log.since(after).to_pylist()) == ["d", "e", "f", "g"]
    assert log.since(start) is None  # trimmed: a reader that far behind recomputes everything
    assert log.since(log.position).to_pylist() == []
