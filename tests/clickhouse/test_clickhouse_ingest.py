"""Ingest: exactly-once storage, the JSON and Arrow paths agree, bad batches store nothing."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from mcp_servers.clickhouse import open_service
from mcp_servers.clickhouse.store import ChdbStore
from schemas.errors import BackendUnavailable, InvalidInput
from schemas.event_rows import events_to_arrow
from schemas.events import Event
from schemas.settings import Settings

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
async def ch(chdb_path, ch_database):
    async with open_service(Settings(), chdb_path=chdb_path, database=ch_database, clickhouse_url="") as service:
        yield service


def sample_events(n: int = 30) -> list[Event]:
    events = []
    for i in range(n):
        user = f"user-{i % 10}"
        events.append(Event(event_id=f"exp-{i}", event_type="exposure", timestamp=T0 + timedelta(minutes=i),
                            user_id=user, experiment_id="ing", variant="a" if i % 2 else "b",
                            segment={"device": "mobile", "country": "DE", "source": "ads", "plan": "pro"}))
        events.append(Event(event_id=f"conv-{i}", event_type="conversion", timestamp=T0 + timedelta(minutes=i, seconds=5),
                            user_id=user, experiment_id="ing"))
        events.append(Event(event_id=f"rev-{i}", event_type="revenue", timestamp=T0 + timedelta(minutes=i, seconds=9),
                            user_id=user, experiment_id="ing", value=9.5 + i, session_id=f"s{i}",
                            properties={"sku": "A-1"}))
    return events


async def counts(ch) -> tuple[int, int]:
    table = await ch.store.query(
        f"SELECT (SELECT count() FROM {ch.db}.events) AS stored, (SELECT count() FROM {ch.db}.events FINAL) AS unique")
    row = table.to_pylist()[0]
    return row["stored"], row["unique"]


async def test_the_same_batch_twice_is_stored_once(ch):
    batch = events_to_arrow(sample_events())
    first = await ch.ingest_arrow(batch, "batch-1")
    again = await ch.ingest_arrow(batch, "batch-1")
    assert first.rows == again.rows == 90
    assert await counts(ch) == (90, 90)  # the token dropped the re-sent batch at insert time


async def test_the_same_json_batch_twice_is_stored_once(ch):
    payload = b"\n".join(e.model_dump_json().encode() for e in sample_events())
    await ch.ingest_json(payload, "json-1")
    await ch.ingest_json(payload, "json-1")
    assert await counts(ch) == (90, 90)


async def test_a_replayed_range_with_other_boundaries_counts_once(ch):
    batch = events_to_arrow(sample_events())
    await ch.store.execute(f"SYSTEM STOP MERGES {ch.db}.events")  # keep the copies until we look
    for start in range(0, 90, 20):  # first delivery in chunks of 20
        await ch.ingest_arrow(batch.slice(start, 20), f"p0-{start}")
    for start in range(7, 90, 33):  # a replay from offset 7 in chunks of 33: new tokens
        await ch.ingest_arrow(batch.slice(start, 33), f"p0-replay-{start}")
    stored, unique = await counts(ch)
    assert stored == 90 + 83 and unique == 90  # stored twice, read once (FINAL)
    stats = await ch.get_variant_statistics("ing", ["revenue", "conversion"])
    conversions = [s for s in stats.statistics if s.metric == "conversion"]
    assert sum(s.n for s in conversions) == 10 and sum(s.sum for s in conversions) == 30  # 10 users x 3
    await ch.store.execute(f"SYSTEM START MERGES {ch.db}.events")
    await ch.store.execute(f"OPTIMIZE TABLE {ch.db}.events FINAL")
    assert await counts(ch) == (90, 90)  # and merges remove the copies for good


async def test_json_and_arrow_paths_store_identical_rows(chdb_path, ch_database):
    events = sample_events()
    async with open_service(Settings(), chdb_path=chdb_path, database=ch_database + "_a", clickhouse_url="") as a, \
            open_service(Settings(), chdb_path=chdb_path, database=ch_database + "_j", clickhouse_url="") as j:
        await a.ingest_events(events, "t")
        await j.ingest_json(b"\n".join(e.model_dump_json(exclude_none=True).encode() for e in events), "t")
        cols = "event_id, event_type, experiment_id, variant, user_id, metric, value, timestamp, session_id, " \
               "device, country, source, plan, raw"
        rows_a = (await a.store.query(f"SELECT {cols} FROM {a.db}.events ORDER BY event_id")).to_pylist()
        rows_j = (await j.store.query(f"SELECT {cols} FROM {j.db}.events ORDER BY event_id")).to_pylist()
    assert rows_a == rows_j
    by_id = {r["event_id"]: r for r in rows_a}
    assert by_id["conv-3"]["metric"] == "conversion" and by_id["conv-3"]["value"] == 1.0
    assert by_id["rev-3"]["metric"] == "revenue" and by_id["rev-3"]["value"] == 12.5
    assert by_id["exp-3"]["value"] is None and by_id["exp-3"]["metric"] == ""
    assert (by_id["exp-3"]["device"], by_id["exp-3"]["country"], by_id["exp-3"]["source"], by_id["exp-3"]["plan"]) \
        == ("mobile", "DE", "ads", "pro")
    assert orjson.loads(by_id["rev-3"]["raw"])["properties"] == {"sku": "A-1"}


async def test_json_timestamps_follow_the_event_schema(ch):
    lines = [
        {"event_id": "iso", "event_type": "page_view", "user_id": "u", "timestamp": "2025-03-03T14:00:00+02:00"},
        {"event_id": "secs", "event_type": "page_view", "user_id": "u", "timestamp": 1741003200},
        {"event_id": "millis", "event_type": "page_view", "user_id": "u", "timestamp": 1741003200000},
    ]
    for line in lines:  # pydantic reads them all as 2025-03-03 12:00 UTC
        assert Event.model_validate(line).timestamp == T0
    await ch.ingest_json(b"\r\n".join(orjson.dumps(x) for x in lines) + b"\n\n", "ts")
    rows = (await ch.store.query(f"SELECT event_id, timestamp FROM {ch.db}.events")).to_pylist()
    assert {r["event_id"]: r["timestamp"] for r in rows} == {x["event_id"]: T0 for x in lines}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ({"event_id": "a", "event_type": "click", "timestamp": "2025-01-01T00:00:00Z"}, "lacks event_id, user_id"),
        ({"event_id": "a", "event_type": "teleport", "user_id": "u", "timestamp": "2025-01-01T00:00:00Z"},
         "unknown event_type"),
        ({"event_id": "a", "event_type": "click", "user_id": "u"}, "lacks a readable timestamp"),
        ({"event_id": "a", "event_type": "click", "user_id": "u", "timestamp": "yesterday-ish"},
         "lacks a readable timestamp"),
    ],
)
async def test_a_bad_json_line_rejects_the_whole_batch(ch, line, reason):
    good = orjson.dumps({"event_id": "ok", "event_type": "click", "user_id": "u", "timestamp": "2025-01-01T00:00:00Z"})
    with pytest.raises(InvalidInput, match=reason):
        await ch.ingest_json(good + b"\n" + orjson.dumps(line), "bad")
    with pytest.raises(InvalidInput, match="rejected"):
        await ch.ingest_json(good + b"\nthis is not json", "bad2")
    assert await counts(ch) == (0, 0)
    # The failed token is not burnt: the corrected batch goes in under the same token.
    await ch.ingest_json(good, "bad")
    assert await counts(ch) == (1, 1)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t.drop_columns(["user_id"]), r"lacks required columns \['user_id'\]"),
        (lambda t: t.append_column("segment_device", pa.array(["x"] * t.num_rows)), "unknown event columns"),
        (lambda t: t.set_column(t.column_names.index("value"), "value",
                                pa.array([float("nan")] * t.num_rows)), "non-finite"),
        (lambda t: t.set_column(1, "event_type", pa.array(["teleport"] * t.num_rows)), "unknown event_type 'teleport'"),
        (lambda t: t.set_column(0, "event_id", pa.array([""] * t.num_rows)), "event_id is empty in row 0"),
        (lambda t: t.set_column(t.column_names.index("timestamp"), "timestamp",
                                pa.array(["2025-01-01"] * t.num_rows)), "Arrow timestamp"),
    ],
)
async def test_a_malformed_arrow_batch_stores_nothing(ch, mutate, reason):
    batch = mutate(events_to_arrow(sample_events(3)))
    with pytest.raises(InvalidInput, match=reason):
        await ch.ingest_arrow(batch, "t")
    assert await counts(ch) == (0, 0)


async def test_minimal_arrow_batches_get_defaults_and_naive_times_are_utc(ch):
    batch = pa.table({
        "event_id": ["c1", "r1"], "event_type": ["conversion", "revenue"], "user_id": ["u", "u"],
        "timestamp": pa.array([datetime(2025, 3, 3, 12), datetime(2025, 3, 3, 12)], pa.timestamp("us")),
        "value": [None, 3.0],
    })
    await ch.ingest_arrow(batch, "min")
    rows = (await ch.store.query(f"SELECT event_id, metric, value, timestamp, experiment_id FROM {ch.db}.events "
                                 "ORDER BY event_id")).to_pylist()
    assert rows == [
        {"event_id": "c1", "metric": "conversion", "value": 1.0, "timestamp": T0, "experiment_id": ""},
        {"event_id": "r1", "metric": "revenue", "value": 3.0, "timestamp": T0, "experiment_id": ""},
    ]


async def test_any_token_string_is_safe(ch):
    batch = events_to_arrow(sample_events(1))
    token = "x'); DROP TABLE events; --\"\\ ünïcode"
    await ch.ingest_arrow(batch, token)
    await ch.ingest_arrow(batch, token)
    assert await counts(ch) == (3, 3)
    with pytest.raises(InvalidInput, match="token"):
        await ch.ingest_arrow(batch, "")


async def test_stores_in_one_process_share_the_path_and_isolate_by_database(chdb_path, ch_database, tmp_path: Path):
    async with open_service(Settings(), chdb_path=chdb_path, database=ch_database + "_1", clickhouse_url="") as one, \
            open_service(Settings(), chdb_path=chdb_path, database=ch_database + "_2", clickhouse_url="") as two:
        assert one.store._entry is two.store._entry  # one chDB session per path
        await one.ingest_events(sample_events(2), "t")
        assert (await two.run_query("SELECT count() AS n FROM events")).rows == [[0]]
        assert (await one.run_query("SELECT count() AS n FROM events")).rows == [[6]]
    with pytest.raises(BackendUnavailable, match="one data path per process|can open only one"):
        ChdbStore(tmp_path / "another-path", "x")


async def test_the_event_loop_keeps_running_while_chdb_works(ch):
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    await ch.store.query("SELECT count() AS n FROM numbers(300000000) WHERE number % 7 = 3")
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    assert elapsed > 0.1
    assert ticks >= elapsed / 0.01 * 0.3  # the loop was not blocked by the query


async def test_concurrent_inserts_each_store_their_own_batch(ch):
    # chDB's Python() source caches by variable name: with a shared name, parallel inserts stored
    # one batch many times. Every batch here has its own users; all must arrive, each once.
    batches = [
        events_to_arrow([Event(event_id=f"c{b}-{i}", event_type="revenue", timestamp=T0 + timedelta(seconds=i),
                               user_id=f"batch{b}-user{i}", experiment_id="conc", value=float(b))
                         for i in range(200)])
        for b in range(24)]
    await asyncio.gather(*(ch.ingest_arrow(batch, f"conc-{b}") for b, batch in enumerate(batches)))
    table = await ch.store.query(
        f"SELECT count() AS n, uniqExact(user_id) AS users, "
        f"countIf(toUInt32(extract(user_id, 'batch(\\\\d+)-')) != toUInt32(value)) AS mismatched FROM {ch.db}.events")
    assert table.to_pylist() == [{"n": 24 * 200, "users": 24 * 200, "mismatched": 0}]
