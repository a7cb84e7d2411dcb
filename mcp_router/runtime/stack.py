"""`neonblue up | down | status`: the embedded stack as one unit.

Parts: PostgreSQL (unless DATABASE_URL), the tansu broker (unless
KAFKA_BOOTSTRAP_SERVERS), and the *store owner*: one `neonblue serve --http`
process that opens chDB and Chroma (each allows a single owning process) and
serves every MCP server in-process. Any later `neonblue serve` over stdio
attaches to that owner instead of opening the stores itself.

The embedded broker keeps its log in memory (the tansu build on PyPI has no
other storage engine that works here), so `down` first lets the stream
processor consume and commit everything the broker acknowledged, saves the
dead letters to NEONBLUE_HOME/dlq, and refuses to stop the broker while events
are unconsumed unless forced. Lag is measured on the broker, not by the
processor: log end offsets minus the group's committed offsets on every
partition of the configured topics, assigned to a member or not.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mcp_router.runtime.embedded import (
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

T = TypeVar("T")


class UnconsumedEvents(RuntimeError):
    """`down` would lose events the embedded broker acknowledged: the one-line reason and the count."""

    def __init__(self, message: str, lag: GroupLag | None) -> None:
        super().__init__(message)
        self.lag = lag


@dataclass(frozen=True)
class GroupLag:
    """Unconsumed events of a consumer group: per partition, log end offset minus committed offset
    (the log start when the group never committed there), over every partition of its topics."""

    group: str
    partitions: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> events not committed

    @property
    def total(self) -> int:
        return sum(self.partitions.values())

    def as_dict(self) -> dict:
        return {"group": self.group, "total": self.total, "partitions": dict(self.partitions)}


async def group_lag(bootstrap: str, topics: list[str], group_id: str) -> GroupLag:
    """The group's true lag, read from the broker.

    The end offset is the high watermark of a fetch, not ListOffsets: tansu 0.6 answers ListOffsets
    (latest) with the base offset of the last batch plus one, which undercounts a batched log.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
                                fetch_max_wait_ms=50, max_partition_fetch_bytes=1024, fetch_max_bytes=64 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, partition) for topic in topics
               for partition in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return GroupLag(group_id)
        committed = {tp: await consumer.committed(tp) for tp in tps}
        never = [tp for tp, offset in committed.items() if offset is None]
        start = {**(await consumer.beginning_offsets(never) if never else {}),
                 **{tp: offset for tp, offset in committed.items() if offset is not None}}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start[tp])
        pending = set(tps)
        while pending:  # one small fetch per partition brings its high watermark
            await consumer.getmany(*pending, timeout_ms=200, max_records=1)
            pending = {tp for tp in pending if consumer.highwater(tp) is None}
        return GroupLag(group_id, {f"{tp.topic}[{tp.partition}]": max(0, consumer.highwater(tp) - start[tp])
                                   for tp in tps})
    finally:
        await _stop(consumer)


