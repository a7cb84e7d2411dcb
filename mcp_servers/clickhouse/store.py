"""The engine behind the ClickHouse server: one store interface, two engines.

- `ChdbStore` runs the real ClickHouse engine in-process (PyPI `chdb`) on a data
  directory. chDB can open ONE data path per process, so every store of a
  process shares one writer `Session` per path (`_PATHS`, a registry keyed by
  path) and isolates by database name: all internal SQL names its tables as
  `database.table`. User SQL (the `clickhouse_query` tool) runs on a small pool
  of sandbox sessions per (path, database) whose current database is the
  store's and which are switched to `readonly=1` with time, memory and
  result-size limits at creation, so no statement they run can change a
  setting or write.
- `ServerStore` talks to a ClickHouse server over HTTP (clickhouse-connect);
  the same SQL, limits passed as per-query settings (HTTP parameters).

Two facts about a chDB Session (measured on chDB 4.4) shape `_Connection`:
it runs its queries one at a time (a second caller waits for the first), and a
query that fails after its output format wrote its first bytes (Arrow writes
the file header and schema at once; text formats write rows) leaves those bytes
in the session's result buffer, where the NEXT query's result is appended to
them: that caller gets "Invalid flatbuffers message." (or, in a text format,
the failed query's rows). So every session is used by one query at a time and
is drained by a throwaway query after any failure, before anyone else gets it;
user SQL gets its own sessions, one per running query, so a heavy query only
ever holds its own.

Both take values as bound parameters (`{name:Type}` placeholders) and return
query results as Arrow tables. Blocking calls run in a worker thread
(`anyio.to_thread`), so the event loop stays responsive while chDB works.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import BackendUnavailable

log = logging.getLogger(__name__)

Params = Mapping[str, Any]
_DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CODE_RE = re.compile(r"Code:\s*(\d+)")
_SETTING_VALUE_RE = re.compile(r"^[A-Za-z0-9_.]+$")


class StoreError(Exception):
    """A statement failed in the engine; `code` is ClickHouse's error code when known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def from_engine(cls, exc: BaseException) -> StoreError:
        text = str(exc)
        match = _CODE_RE.search(text)
        return cls(_short_message(text), int(match.group(1)) if match else None)


def _short_message(text: str) -> str:
    # ClickHouse appends stack-ish context after the first line; keep the reason.
    text = text.replace("Streaming insert finish failed: ", "")
    first = text.strip().splitlines()[0] if text.strip() else "engine error"
    return first[:1000]


@dataclass(frozen=True)
class QueryLimits:
    """Limits applied to user SQL (the sandbox), on both engines (see `Settings.clickhouse_query_*`)."""

    max_execution_seconds: int = 10
    max_result_rows: int = 10_000
    max_result_bytes: int = 50 * 2**20
    max_memory_bytes: int = 2**30
    max_concurrent: int = 4  # sandbox queries running at once (chDB: sessions in the pool)

    @classmethod
    def from_settings(cls, settings: Any) -> QueryLimits:
        return cls(
            max_execution_seconds=settings.clickhouse_query_timeout_seconds,
            max_result_rows=settings.clickhouse_query_max_result_rows,
            max_result_bytes=settings.clickhouse_query_max_result_mb * 2**20,
            max_memory_bytes=settings.clickhouse_query_max_memory_mb * 2**20,
            max_concurrent=settings.clickhouse_query_concurrency,
        )

    @property
    def wait_seconds(self) -> float:
        """How long a caller waits at most: for a free session, then the query, then a grace.

        The engine stops a query at max_execution_time; the bound also answers a caller
        whose query sits in a stage that does not check the time (its session stays out
        of the pool until the engine lets go).
        """
        return 2 * self.max_execution_seconds + _GRACE_SECONDS

    def as_settings(self) -> dict[str, Any]:
        # readonly last: the other limits are applied before it forbids changes.
        return {
            "max_execution_time": self.max_execution_seconds,
            "timeout_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_bytes,
            # "break" stops at a block boundary; the service trims to the limit and reports truncation.
            "max_result_rows": self.max_result_rows + 1,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "break",
            "readonly": 1,
        }


