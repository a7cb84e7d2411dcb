"""`neonblue up | down | status`: the embedded stack as one unit.

Parts: PostgreSQL (unless DATABASE_URL), the tansu broker (unless
KAFKA_BOOTSTRAP_SERVERS), and the *store owner*: one `neonblue serve --http`
process that opens chDB and Chroma (each allows a single owning process) and
serves every MCP server in-process. Any later `neonblue serve` over stdio
attaches to that owner instead of opening the stores itself.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import httpx

from mcp_router.embedded import (
    ConfigError,
    EmbeddedKafka,
    EmbeddedPostgres,
    ManagedProcess,
    PartStatus,
    ensure_writable_dir,
    port_accepts,
    port_is_free,
)
from schemas.settings import Settings


@dataclass
class Stack:
    settings: Settings

    @property
    def postgres(self) -> EmbeddedPostgres | None:
        if self.settings.database_url:
            return None
        return EmbeddedPostgres(self.settings.pg_data_dir, self.settings.embedded_pg_port)

    @property
    def kafka(self) -> EmbeddedKafka | None:
        if self.settings.kafka_bootstrap_servers:
            return None
        return EmbeddedKafka(self.settings.embedded_kafka_port, self.settings.run_dir, self.settings.log_dir)

    @property
    def owner(self) -> ManagedProcess:
        return ManagedProcess("owner", self.settings.run_dir, self.settings.log_dir)

    @property
    def owner_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def owner_healthy(self) -> bool:
        try:
            return httpx.get(f"{self.owner_url}/health", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def up(self, timeout: float = 120.0) -> list[PartStatus]:
        """Start every embedded part that is not running. Safe to call twice."""
        home = ensure_writable_dir(self.settings.neonblue_home, "NEONBLUE_HOME")
        ensure_writable_dir(self.settings.run_dir, "NEONBLUE_HOME")
        ensure_writable_dir(self.settings.log_dir, "NEONBLUE_HOME")
        if (pg := self.postgres) is not None:
            pg.start()
        else:
            check_database_url(self.settings.effective_database_url)
        if (kafka := self.kafka) is not None:
            kafka.start()
        if self.owner.pid() is None:
            if not port_is_free(self.settings.http_host, self.settings.http_port):
                raise ConfigError(
                    f"NEONBLUE_HTTP_PORT: port {self.settings.http_port} on {self.settings.http_host} is already in use"
                )
            env = {**os.environ, "NEONBLUE_HOME": str(home)}
            proc = self.owner.spawn([sys.executable, "-m", "mcp_router", "serve", "--http", "--owner"], env=env)
            deadline = time.monotonic() + timeout
            while not self.owner_healthy():
                if proc.poll() is not None:
                    self.owner.stop()
                    raise ConfigError(f"NEONBLUE_HOME: the store owner exited at start (see {self.owner.log_file})")
                if time.monotonic() > deadline:
                    self.owner.stop()
                    raise ConfigError(f"NEONBLUE_HTTP_PORT: the store owner did not become healthy in {timeout:.0f}s")
                time.sleep(0.2)
        return self.status()

    def down(self) -> list[PartStatus]:
        """Stop what `up` started, owner first (it flushes and commits), by pid."""
        self.owner.stop(timeout=30)
        if (kafka := self.kafka) is not None:
            kafka.stop()
        if (pg := self.postgres) is not None:
            pg.stop()
        return self.status()

    def status(self) -> list[PartStatus]:
        parts: list[PartStatus] = []
        if (pg := self.postgres) is not None:
            parts.append(pg.status())
        else:
            parts.append(PartStatus("postgres", database_reachable(self.settings.database_url or ""),
                                    redact(self.settings.database_url or ""), "external"))
        if (kafka := self.kafka) is not None:
            parts.append(kafka.status())
        else:
            host, _, port = self.settings.effective_kafka_bootstrap.split(",")[0].rpartition(":")
            parts.append(PartStatus("kafka", port_accepts(host, int(port or 9092), timeout=1.0),
                                    self.settings.effective_kafka_bootstrap, "external"))
        owner_pid = self.owner.pid()
        detail = "crashed (pid file left, process gone)" if self.owner.crashed() else ""
        if owner_pid is not None and not self.owner_healthy():
            detail = f"pid {owner_pid} alive but /health does not answer"
        parts.append(PartStatus("router+stores", owner_pid is not None and self.owner_healthy(),
                                self.owner_url, str(self.settings.neonblue_home), detail))
        parts.append(PartStatus("clickhouse", owner_pid is not None,
                                self.settings.clickhouse_url or "chDB (in the router process)",
                                "external" if self.settings.clickhouse_url else str(self.settings.chdb_dir)))
        parts.append(PartStatus("chroma", owner_pid is not None,
                                self.settings.chroma_url or "PersistentClient (in the router process)",
                                "external" if self.settings.chroma_url else str(self.settings.chroma_dir)))
        return parts


def redact(url: str) -> str:
    """Hide a password in a URL for display."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url


def database_reachable(dsn: str, timeout: float = 3.0) -> bool:
    try:
        check_database_url(dsn, timeout)
    except ConfigError:
        return False
    return True


def check_database_url(dsn: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when DATABASE_URL cannot be reached."""
    import asyncio

    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        await conn.close()

    try:
        asyncio.run(probe())
    except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"DATABASE_URL: cannot connect to {redact(dsn)} ({reason})") from None