async def read_dead_letters(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of the dead-letter topic as a JSON line (value, key, headers, coordinates)."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    rows: list[bytes] = []
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return rows
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        while pending:
            for records in (await consumer.getmany(*pending, timeout_ms=200)).values():
                rows.extend(orjson.dumps({
                    "topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
                    "key": _text(r.key), "value": _text(r.value),
                    "headers": {k: _text(v) for k, v in r.headers}}) for r in records)
            pending = {tp for tp in pending if consumer.highwater(tp) is None
                       or await consumer.position(tp) < consumer.highwater(tp)}
        return rows
    finally:
        await _stop(consumer)


async def _stop(consumer: Any) -> None:
    """Stop a consumer; first let its coordinator's task start (aiokafka 0.14 raises CancelledError
    from stop() when that task is cancelled before it ever ran, e.g. right after start())."""
    await asyncio.sleep(0)
    await consumer.stop()


def _bounded(coro: Coroutine[Any, Any, T], seconds: float) -> T:
    """Run `coro` to completion in a new event loop, at most `seconds` (then TimeoutError)."""

    async def run() -> T:
        async with asyncio.timeout(seconds):
            return await coro

    return asyncio.run(run())


def _text(raw: bytes | None) -> str | dict | None:
    """Bytes as text when they are UTF-8, else {"base64": ...}: a dead letter's bytes are kept exactly."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


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

    def outbox_backlog(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The registry's facts still on their way to the event store (stream_processor/outbox.py):
        unsent, oldest_age_s, last_error; None when PostgreSQL cannot be read (or predates the outbox)."""
        import asyncpg

        from stream_processor.outbox import read_backlog

        async def read() -> dict[str, Any]:
            conn = await asyncpg.connect(self.settings.effective_database_url, timeout=timeout)
            try:
                return await read_backlog(conn)
            finally:
                await conn.close()

        try:
            return _bounded(read(), timeout)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - a database that is down or hung: unknown
            return None

    def lag(self, timeout: float = 10.0) -> GroupLag | None:
        """The stream group's true lag on the configured topics; None when the broker cannot be read."""
        settings = self.settings
        try:
            return _bounded(group_lag(settings.effective_kafka_bootstrap, list(settings.kafka_topics),
                                      settings.kafka_group_id), timeout)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - a broker that is down or hung: unknown
            return None

    def drain(self, progress: Callable[[int, int], None] | None = None, stall: float = 60.0) -> GroupLag | None:
        """Wait while the store owner's stream processor consumes and commits what the broker holds.

        Returns the last lag measured: total 0 when drained; more when nobody consumes or the lag has
        not shrunk for `stall` seconds; None when the broker cannot be read. `progress(done, total)`
        is called after each measurement.
        """
        lag = self.lag()
        if lag is None or lag.total == 0:
            return lag
        first = best = lag.total
        moved = time.monotonic()
        while lag.total and self.owner.pid() is not None and time.monotonic() - moved < stall:
            time.sleep(0.5)
            if (now := self.lag()) is None:
                return None
            lag = now
            first = max(first, lag.total)  # producers may still be sending
            if progress is not None:
                progress(first - lag.total, first)
            if lag.total < best:
                best, moved = lag.total, time.monotonic()
        return lag

    def down(self, force: bool = False, progress: Callable[[int, int], None] | None = None,
             note: Callable[[str], None] | None = None, stall: float = 60.0) -> list[PartStatus]:
        """Stop what `up` started by pid: the owner (it flushes and commits), the broker, then PostgreSQL.

        The embedded broker keeps its log in memory, so first the stream drains; events still
        unconsumed then (no owner running, or it made no progress for `stall` s) raise
        UnconsumedEvents and nothing is stopped, unless `force`. The dead letters are saved to
        NEONBLUE_HOME/dlq before the broker stops.
        """
        say = note or (lambda _message: None)
        kafka = self.kafka
        memory_log = kafka is not None and not kafka.durable and kafka.status().running
        if memory_log:
            self._refuse_unconsumed(self.drain(progress, stall), force, say, before_owner=True)
        self.owner.stop(timeout=30)
        if memory_log:
            self._refuse_unconsumed(self.lag(), force, say, before_owner=False)  # sent while the owner stopped
            self._save_dead_letters(say)
        if kafka is not None:
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

    def _save_dead_letters(self, say: Callable[[str], None]) -> Path | None:
        """Copy the dead-letter topic to NEONBLUE_HOME/dlq/<topic>-<UTC time>.jsonl before the broker forgets it."""
        topic = self.settings.kafka_dlq_topic
        try:
            rows = _bounded(read_dead_letters(self.settings.effective_kafka_bootstrap, topic), 120)
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - say so; the events were drained
            say(f"could not save the dead letters of {topic}: {str(exc) or type(exc).__name__}")
            return None
        if not rows:
            return None
        directory = self.settings.neonblue_home / "dlq"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{topic}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
        path.write_bytes(b"\n".join(rows) + b"\n")
        say(f"saved {len(rows):,} dead letters of {topic} to {path}")
        return path

    def _refuse_unconsumed(self, lag: GroupLag | None, force: bool, say: Callable[[str], None],
                           before_owner: bool) -> None:
        if lag is not None and lag.total == 0:
            return
        if lag is None:
            what = "the embedded broker's lag cannot be read"
        else:
            what = f"{lag.total:,} events in the embedded broker are not consumed by group {self.settings.kafka_group_id}"
        if force:
            say(f"--force: {what}; stopping anyway" + ("" if lag is None else ", they are dropped"))
            return
        if lag is None:
            why, fix = "", "retry, or see the broker's log"
        elif not before_owner:
            why, fix = "they arrived while the stream processor stopped", "`neonblue up`, then `neonblue down` again"
        elif self.owner.pid() is None:
            why, fix = "the stream processor is not running", "`neonblue up` lets it consume them, then `neonblue down`"
        else:
            why, fix = "the stream processor stopped making progress", "see `neonblue status`, fix it and retry"
        raise UnconsumedEvents(f"down: {what}{f' ({why})' if why else ''} and the broker keeps them only in memory: "
                               f"{fix}, or `neonblue down --force` to drop them", lag)


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
