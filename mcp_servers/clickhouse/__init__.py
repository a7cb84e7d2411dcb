"""The ClickHouse MCP server: the event store, idempotent ingest, per-variant
sufficient statistics, insights, trends and guarded read-only SQL.

    async with open_service(settings) as ch:            # chDB, or CLICKHOUSE_URL
        await ch.ingest_json(jsoneachrow_bytes, token)  # the stream processor's fast path
        await ch.ingest_arrow(arrow_table, token)       # columnar batches
        stats = await ch.get_variant_statistics("exp-key", metrics=["revenue"], cuped=True)
        server = build_server(ch)                       # MCPServer with the tools

Embedded mode (no CLICKHOUSE_URL) runs chDB in this process on
`settings.chdb_dir`; chDB opens one data path per process, so stores share one
session per path and isolate by database name (`clickhouse_database`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from schemas.settings import Settings, get_settings

from .server import build_server
from .service import ClickHouseService
from .store import ChdbStore, ClickHouseStore, QueryLimits, ServerStore


@asynccontextmanager
async def open_service(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[ClickHouseService]:
    """Open the engine (CLICKHOUSE_URL's server, else chDB), create the tables, yield the service.

    Overrides: database (default settings.clickhouse_database), chdb_path (default
    settings.chdb_dir), clickhouse_url (default settings.clickhouse_url; "" forces chDB),
    limits (a QueryLimits for clickhouse_query; default from the settings' clickhouse_query_* fields).
    """
    settings = settings or get_settings()
    database: str = overrides.pop("database", None) or settings.clickhouse_database
    chdb_path = Path(overrides.pop("chdb_path", None) or settings.chdb_dir)
    url = overrides.pop("clickhouse_url", settings.clickhouse_url)
    limits: QueryLimits = overrides.pop("limits", None) or QueryLimits.from_settings(settings)
    if overrides:
        raise TypeError(f"unknown open_service overrides: {sorted(overrides)}")
    store: ClickHouseStore
    if url:
        store = await ServerStore.connect(url, database, limits)
    else:
        store = ChdbStore(chdb_path, database, limits)
    try:
        service = ClickHouseService(store)
        await service.migrate()
        yield service
    finally:
        await store.close()


__all__ = ["ChdbStore", "ClickHouseService", "QueryLimits", "ServerStore", "build_server", "open_service"]
