"""The clickhouse-connect engine (`ServerStore`) honours the same contract as chDB.

Runs only when CLICKHOUSE_URL points at a ClickHouse server (e.g.
`CLICKHOUSE_URL=http://default:@127.0.0.1:8123 pytest -m clickhouse_server tests/clickhouse`);
otherwise every test is skipped with the reason shown in the summary. No modern
ClickHouse server installs on the dev box, so the embedded tests cover the SQL and
these cover the transport: HTTP parameters, settings, server-side binding, JSON bodies.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mcp_servers.clickhouse import open_service
from mcp_servers.clickhouse.store import StoreError
from schemas.errors import InvalidInput, QueryRefused
from schemas.event_rows import events_to_arrow
from schemas.events import Event
from schemas.settings import Settings

URL = os.environ.get("CLICKHOUSE_URL")
pytestmark = [
    pytest.mark.clickhouse_server,
    pytest.mark.skipif(not URL, reason="CLICKHOUSE_URL is not set: no ClickHouse server to run the "
                                       "clickhouse-connect engine's contract tests against"),
]
T0 = datetime(2025, 4, 7, 9, tzinfo=UTC)


def sample(users: int = 20) -> list[Event]:
    out = []
    for u in range(users):
        t = T0 + timedelta(hours=u)
        out.append(Event(event_id=f"x{u}", event_type="exposure", timestamp=t, user_id=f"u{u}", experiment_id="srv",
                         variant="control" if u % 2 else "treatment", segment={"device": "web"}))
        out.append(Event(event_id=f"r{u}", event_type="revenue", timestamp=t + timedelta(minutes=1), user_id=f"u{u}",
                         experiment_id="srv", value=float(u)))
        out.append(Event(event_id=f"p{u}", event_type="revenue", timestamp=T0 - timedelta(days=2), user_id=f"u{u}", experiment_id="earlier",
                         value=float(u % 3)))
    return out


@pytest.fixture
async def ch():
    database = f"nb_contract_{uuid.uuid4().hex[:10]}"
    async with open_service(Settings(), database=database, clickhouse_url=URL) as service:
        assert service.store.engine == "clickhouse"
        try:
            yield service
        finally:
            await service.store.execute(f"DROP DATABASE IF EXISTS {database}")


async def count(ch, final: bool = False) -> int:
    table = await ch.store.query(f"SELECT count() AS n FROM {ch.db}.events{' FINAL' if final else ''}")
    return table.column("n")[0].as_py()


async def test_a_batch_sent_twice_is_stored_once_on_both_paths(ch):
    batch = events_to_arrow(sample())
    await ch.ingest_arrow(batch, "arrow-1")
    await ch.ingest_arrow(batch, "arrow-1")
    assert await count(ch) == 60
    payload = b"\n".join(e.model_dump_json(exclude_none=True).encode() for e in sample())
    await ch.ingest_json(payload, "json-1")
    await ch.ingest_json(payload, "json-1")
    assert await count(ch) == 120 and await count(ch, final=True) == 60  # JSON copies collapse on event_id


async def test_statistics_match_the_hand_computed_values(ch):
    await ch.ingest_events(sample(), "s")
    stats = await ch.get_variant_statistics("srv", ["revenue"], cuped=True, cuped_lookback_days=7)
    control = stats.get("control", "revenue")  # odd users: 1, 3, ..., 19
    odd = [float(u) for u in range(1, 20, 2)]
    assert control.n == 10 and control.sum == sum(odd) and control.sum_squares == sum(x * x for x in odd)
    assert control.pre_sum == sum(u % 3 for u in range(1, 20, 2))
    assert control.post_pre_sum_of_products == sum(u * (u % 3) for u in range(1, 20, 2))


async def test_bad_json_is_rejected_whole(ch):
    good = orjson.dumps({"event_id": "a", "event_type": "click", "user_id": "u", "timestamp": "2025-01-01T00:00:00Z"})
    with pytest.raises(InvalidInput):
        await ch.ingest_json(good + b'\n{"event_id": "b", "event_type": "click"}', "bad")
    assert await count(ch) == 0


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT 1; DROP TABLE events",
    "INSERT INTO events (event_id) VALUES ('x')",
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT 1 INTO OUTFILE '/tmp/x'",
])
async def test_the_guard_refuses_on_the_server_too(ch, sql):
    with pytest.raises(QueryRefused):
        await ch.run_query(sql)


async def test_the_server_runs_user_sql_read_only_with_limits(ch):
    await ch.ingest_events(sample(2), "q")
    assert (await ch.run_query("SELECT count() AS n FROM events")).rows == [[6]]
    capped = await ch.run_query("SELECT number FROM numbers(100000)", max_rows=5)
    assert capped.row_count == 5 and capped.truncated
    with pytest.raises(StoreError) as failed:
        await ch.store.sandbox_query(f"INSERT INTO {ch.db}.events (event_id, event_type, user_id) VALUES ('x', 'click', 'u')")
    assert failed.value.code == 164