_GRACE_SECONDS = 3.0
TIMEOUT_EXCEEDED = 159  # ClickHouse's code, also used when the store stops waiting
TOO_MANY_SIMULTANEOUS_QUERIES = 202  # ClickHouse's code, used when no sandbox session frees up in time


async def _bounded(limits: QueryLimits, fn: Any, *args: Any) -> Any:
    """Run blocking `fn(*args, abandoned)` in a thread; stop waiting after `limits.wait_seconds`.

    `abandoned` is set once nobody waits for the answer (time-out or the caller was
    cancelled), so a call still queued for a session does not start its query.
    """
    abandoned = threading.Event()
    try:
        with anyio.fail_after(limits.wait_seconds):
            return await anyio.to_thread.run_sync(fn, *args, abandoned, abandon_on_cancel=True)
    except TimeoutError:
        raise StoreError(
            f"Timeout exceeded: no answer within {limits.wait_seconds:g} s", TIMEOUT_EXCEEDED
        ) from None
    finally:
        abandoned.set()


def insert_settings(token_digest: str | None) -> dict[str, Any]:
    """Settings of every insert into `events`.

    optimize_on_insert=0: skip collapsing duplicates inside the inserted block (a
    second sort+merge pass that halves insert throughput); FINAL and background
    merges collapse them anyway. max_partitions_per_insert_block: see below.
    """
    # A backfill batch may span many weekly partitions; ClickHouse's default refuses > 100.
    settings: dict[str, Any] = {"optimize_on_insert": 0, "max_partitions_per_insert_block": 1000}
    if token_digest is not None:
        if not re.fullmatch(r"[0-9a-f]{64}", token_digest):
            raise ValueError("dedup token digest must be 64 hex characters")
        settings["insert_deduplication_token"] = token_digest
    return settings


def _settings_clause(settings: Mapping[str, Any]) -> str:
    """A SETTINGS clause from values this module controls (ints, identifiers, hex digests)."""
    parts = []
    for key, value in settings.items():
        if not _DATABASE_RE.match(key):
            raise ValueError(f"bad setting name {key!r}")
        if isinstance(value, bool):
            parts.append(f"{key} = {int(value)}")
        elif isinstance(value, int):
            parts.append(f"{key} = {value}")
        elif isinstance(value, str) and _SETTING_VALUE_RE.match(value):
            parts.append(f"{key} = '{value}'")
        else:
            raise ValueError(f"bad value for setting {key}")
    return " SETTINGS " + ", ".join(parts) if parts else ""


def split_json_lines(data: bytes) -> pa.Table:
    """JSONEachRow bytes -> a one-column Arrow table `raw` (one row per non-empty line)."""
    lines = pc.split_pattern(pa.array([data], pa.binary()), b"\n").flatten()
    lines = pc.utf8_trim_whitespace(lines.cast(pa.string()))
    lines = pc.filter(lines, pc.greater(pc.binary_length(lines), 0))
    return pa.table({"raw": lines})


class ClickHouseStore(Protocol):
    """What the service needs from an engine. Table names are always `database.table` in `sql`."""

    engine: str  # "chdb" | "clickhouse"
    database: str
    location: str  # data path or server host, for messages (never credentials)
    change_log: ChangeLog | None  # set when every writer is in this process (chDB): enables the user rollup

    async def execute(self, sql: str, params: Params | None = None) -> None:
        """Run one statement that returns no rows (DDL, INSERT ... SELECT)."""

    async def query(self, sql: str, params: Params | None = None) -> pa.Table:
        """Run one SELECT and return its rows as Arrow."""

    async def insert_arrow(self, table: str, data: pa.Table, token_digest: str | None) -> None:
        """Insert an Arrow table whose columns name the target's columns (dedup token optional)."""

    async def insert_json_select(
        self, table: str, columns: Sequence[str], select_from_raw: str, data: bytes, token_digest: str | None
    ) -> None:
        """Insert JSONEachRow bytes: `select_from_raw` is a SELECT over a source `{source}`
        with one String column `raw` per line; its result goes into `columns` of `table`."""

    async def sandbox_query(self, sql: str) -> pa.Table:
        """Run user SQL with readonly=1 and the limits; unqualified tables are the store's database."""

    async def close(self) -> None: ...


