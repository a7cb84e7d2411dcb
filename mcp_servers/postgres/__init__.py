"""The PostgreSQL MCP server: experiment registry, lifecycle, GrowthBook-compatible
assignment, per-user results, the decision audit trail and read-only SQL.

    async with open_service(settings) as service:      # pool + migrations
        server = build_server(service)                  # MCPServer with the tools

Python callers use the service directly (`service.get_variant`, `service.assign_many`,
`service.record_decision`, `service.set_variant_weights`, ...) or the pure hashing in
`mcp_servers.postgres.assignment` (`assign`, `assign_batch`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from schemas.settings import Settings, get_settings

from .server import build_server
from .service import ExperimentService, assignment_spec
from .store import PostgresStore


@asynccontextmanager
async def open_service(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[ExperimentService]:
    """Open the pool (DATABASE_URL, or the embedded PostgreSQL), migrate, yield the service, close.

    `settings.assignment_writes` says when get_variant records a new user: "behind" (default: after
    answering, see PostgresStore.write_assignments_behind), "before_answer", or "durable" (before
    answering, synchronous_commit=on). Overrides: dsn, min_pool_size, max_pool_size, run_migrations,
    assignment_writes, or the two switches it sets (durable_assignments, assignment_writes_behind),
    and the service's query_timeout_ms, max_query_rows, max_result_bytes.
    """
    settings = settings or get_settings()
    dsn = overrides.pop("dsn", None) or settings.effective_database_url
    mode = overrides.pop("assignment_writes", settings.assignment_writes)
    durable = overrides.pop("durable_assignments", mode == "durable")
    behind = overrides.pop("assignment_writes_behind", mode == "behind" and not durable)
    store = await PostgresStore.open(
        dsn,
        min_size=overrides.pop("min_pool_size", 1),
        max_size=overrides.pop("max_pool_size", 10),
        run_migrations=overrides.pop("run_migrations", True),
        durable_assignments=durable,
    )
    try:
        yield ExperimentService(store, assignment_writes_behind=behind, **overrides)
    finally:
        await store.close()


__all__ = ["ExperimentService", "PostgresStore", "assignment_spec", "build_server", "open_service"]
