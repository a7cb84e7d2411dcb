"""Fixtures for the agent chat.

- `fake_anthropic`: the scripted Messages API (the only fake allowed: Anthropic
  is a paid external API); the real `anthropic` client talks to it over HTTP.
- `chat_settings`: Settings on the real embedded stores of this test (its own
  PostgreSQL database and ClickHouse database, the session's chDB path), with
  the Anthropic key and base URL of the fake when one is given.
- `recorder`: a ChatListener that keeps what the terminal would have shown.

Routers and MCP clients are opened inside each test body (anyio task groups
must enter and exit in one task).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic

from mcp_router.apps.chat.agent import ChatListener
from mcp_router.apps.chat.tools import ToolCall
from schemas.settings import Settings


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A scripted Messages API on a free 127.0.0.1 port (its own thread and event loop)."""
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def chat_settings(pg_dsn: str, ch_database: str, chdb_path: Path) -> Callable[..., Settings]:
    def build(fake: FakeAnthropic | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": pg_dsn,
            "clickhouse_database": ch_database,
            "neonblue_home": chdb_path.parent,
            "anthropic_api_key": fake.api_key if fake else None,
            "anthropic_base_url": fake.url if fake else None,
            "anthropic_model": "claude-test-default",
            "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


class Recorder(ChatListener):
    def __init__(self) -> None:
        self.text_chunks: list[str] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.results: list[ToolCall] = []
        self.notices: list[str] = []

    def on_text(self, text: str) -> None:
        self.text_chunks.append(text)

    def on_tool_call(self, tool: str, arguments: dict[str, Any]) -> None:
        self.calls.append((tool, arguments))

    def on_tool_result(self, call: ToolCall) -> None:
        self.results.append(call)

    def on_notice(self, message: str) -> None:
        self.notices.append(message)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