# ------------------------------------------------------------------ chDB


class ChangeLog:
    """Which users' events changed, in insert order: what the per-user rollup must recompute.

    Only an engine whose every writer is in this process can keep one (chDB: one
    process owns the data path). The service appends a batch's user ids after the
    insert returned, so everything up to a position is visible to a reader that
    takes the position first. `None` entries mean "unknown users" (recompute all).
    The log keeps at most `capacity` ids; a reader that fell further behind is told
    to recompute everything.
    """

    def __init__(self, capacity: int = 5_000_000) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: list[tuple[int, pa.Array | None]] = []  # (position after the entry, users)
        self._position = 0
        self._trimmed_to = 0  # readers at or beyond this position can still be answered
        self._size = 0

    @property
    def position(self) -> int:
        with self._lock:
            return self._position

    def append(self, users: pa.Array | None) -> None:
        with self._lock:
            self._position += 1
            self._entries.append((self._position, users))
            self._size += len(users) if users is not None else 0
            while self._size > self.capacity and len(self._entries) > 1:
                end, dropped = self._entries.pop(0)
                self._size -= len(dropped) if dropped is not None else 0
                self._trimmed_to = end

    def since(self, position: int) -> pa.Array | None:
        """Distinct user ids appended after `position`; None when unknown (trimmed away or not recorded)."""
        with self._lock:
            if position < self._trimmed_to:
                return None
            arrays = [users for end, users in self._entries if end > position]
        if any(a is None for a in arrays):
            return None
        if not arrays:
            return pa.array([], pa.string())
        return pc.unique(pa.chunked_array(arrays, pa.string()).combine_chunks())


