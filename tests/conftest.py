"""Fixtures that give tests the REAL embedded parts, on free ports in temp dirs.

- PostgreSQL: one pgserver-backed server per session; each test that asks for
  `pg_dsn` gets a fresh database of its own.
- ClickHouse: chDB allows one data path per process, so one session-wide path;
  each test gets a database name of its own (`ch_database`).
- Chroma: a fresh PersistentClient directory per test (`chroma_path`).
- Kafka: one tansu broker per session; tests use unique topic names (`kafka_topic`).

No mocks of our code or of a database anywhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from mcp_router.runtime.embedded import EmbeddedKafka, EmbeddedPostgres, free_port

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def neonblue_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A session-wide NEONBLUE_HOME; settings read in tests point here."""
    home = tmp_path_factory.mktemp("neonblue_home")
    previous = os.environ.get("NEONBLUE_HOME")
    os.environ["NEONBLUE_HOME"] = str(home)
    from schemas.settings import get_settings

    get_settings.cache_clear()
    yield home
    if previous is None:
        os.environ.pop("NEONBLUE_HOME", None)
    else:
        os.environ["NEONBLUE_HOME"] = previous
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: pytest resets /tmp/pytest-of-<user> to 0700 at each session start,
    # which would lock out the unprivileged user PostgreSQL runs as when tests run as root.
    base = Path(tempfile.mkdtemp(prefix="neonblue-pg-"))
    server = EmbeddedPostgres(base / "pgdata", port=free_port())
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def pg_dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of a fresh, empty database for this test."""
    name = unique_name("t")
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg_server.dsn.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(pg_server.dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def chdb_path(neonblue_home: Path) -> Path:
    """The one chDB data path of this test process (chDB cannot open a second one)."""
    from schemas.settings import get_settings

    return get_settings().chdb_dir


@pytest.fixture
def ch_database() -> str:
    """A ClickHouse database name private to this test."""
    return unique_name("t")


@pytest.fixture
def chroma_path(tmp_path: Path) -> Path:
    path = tmp_path / "chroma"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    base = tmp_path_factory.mktemp("kafka")
    broker = EmbeddedKafka(port=free_port(), run_dir=base / "run", log_dir=base / "logs")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka_topic() -> str:
    return unique_name("topic")
