"""The sinks against the real stores: the ClickHouse sink's Arrow rows equal the JSON-lines path's rows;
the PostgreSQL sink refuses exposures per record."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from mcp_servers.clickhouse import open_service as open_clickhouse
from mcp_servers.postgres import open_service as open_postgres
from schemas.events import Event
from schemas.settings import Settings
from stream_processor.sinks import ClickHouseSink, PostgresSink, Record

SEGMENT = {"device": "mobile", "country": "DE", "source": "paid", "plan": "pro"}

# A mix of every shape the two paths must map alike: timezone offsets other than Z, fractions of a
# second finer than ClickHouse's milliseconds, Unix-time numbers (seconds and milliseconds), missing and
# null optional fields, partial segments, defaults of conversion/revenue events, escapes and non-ASCII.
MIXED_EVENTS = [
    {"event_id": "e01", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00.123456Z", "user_id": "u1",
     "experiment_id": "exp-a", "variant": "control", "segment": SEGMENT},
    {"event_id": "e02", "event_type": "conversion", "timestamp": "2026-03-01T15:30:00.999999+05:30",
     "user_id": "u1", "experiment_id": "exp-a", "variant": "control"},
    {"event_id": "e03", "event_type": "revenue", "timestamp": "2026-03-01T02:00:00.0005-08:00", "user_id": "u2",
     "experiment_id": "exp-a", "variant": "treatment", "value": 42.5, "segment": {"country": "US"}},
    {"event_id": "e04", "event_type": "metric", "timestamp": "2026-03-02T00:00:00+00:00", "user_id": "u2",
     "experiment_id": "exp-a", "variant": "treatment", "metric": "latency_ms", "value": 120},
    {"event_id": "e05", "event_type": "page_view", "timestamp": "2026-03-02T08:15:30Z", "user_id": "u3",
     "session_id": "s-9", "segment": {"device": "tablet", "source": None}},
    {"event_id": "e06", "event_type": "llm_response", "timestamp": "2026-03-02T08:15:30.5+01:00",
     "user_id": "u3", "experiment_id": "exp-b", "variant": "prompt-v2", "metric": "tokens", "value": 812.0,
     "properties": {"model": "m-1", "cached": True}, "routing_metadata": {"priority": "low"}},
    {"event_id": "e07", "event_type": "click", "timestamp": 1772400000, "user_id": "u4", "experiment_id": None,
     "segment": None},
    {"event_id": "e08", "event_type": "click", "timestamp": 1772400000123, "user_id": "u4"},
    {"event_id": "e09", "event_type": "conversion", "timestamp": "2026-03-03T23:59:59.9999-00:30",
     "user_id": "ü5 \"quoted\"", "experiment_id": "exp-a", "variant": "treatment", "metric": "signup",
     "value": 0.0},
    {"event_id": "e10", "event_type": "revenue", "timestamp": "2026-03-04T12:00:00.25Z", "user_id": "u6",
     "experiment_id": "exp-a", "value": -3.75, "metric": "refund", "segment": SEGMENT},
    {"event_id": "e11", "event_type": "session_start", "timestamp": "2026-03-04T12:00:00.000001+14:00",
     "user_id": "u7", "session_id": "s-1", "ai_context": {"behavioral_score": 0.3}},
    {"event_id": "e12", "event_type": "journey_completed", "timestamp": "2026-03-05T00:00:00Z", "user_id": "u8",
     "properties": {"steps": "home > cart", "session_minutes": 4.5}, "semantic_context": {"text": "日本語"}},
    {"event_id": "e13", "event_type": "experiment_started", "timestamp": "2026-03-05T00:00:00.001Z",
     "user_id": "system", "experiment_id": "exp-a"},
    {"event_id": "e14", "event_type": "feedback", "timestamp": "2026-03-05T06:07:08.090-11:00", "user_id": "u9",
     "experiment_id": "exp-b", "variant": "prompt-v1", "properties": {"thumbs": "up"}},
    {"event_id": "e15", "event_type": "click", "timestamp": "1969-12-31T23:59:59.9995Z", "user_id": "u10"},
]


async def _rows(service) -> list[dict]:
    table = await service.store.query(
        f"SELECT * EXCEPT ingested_at FROM {service.db}.events FINAL ORDER BY event_id", {})
    return table.to_pylist()


async def test_the_arrow_sink_stores_rows_identical_to_the_json_lines_path(neonblue_home: Path, pg_dsn: str,
                                                                          ch_database: str) -> None:
    raws = [orjson.dumps(e) for e in MIXED_EVENTS]
    raws.append(b'{"event_id": "e16",  "event_type":"click",\n "timestamp": "2026-03-06T01:02:03.456Z", '
                b'"user_id": "u\\u00e9\\n", "segment": {"device": "tv"}}')  # spacing, escapes kept in raw
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                        clickhouse_database=ch_database)
    async with open_clickhouse(settings) as via_json, open_clickhouse(settings, database=f"{ch_database}_a") as via_arrow:
        # The JSON-lines path takes one event per line: the multi-line event goes in on one line.
        await via_json.ingest_json(b"\n".join(r.replace(b"\n", b" ") for r in raws), token="t:0:0-15")
        sink = ClickHouseSink(via_arrow)
        for offset, raw in enumerate(raws):
            sink.add(Record.of(Event.model_validate_json(raw), raw, "t", 0, offset))
        assert await sink.flush() == len(raws)
        json_rows, arrow_rows = await _rows(via_json), await _rows(via_arrow)
    assert len(arrow_rows) == len(raws)
    for json_row, arrow_row, raw in zip(json_rows, arrow_rows, raws, strict=True):
        assert arrow_row["raw"] == raw.decode()  # the original bytes, untouched
        json_row.pop("raw"), arrow_row.pop("raw")
        assert arrow_row == json_row
    by_id = {r["event_id"]: r for r in arrow_rows}
    assert (by_id["e02"]["metric"], by_id["e02"]["value"]) == ("conversion", 1.0)  # Event's defaults
    assert (by_id["e03"]["metric"], by_id["e03"]["value"]) == ("revenue", 42.5)
    assert by_id["e02"]["timestamp"].isoformat() == "2026-03-01T10:00:00.999000+00:00"  # UTC, milliseconds
    assert by_id["e05"]["experiment_id"] == "" and by_id["e05"]["value"] is None


async def test_a_replayed_arrow_batch_stores_nothing_new(neonblue_home: Path, pg_dsn: str, ch_database: str) -> None:
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                        clickhouse_database=ch_database)
    raws = [orjson.dumps(e) for e in MIXED_EVENTS]
    async with open_clickhouse(settings) as clickhouse:
        sink = ClickHouseSink(clickhouse)
        for _ in range(2):  # the same range twice (same token), then split differently (other tokens)
            for offset, raw in enumerate(raws):
                sink.add(Record.of(Event.model_validate_json(raw), raw, "t", 0, offset))
            await sink.flush()
        for offset, raw in enumerate(raws):
            sink.add(Record.of(Event.model_validate_json(raw), raw, "t", 1 + offset % 2, offset))
        await sink.flush()
        assert len(await _rows(clickhouse)) == len(raws)


@pytest.mark.parametrize("status", ["running", "draft"])
async def test_the_postgres_sink_records_exposures_and_refuses_bad_ones_per_record(
        neonblue_home: Path, pg_dsn: str, status: str) -> None:
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn)
    async with open_postgres(settings) as postgres:
        await postgres.create_experiment({
            "key": "sink-exp", "name": "Sink", "type": "ui", "primary_metric": {"name": "conversion"},
            "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
        })
        if status == "running":
            await postgres.start_experiment("sink-exp")
        sink = PostgresSink(postgres)
        events = [
            {"event_id": "x1", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00+02:00", "user_id": "a",
             "experiment_id": "sink-exp", "variant": "control"},
            {"event_id": "x2", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00Z", "user_id": "b",
             "experiment_id": "sink-exp", "variant": "ghost"},
            {"event_id": "x3", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00Z", "user_id": "c",
             "experiment_id": "other-exp", "variant": "control"},
            {"event_id": "x4", "event_type": "exposure", "timestamp": "2026-03-01T11:00:00Z", "user_id": "a",
             "experiment_id": "sink-exp", "variant": "treatment"},  # same user again: the first one wins
            {"event_id": "x5", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00Z", "user_id": "d",
             "experiment_id": "sink-exp"},  # no variant: not an assignment
        ]
        records = [Record.of(Event.model_validate_json(orjson.dumps(e)), orjson.dumps(e), "t", 0, i)
                   for i, e in enumerate(events)]
        for record in records:
            sink.add(record)
        await sink.flush()
        reasons = {r.event_id: why for r, why in sink.rejected}
        if status == "draft":
            assert reasons == {"x1": "experiment 'sink-exp' is draft", "x2": "experiment 'sink-exp' is draft",
                               "x3": "unknown experiment 'other-exp'", "x4": "experiment 'sink-exp' is draft"}
            return
        assert reasons == {"x2": "unknown variant 'ghost' of 'sink-exp'", "x3": "unknown experiment 'other-exp'"}
        assert (await postgres.get_variant("sink-exp", "a")).variant_key == "control"
        summary = await postgres.analyze_experiment_data("sink-exp")
        assert sum(v.assigned_users for v in summary.variants) == 1
        sink.rejected.clear()
        for record in records:  # a replay records nothing new and refuses the same records
            sink.add(record)
        await sink.flush()
        assert {r.event_id for r, _ in sink.rejected} == {"x2", "x3"}
        assert sum(v.assigned_users for v in (await postgres.analyze_experiment_data("sink-exp")).variants) == 1


async def test_the_postgres_sink_writes_only_first_seen_pairs_and_never_relayed_exposures(
        neonblue_home: Path, pg_dsn: str) -> None:
    """A pair the sink stored is not written again (a row deleted behind its back stays deleted), an
    exposure relayed from the registry's outbox is never written back, and refusals stay per record."""
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn)
    async with open_postgres(settings) as postgres:
        await postgres.create_experiment({
            "key": "once-exp", "name": "Once", "type": "ui", "primary_metric": {"name": "conversion"},
            "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
        })
        await postgres.start_experiment("once-exp")

        def record(i: int, user: str, variant: str, **extra) -> Record:
            raw = orjson.dumps({"event_id": f"o{i}", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00Z",
                                "user_id": user, "experiment_id": "once-exp", "variant": variant, **extra})
            return Record.of(Event.model_validate_json(raw), raw, "t", 0, i)

        relayed = {"routing_metadata": {"source": "neonblue.outbox"}}

        async def assigned() -> dict[str, str]:
            rows = await postgres.store.pool.fetch(
                "SELECT a.user_id, v.key FROM neonblue.assignments a JOIN neonblue.variants v ON v.id = a.variant_id "
                "JOIN neonblue.experiments e ON e.id = a.experiment_id WHERE e.key = 'once-exp'")
            return {r["user_id"]: r["key"] for r in rows}

        sink = PostgresSink(postgres)
        batch = [record(0, "a", "control"), record(1, "a", "treatment"), record(2, "b", "treatment"),
                 record(3, "r", "control", **relayed), record(4, "g", "ghost")]
        for r in batch:
            sink.add(r)
        await sink.flush()
        assert await assigned() == {"a": "control", "b": "treatment"}  # relayed "r": the registry's own fact
        assert sink.skipped_relayed == 1
        assert [(r.event_id, why) for r, why in sink.rejected] == [("o4", "unknown variant 'ghost' of 'once-exp'")]
        sink.rejected.clear()

        await postgres.store.pool.execute("DELETE FROM neonblue.assignments WHERE user_id = 'a'")
        for r in [record(5, "a", "control"), record(6, "c", "control"), record(7, "g", "ghost")]:
            sink.add(r)
        await sink.flush()
        # "a" was stored by this sink before: no write (the row deleted behind its back stays deleted)
        assert await assigned() == {"b": "treatment", "c": "control"}
        assert [r.event_id for r, _ in sink.rejected] == ["o7"]  # refusals do not depend on the memory

        fresh = PostgresSink(postgres)  # a restarted processor: one no-op write per pair, nothing else
        for r in [record(8, "a", "treatment"), record(9, "b", "control")]:
            fresh.add(r)
        await fresh.flush()
        assert await assigned() == {"a": "treatment", "b": "treatment", "c": "control"}