class _Connection:
    """One chDB Session, used by one query at a time and drained after a failure.

    A query that fails after its output started leaves that output in the session's
    result buffer, in front of the next query's result (see the module docstring).
    `query` holds the session until a throwaway query has consumed the leftover, so
    no other caller ever reads it. A session whose drain fails is `broken`.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.broken = False
        self._lock = threading.Lock()

    def query(self, sql: str, fmt: str, params: Params | None = None) -> Any:
        with self._lock:
            try:
                return self.session.query(sql, fmt, params=dict(params) if params else None)
            except Exception as exc:
                self._drain()
                raise StoreError.from_engine(exc) from exc

    def _drain(self) -> None:
        try:
            leftover = self.session.query("SELECT 1", "CSV").bytes()
        except Exception as exc:  # the session is unusable: its owner replaces it
            self.broken = True
            log.warning("chDB session could not be drained after a failed query: %s", _short_message(str(exc)))
            return
        if leftover != b"1\n":
            log.debug("drained %d bytes a failed query left in its chDB session", len(leftover) - 2)

    def close(self) -> None:
        with self._lock:
            try:
                self.session.close()
            except Exception:  # closing a session never matters more than the caller's error
                log.debug("closing a chDB session failed", exc_info=True)


class _SandboxPool:
    """Read-only sessions for user SQL on one (path, database, limits): one per running query.

    At most `limits.max_concurrent` sessions exist; a caller waits for a free one up
    to the time limit (a running query ends by then) and is then told the server is
    busy. Sessions are cheap (~0.5 ms) and kept for the life of the process.
    """

    def __init__(self, path: str, database: str, limits: QueryLimits) -> None:
        self.path = path
        self.database = database
        self.limits = limits
        self._idle: list[_Connection] = []
        self._open = 0
        self._changed = threading.Condition()

    def _new(self) -> _Connection:
        from chdb.session import Session

        session = Session(self.path)  # same engine, its own current database and settings
        session.query(f"USE `{self.database}`")
        for name, value in self.limits.as_settings().items():
            session.query(f"SET {name} = {value!r}" if isinstance(value, str) else f"SET {name} = {value}")
        return _Connection(session)

    def acquire(self, abandoned: threading.Event) -> _Connection | None:
        """A session of this caller's own; None when the caller stopped waiting meanwhile."""
        deadline = time.monotonic() + self.limits.max_execution_seconds
        with self._changed:
            while not self._idle and self._open >= self.limits.max_concurrent:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or abandoned.is_set():
                    if abandoned.is_set():
                        return None
                    raise StoreError(
                        f"{self._open} queries are running, the most this store runs at once",
                        TOO_MANY_SIMULTANEOUS_QUERIES,
                    )
                self._changed.wait(min(remaining, 0.5))
            if abandoned.is_set():
                return None
            if self._idle:
                return self._idle.pop()
            self._open += 1
        try:
            return self._new()
        except Exception as exc:
            self._forget()
            raise StoreError.from_engine(exc) from exc

    def release(self, conn: _Connection) -> None:
        if conn.broken:
            conn.close()
            self._forget()
            return
        with self._changed:
            self._idle.append(conn)
            self._changed.notify()

    def _forget(self) -> None:
        with self._changed:
            self._open -= 1
            self._changed.notify()


@dataclass
class _ChdbPath:
    path: str
    writer: _Connection
    sandboxes: dict[tuple[str, QueryLimits], _SandboxPool] = field(default_factory=dict)
    changes: dict[str, ChangeLog] = field(default_factory=dict)  # per database
    users: int = 0


_PATHS: dict[str, _ChdbPath] = {}
_PATHS_LOCK = threading.Lock()


def _with_python_source(conn: _Connection, sql: str, source: pa.Table, fmt: str, params: Params | None = None) -> Any:
    """Run `sql` with `{source}` read from the Arrow table `source` by chDB's Python() table function.

    Python() resolves a variable *name* in the caller's namespace and reuses what it
    resolved for a name it has seen: with one fixed name, concurrent inserts all read
    the same batch (measured: 200 parallel inserts stored one batch 200 times). So each
    call binds its table to a name of its own in this module's globals, for the duration
    of the query only.
    """
    name = f"_nb_source_{uuid.uuid4().hex}"
    globals()[name] = source
    try:
        return conn.query(sql.replace("{source}", f"Python({name})"), fmt, params)
    finally:
        del globals()[name]


def _chdb_path(path: Path) -> _ChdbPath:
    key = str(Path(path).expanduser().resolve())
    with _PATHS_LOCK:
        entry = _PATHS.get(key)
        if entry is None:
            if _PATHS:
                other = next(iter(_PATHS))
                raise BackendUnavailable(
                    f"chDB already uses the data path {other} in this process and can open only one; "
                    f"cannot open {key}. Use one NEONBLUE_HOME per process or set CLICKHOUSE_URL."
                )
            from chdb.session import Session

            Path(key).mkdir(parents=True, exist_ok=True)
            try:
                entry = _ChdbPath(key, _Connection(Session(key)))
            except Exception as exc:  # a second process holding the path fails here
                raise BackendUnavailable(f"cannot open chDB at {key}: {_short_message(str(exc))}") from exc
            _PATHS[key] = entry
        entry.users += 1
        return entry


