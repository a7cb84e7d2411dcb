"""Migrations are versioned and idempotent, safe to run concurrently, and create the SELECT-only role."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mcp_servers.postgres import open_service
from mcp_servers.postgres.store import load_migrations, migrate
from schemas.errors import BackendUnavailable

TABLES = {"experiments", "variants", "assignments", "results", "decisions", "experiment_changes", "event_outbox",
          "streamed_exposures", "schema_migrations"}


def test_migrations_are_numbered_files_in_order():
    migrations = load_migrations()
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert [(m.version, m.name) for m in migrations][:2] == [(1, "registry"), (2, "readonly_role")]


async def test_migrating_twice_applies_each_version_once(pg_dsn):
    conn = await asyncpg.connect(pg_dsn)
    try:
        versions = [m.version for m in load_migrations()]
        assert await migrate(conn) == versions
        assert await migrate(conn) == []
        rows = await conn.fetch("SELECT version, checksum FROM neonblue.schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'neonblue'")}
        assert tables == TABLES
    finally:
        await conn.close()


async def test_concurrent_migrations_do_not_collide(pg_dsn):
    conns = [await asyncpg.connect(pg_dsn) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(a) for a in applied) == [0, 0, len(load_migrations())]
    finally:
        for c in conns:
            await c.close()


async def test_the_readonly_role_can_only_select_registry_tables(pg_dsn):
    async with open_service(dsn=pg_dsn) as service:
        assert service.store.readonly_role == "neonblue_readonly"
    conn = await asyncpg.connect(pg_dsn)
    try:
        role = await conn.fetchrow("SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'neonblue_readonly'")
        assert tuple(role) == (False, False, False)
        for table in TABLES:
            privileges = {p: await conn.fetchval("SELECT has_table_privilege('neonblue_readonly', $1, $2)", f"neonblue.{table}", p)
                          for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")}
            assert privileges == {"SELECT": True, "INSERT": False, "UPDATE": False, "DELETE": False, "TRUNCATE": False}, table
    finally:
        await conn.close()


async def test_constraints_guard_the_data_even_without_the_service(pg_dsn):
    async with open_service(dsn=pg_dsn) as service:
        experiment = await service.create_experiment({
            "key": "guarded", "name": "g", "type": "ui", "primary_metric": "clicks",
            "variants": [{"key": "a", "is_control": True}, {"key": "b"}]})
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):  # one control per experiment
            await conn.execute("UPDATE neonblue.variants SET is_control = true WHERE experiment_id = $1", experiment.id)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE neonblue.experiments SET status = 'paused' WHERE id = $1", experiment.id)
        with pytest.raises(asyncpg.ForeignKeyViolationError):  # the winner must be one of its variants
            await conn.execute("UPDATE neonblue.experiments SET winner = 'zzz' WHERE id = $1", experiment.id)
    finally:
        await conn.close()


async def test_an_unreachable_database_is_reported_without_credentials():
    with pytest.raises(BackendUnavailable, match=r"DATABASE_URL: cannot connect to PostgreSQL at 127\.0\.0\.1:1/nb") as info:
        async with open_service(dsn="postgresql://alice:s3cret@127.0.0.1:1/nb"):
            pass
    assert "s3cret" not in str(info.value)
