"""A throwaway PostgreSQL database per bench run, on the embedded server (shared by the bench scripts)."""

from __future__ import annotations

import uuid

import asyncpg


async def fresh_database(admin_dsn: str, prefix: str = "bench") -> str:
    """Create an empty database; return its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(admin_dsn: str, dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()