class ChdbStore:
    """The embedded engine: chDB on a data path, tables in `database`."""

    engine = "chdb"

    def __init__(self, path: Path, database: str, limits: QueryLimits | None = None) -> None:
        if not _DATABASE_RE.match(database):
            raise ValueError(f"invalid database name {database!r}")
        self._entry = _chdb_path(path)
        self.database = database
        self.location = self._entry.path
        self.limits = limits or QueryLimits()
        self._closed = False
        self._low_cardinality: dict[str, frozenset[str]] = {}  # table -> its LowCardinality(String) columns
        with _PATHS_LOCK:
            self.change_log: ChangeLog | None = self._entry.changes.setdefault(database, ChangeLog())

    # The writer session is shared by every store on the path (one query at a time: see _Connection).
    def _run(self, sql: str, params: Params | None, fmt: str) -> Any:
        return self._entry.writer.query(sql, fmt, params)

    async def execute(self, sql: str, params: Params | None = None) -> None:
        await anyio.to_thread.run_sync(self._run, sql, params, "CSV")

    async def query(self, sql: str, params: Params | None = None) -> pa.Table:
        return await anyio.to_thread.run_sync(self._run, sql, params, "ArrowTable")

    async def execute_with_source(self, sql: str, params: Params | None, source: pa.Table) -> None:
        """Run a statement (INSERT ... SELECT) that reads the Arrow table `source` where `sql` says `{source}`."""
        await anyio.to_thread.run_sync(_with_python_source, self._entry.writer, sql, source, "CSV", params)

    async def insert_arrow(self, table: str, data: pa.Table, token_digest: str | None) -> None:
        cols = ", ".join(f"`{c}`" for c in data.column_names)
        sql = (
            f"INSERT INTO {self.database}.{table} ({cols}){_settings_clause(insert_settings(token_digest))} "
            f"SELECT {cols} FROM {{source}}"
        )
        await anyio.to_thread.run_sync(self._insert_arrow, table, sql, data)

    def _insert_arrow(self, table: str, sql: str, data: pa.Table) -> None:
        """In a worker thread: the batch's LowCardinality columns dictionary-encoded (in Arrow, without the
        GIL), then the insert. ClickHouse builds a LowCardinality column from a dictionary array without
        hashing every value again: measured with the events table, 2.3 instead of 3.5 µs of chDB CPU per row."""
        low = self._low_cardinality.get(table)
        if low is None:
            found = self._run("SELECT name FROM system.columns WHERE database = {db:String} AND table = "
                              "{table:String} AND type LIKE 'LowCardinality(%String)'",
                              {"db": self.database, "table": table}, "ArrowTable")
            low = self._low_cardinality[table] = frozenset(found.column("name").to_pylist())
        if any(name in low for name in data.column_names):
            data = data.combine_chunks()  # one dictionary per column, not one per chunk
        for index, column in enumerate(data.schema):
            if column.name in low and pa.types.is_string(column.type):
                data = data.set_column(index, column.name, pc.dictionary_encode(data.column(index)))
        _with_python_source(self._entry.writer, sql, data, "CSV")

    async def insert_json_select(
        self, table: str, columns: Sequence[str], select_from_raw: str, data: bytes, token_digest: str | None
    ) -> None:
        # chDB's send_insert cannot run INSERT ... SELECT (and swallows errors raised in
        # materialized views), so the lines go in as an Arrow column through Python().
        cols = ", ".join(f"`{c}`" for c in columns)
        sql = f"INSERT INTO {self.database}.{table} ({cols}){_settings_clause(insert_settings(token_digest))} {select_from_raw}"
        await self.execute_with_source(sql, None, await anyio.to_thread.run_sync(split_json_lines, data))

    def _sandbox(self) -> _SandboxPool:
        key = (self.database, self.limits)
        with _PATHS_LOCK:
            pool = self._entry.sandboxes.get(key)
            if pool is None:
                pool = self._entry.sandboxes[key] = _SandboxPool(self._entry.path, self.database, self.limits)
            return pool

    def _sandbox_query(self, sql: str, abandoned: threading.Event) -> pa.Table | None:
        pool = self._sandbox()
        conn = pool.acquire(abandoned)
        if conn is None:
            return None  # nobody waits for this answer any more
        try:
            return conn.query(sql, "ArrowTable")
        finally:
            pool.release(conn)

    async def sandbox_query(self, sql: str) -> pa.Table:
        return await _bounded(self.limits, self._sandbox_query, sql)

    async def close(self) -> None:
        # Sessions stay open for the life of the process: chDB cannot reopen another
        # path anyway, and other stores in this process may share this one.
        if not self._closed:
            self._closed = True
            with _PATHS_LOCK:
                self._entry.users -= 1


