"""Natural-language analytics over ClickHouse in the agent chat.

When a question needs numbers the model writes SQL for the read-only query tool; that SQL
goes through the ClickHouse server's guard like any other client's, so writes, several
statements and file/network table functions come back as is_error tool results the model
can read, and a valid SELECT returns rows the answer quotes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fake_anthropic import Reply, result_text, text, tool_use
from mcp import Client

from mcp_router.apps.chat.session import ChatOptions, ChatSession
from mcp_router.runtime.serving import open_router
from mcp_servers.registry import SERVERS

COUNT_SQL = ("SELECT variant, uniqExact(user_id) AS users FROM events FINAL "
             "WHERE experiment_id = 'checkout-guest' AND event_type = 'exposure' GROUP BY variant ORDER BY variant")


def exposures(n_control: int, n_guest: int) -> list[dict]:
    start = datetime(2026, 10, 1, 9, tzinfo=UTC)
    events = []
    for variant, n in (("control", n_control), ("guest", n_guest)):
        for i in range(n):
            events.append({"event_id": f"x-{variant}-{i}", "event_type": "exposure", "user_id": f"{variant}-{i}",
                           "experiment_id": "checkout-guest", "variant": variant,
                           "timestamp": (start + timedelta(minutes=i)).isoformat()})
    return events


def answer_from_rows(body: dict) -> Reply:
    (result,) = [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    rows = dict(json.loads(result_text(result))["rows"])
    return text(f"checkout-guest exposed {rows['control']} users to control and {rows['guest']} to guest.")


async def test_numbers_come_from_read_only_sql_and_writes_are_refused(fake_anthropic, chat_settings) -> None:
    if not SERVERS["clickhouse"].available():
        pytest.skip("the clickhouse server is not in mcp_servers/ yet")
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_use("clickhouse_query", {"sql": "ALTER TABLE events DELETE WHERE 1"}),
        tool_use("clickhouse_query", {"sql": "SELECT * FROM file('/etc/passwd', 'LineAsString')"}),
        tool_use("clickhouse_query", {"sql": "SELECT 1; DROP TABLE events"}),
        tool_use("clickhouse_query", {"sql": COUNT_SQL}),
        answer_from_rows,
    )
    async with open_router(settings) as router, Client(router.server) as client:
        stored = await client.call_tool("ingest_events", {"events": exposures(37, 41), "idempotency_token": "t1"})
        assert not stored.is_error, stored.content[0].text
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        turn = await session.ask("How many users has checkout-guest exposed per variant?")
        count = await client.call_tool("clickhouse_query", {"sql": "SELECT count() FROM events"})

    assert [c.is_error for c in turn.tool_calls] == [True, True, True, False]
    refusals = [r for request in fake_anthropic.requests[1:4] for r in request.tool_results()]
    assert all(r["is_error"] is True for r in refusals)
    assert all("refused" in r["content"].lower() or "not allowed" in r["content"].lower() for r in refusals), \
        [r["content"] for r in refusals]
    assert turn.answer == "checkout-guest exposed 37 users to control and 41 to guest."
    assert count.structured_content["rows"] == [[78]]  # nothing was deleted or dropped
