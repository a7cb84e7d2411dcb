"""clickhouse_query under load, on real chDB: one heavy query harms no other caller, and limits hold.

Measured on chDB 4.4 (issue 16, items 6 and 7): a Session runs its queries one at a
time, and a query that fails after its output format wrote its first bytes (Arrow
writes the file header and schema at once) leaves those bytes in the session's
result buffer; the next query on that session gets them glued in front of its own
result ("Invalid flatbuffers message.", "Message metadata too long", or in a text
format another caller's rows). Heavy queries here are bounded by a 1-2 s time limit
and a low memory limit, so the file runs in seconds and needs little memory.
"""

from __future__ import annotations

import time
import uuid

import anyio
import pytest

from mcp_servers.clickhouse import QueryLimits, open_service
from schemas.errors import QueryRefused
from schemas.settings import Settings

HEAVY = "SELECT count() FROM numbers(10000000000000)"
# Emits rows (one every 50M numbers) before it hits the time limit.
HEAVY_WITH_ROWS = "SELECT number, 'not yours' AS secret FROM numbers(1e13) WHERE number % 50000000 = 0"
# groupArray of 3000 strings of 100 kB: a few hundred MB, far above the test's 64 MB limit.
MEMORY_HOG = (
    "SELECT sum(length(s)) FROM (SELECT groupArray(repeat('x', 100000)) AS a FROM numbers(3000)) ARRAY JOIN a AS s"
)


@pytest.fixture(scope="module")
async def ch(chdb_path):
    limits = QueryLimits(max_execution_seconds=2, max_result_rows=1000, max_memory_bytes=64 * 2**20,
                         max_concurrent=4)
    async with open_service(Settings(), chdb_path=chdb_path, database=f"t_limits_{uuid.uuid4().hex[:8]}",
                            clickhouse_url="", limits=limits) as service:
        yield service


def assert_one_clean_line(message: str) -> None:
    assert "\n" not in message
    for engine_text in ("DB::Exception", "Code:", "Stack trace", "(TIMEOUT_EXCEEDED)", "(MEMORY_LIMIT_EXCEEDED)"):
        assert engine_text not in message


async def test_the_query_after_a_timed_out_one_is_unaffected(ch):
    with pytest.raises(QueryRefused, match="2 s execution-time limit") as refused:
        await ch.run_query(HEAVY)
    assert_one_clean_line(str(refused.value))
    for k in range(3):
        assert (await ch.run_query(f"SELECT {k} AS k, number FROM numbers(2) ORDER BY number")).rows == [[k, 0], [k, 1]]


async def test_rows_of_a_failed_query_never_reach_the_next_caller(ch):
    with pytest.raises(QueryRefused, match="execution-time limit"):
        await ch.run_query(HEAVY_WITH_ROWS)
    result = await ch.run_query("SELECT 'mine' AS owner")
    assert result.rows == [["mine"]]
    assert result.columns[0].name == "owner"


async def test_a_float_literal_heavy_query_harms_no_one(ch):
    with pytest.raises(QueryRefused, match="execution-time limit"):
        await ch.run_query("SELECT * FROM numbers(1e12) WHERE number % 1000000000000 = 7 LIMIT 5")
    assert (await ch.run_query("SELECT * FROM numbers(1e12) LIMIT 3")).rows == [[0], [1], [2]]


async def test_small_queries_during_heavy_ones_all_succeed_without_waiting(ch):
    """30 small queries while two heavy ones run: each gets exactly its own rows, none queues behind them."""
    small_done: dict[int, float] = {}
    small_rows: dict[int, list] = {}
    heavy_done: list[float] = []
    heavy_errors: list[str] = []

    async def heavy(sql: str) -> None:
        try:
            await ch.run_query(sql)
        except QueryRefused as exc:
            heavy_errors.append(str(exc))
        heavy_done.append(time.monotonic())

    async def small(k: int) -> None:
        result = await ch.run_query(f"SELECT {k} AS k, number FROM numbers(3) ORDER BY number")
        small_rows[k] = result.rows
        small_done[k] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(heavy, HEAVY)
        tg.start_soon(heavy, HEAVY_WITH_ROWS)
        await anyio.sleep(0.2)
        for k in range(30):
            tg.start_soon(small, k)
            await anyio.sleep(0.02)
    assert len(heavy_errors) == 2 and all("execution-time limit" in e for e in heavy_errors)
    assert small_rows == {k: [[k, 0], [k, 1], [k, 2]] for k in range(30)}
    # Other sessions of the pool served them while the heavy queries held theirs.
    assert max(small_done.values()) < min(heavy_done)
    # ...and the sessions the heavy queries used serve again.
    for k in range(8):
        assert (await ch.run_query(f"SELECT {k} AS k")).rows == [[k]]


async def test_memory_is_limited_per_query(ch):
    with pytest.raises(QueryRefused, match="64 MB per-query memory limit") as refused:
        await ch.run_query(MEMORY_HOG)
    message = str(refused.value)
    assert_one_clean_line(message)
    assert "clickhouse_query_max_memory_mb" in message  # what to change, besides how to narrow the query
    assert (await ch.run_query("SELECT 1 AS one")).rows == [[1]]


async def test_the_caller_gets_an_answer_within_the_time_limit(ch):
    started = time.monotonic()
    with pytest.raises(QueryRefused, match="execution-time limit"):
        await ch.run_query(HEAVY)
    assert time.monotonic() - started < 2 + 3  # the limit, plus the store's grace


def test_limits_come_from_the_settings():
    settings = Settings(clickhouse_query_timeout_seconds=7, clickhouse_query_max_memory_mb=300,
                        clickhouse_query_max_result_rows=500, clickhouse_query_max_result_mb=20,
                        clickhouse_query_concurrency=3)
    limits = QueryLimits.from_settings(settings)
    assert limits == QueryLimits(max_execution_seconds=7, max_memory_bytes=300 * 2**20, max_result_rows=500,
                                 max_result_bytes=20 * 2**20, max_concurrent=3)
    engine = limits.as_settings()
    assert engine["max_memory_usage"] == 300 * 2**20
    assert engine["max_execution_time"] == 7 and engine["timeout_overflow_mode"] == "throw"
    assert engine["max_result_bytes"] == 20 * 2**20
    assert list(engine)[-1] == "readonly"
    defaults = QueryLimits.from_settings(Settings())
    assert defaults.max_memory_bytes > 0 and defaults.max_execution_seconds > 0
    assert defaults.max_result_rows == 10_000  # the tool's max_rows ceiling


async def test_the_service_uses_the_settings_limits(chdb_path):
    settings = Settings(clickhouse_query_max_memory_mb=48, clickhouse_query_timeout_seconds=3)
    async with open_service(settings, chdb_path=chdb_path, database=f"t_limset_{uuid.uuid4().hex[:8]}",
                            clickhouse_url="") as service:
        assert service.store.limits.max_memory_bytes == 48 * 2**20
        with pytest.raises(QueryRefused, match="48 MB per-query memory limit"):
            await service.run_query(MEMORY_HOG)