# ------------------------------------------------------------------ ClickHouse server


class ServerStore:
    """A ClickHouse server over HTTP (clickhouse-connect), tables in `database`."""

    engine = "clickhouse"
    # Other processes may write to the server: no change log, so no per-user rollup (statistics read events).
    change_log: ChangeLog | None = None

    def __init__(self, client: Any, database: str, location: str, limits: QueryLimits | None = None) -> None:
        self._client = client
        self.database = database
        self.location = location
        self.limits = limits or QueryLimits()

    @classmethod
    async def connect(cls, url: str, database: str, limits: QueryLimits | None = None) -> ServerStore:
        if not _DATABASE_RE.match(database):
            raise ValueError(f"invalid database name {database!r}")
        from urllib.parse import urlsplit

        import clickhouse_connect

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "clickhouse", "clickhouses"):
            # clickhouse-connect's chdb:// client applies per-query settings to its session
            # (readonly=1 would stick) and drops INSERT bodies: not a server stand-in.
            raise BackendUnavailable(
                f"CLICKHOUSE_URL must be an http(s):// URL of a ClickHouse server, not {parts.scheme}://; "
                "leave it unset for the embedded chDB engine"
            )
        location = f"{parts.hostname}:{parts.port or ''}"

        def connect() -> Any:
            # No HTTP session: a session id serialises queries and fails concurrent ones.
            client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client.database = database
            return client

        try:
            client = await anyio.to_thread.run_sync(connect)
        except Exception as exc:
            raise BackendUnavailable(f"cannot reach ClickHouse at {location}: {_short_message(str(exc))}") from exc
        return cls(client, database, location, limits)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise StoreError.from_engine(exc) from exc

    async def execute(self, sql: str, params: Params | None = None) -> None:
        await anyio.to_thread.run_sync(lambda: self._call(self._client.command, sql, parameters=params))

    async def query(self, sql: str, params: Params | None = None) -> pa.Table:
        return await anyio.to_thread.run_sync(
            lambda: self._call(self._client.query_arrow, sql, parameters=params, use_strings=True)
        )

    async def insert_arrow(self, table: str, data: pa.Table, token_digest: str | None) -> None:
        await anyio.to_thread.run_sync(
            lambda: self._call(
                self._client.insert_arrow, table, data, database=self.database, settings=insert_settings(token_digest)
            )
        )

    async def insert_json_select(
        self, table: str, columns: Sequence[str], select_from_raw: str, data: bytes, token_digest: str | None
    ) -> None:
        cols = ", ".join(f"`{c}`" for c in columns)
        select = select_from_raw.replace("{source}", "input('raw String')")
        sql = f"INSERT INTO {self.database}.{table} ({cols}) {select} FORMAT JSONAsString"
        await anyio.to_thread.run_sync(
            lambda: self._call(self._client.command, sql, data=data, settings=insert_settings(token_digest))
        )

    def _sandbox_query(self, sql: str, abandoned: threading.Event) -> pa.Table | None:
        if abandoned.is_set():
            return None
        return self._call(self._client.query_arrow, sql, settings=self.limits.as_settings(), use_strings=True)

    async def sandbox_query(self, sql: str) -> pa.Table:
        return await _bounded(self.limits, self._sandbox_query, sql)

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._client.close)
