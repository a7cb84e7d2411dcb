"""PostgreSQL behind the registry: an asyncpg pool, migrations and every SQL statement.

Values are always bound as parameters; JSON columns go through orjson codecs.
The store knows tables and rows, not lifecycle rules: those live in service.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from importlib import resources
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg
import orjson

from schemas.errors import BackendUnavailable, InvalidInput, QueryRefused

from .models import (
    ChangeLogEntry,
    ColumnInfo,
    Decision,
    Experiment,
    ExperimentListItem,
    GuardrailSpec,
    MetricSpec,
    NamespaceSpec,
    QueryColumn,
    TableInfo,
    Variant,
)
from .sql_guard import GuardedQuery

log = logging.getLogger(__name__)

SCHEMA = "neonblue"
EXPOSURE_WRITERS = 2  # concurrent transactions for a large batch of stream exposures (insert_exposures)
EXPOSURE_CHUNK_MIN = 2_000  # a batch is split only when each chunk gets about this many rows
READONLY_ROLE = "neonblue_readonly"
CHANGES_CHANNEL = "neonblue_experiments"  # migration 0005: a committed experiment change, payload = its id
_MIGRATION_LOCK = 0x4E42_5047  # "NBPG": serialises migrations per database


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(typename, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A pool `reset` that sends nothing (see PostgresStore.open)."""


def redact_dsn(dsn: str) -> str:
    """host:port/db of a DSN, without credentials, for error messages."""
    try:
        parts = urlsplit(dsn)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"
    except ValueError:
        return "<unparseable DSN>"


# ---------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The packaged `migrations/NNNN_name.sql` files, in version order."""
    found = []
    for entry in resources.files("mcp_servers.postgres.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations in one transaction; returns the versions applied now. Idempotent."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            f"""CREATE SCHEMA IF NOT EXISTS {SCHEMA};
            CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"]: r["checksum"] for r in await conn.fetch(f"SELECT version, checksum FROM {SCHEMA}.schema_migrations")}
        for migration in load_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    log.warning("migration %04d_%s changed after it was applied", migration.version, migration.name)
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {SCHEMA}.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
            applied_now.append(migration.version)
    if applied_now:
        log.info("applied migrations %s", applied_now)
    return applied_now


# ---------------------------------------------------------------- row mapping

_EXPERIMENT_SELECT = f"""
SELECT e.*, e.xmin::text::bigint AS revision, COALESCE(v.variants, '[]'::jsonb) AS variants
FROM {SCHEMA}.experiments e
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object('id', id, 'key', key, 'name', name, 'is_control', is_control,
                                        'weight', weight, 'config', config) ORDER BY position) AS variants
    FROM {SCHEMA}.variants WHERE experiment_id = e.id
) v ON true
"""


def experiment_from_row(row: asyncpg.Record | dict[str, Any]) -> Experiment:
    namespace = None
    if row["namespace"] is not None:
        namespace = NamespaceSpec(name=row["namespace"], start=row["namespace_start"], end=row["namespace_end"])
    return Experiment(
        id=row["id"], key=row["key"], name=row["name"], type=row["type"], status=row["status"],
        description=row["description"], hypothesis=row["hypothesis"],
        primary_metric=MetricSpec(name=row["primary_metric"], direction=row["primary_metric_direction"]),
        secondary_metrics=[MetricSpec(**m) for m in row["secondary_metrics"]],
        guardrail_metrics=[GuardrailSpec(**m) for m in row["guardrail_metrics"]],
        variants=[Variant(**v) for v in row["variants"]],
        targeting=row["targeting"], coverage=row["coverage"], namespace=namespace,
        hash_seed=row["hash_seed"], hash_version=row["hash_version"], min_sample_size=row["min_sample_size"],
        winner=row["winner"], forced_variations=row["forced_variations"], owner=row["owner"], tags=list(row["tags"]),
        created_at=row["created_at"], updated_at=row["updated_at"], started_at=row["started_at"],
        stopped_at=row["stopped_at"], concluded_at=row["concluded_at"], archived_at=row["archived_at"],
    )


def _ref_clause(ref: str | int, placeholder: str = "$1") -> tuple[str, Any]:
    """WHERE fragment and value for an experiment reference: a numeric id or a key."""
    # isascii(): str.isdigit() is also true for '²' and other non-ASCII digits, which int() refuses.
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
        value = int(ref)
        if value > 2**63 - 1:
            raise InvalidInput(f"experiment id {ref} is out of range")
        return f"e.id = {placeholder}", value
    return f"e.key = {placeholder}", ref


def jsonable(value: Any) -> Any:
    """Any value asyncpg returns, as something JSON can carry."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(value)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | asyncpg.Record):
        return [jsonable(v) for v in value]
    return str(value)


# ---------------------------------------------------------------- the store


class ExperimentStore(Protocol):
    """What the service needs from a store (PostgresStore is the one implementation)."""

    readonly_role: str | None

    def transaction(self) -> Any: ...
    async def fetch_experiment(self, ref: str | int, conn: Any = None) -> Experiment | None: ...
    async def lock_experiment(self, conn: Any, ref: str | int) -> asyncpg.Record | None: ...
    async def fetch_for_assignment(self, ref: str | int, user_id: str) -> asyncpg.Record | None: ...
    async def assign_if_current(self, experiment_id: int, user_id: str, revision: int, variant_id: int | None,
                                bucket: float | None, attributes: dict[str, Any] | None,
                                exposed: bool = True) -> asyncpg.Record | None: ...
    async def insert_assignment(self, experiment_id: int, user_id: str, variant_id: int, source: str,
                                bucket: float | None, attributes: dict[str, Any] | None, exposed: bool = True) -> bool: ...
    async def run_read_only(self, query: GuardedQuery, timeout_ms: int, max_rows: int,
                            max_bytes: int) -> dict[str, Any]: ...


# The event outbox (migration 0004): the facts every analysis must see, written by the statement that
# writes the assignment or the result, relayed to Kafka by stream_processor/outbox.py.
_OUTBOX = f"{SCHEMA}.event_outbox"


def _exposure_outbox(exposed: str, key: str) -> str:
    """INSERT of one exposure outbox row per row of the CTE `exposed` (user_id, variant_id, exposed_at);
    `key` is the SQL of the experiment key. The event id is one per (experiment, user): the analysis takes
    each user's first exposure, so one exposure event per user is all it needs."""
    return f"""INSERT INTO {_OUTBOX} (event_id, event_type, experiment_key, variant_key, user_id, occurred_at)
                SELECT {SCHEMA}.event_uuid('exposure:' || {key} || ':' || x.user_id), 'exposure', {key}, v.key,
                       x.user_id, x.exposed_at
                FROM {exposed} x JOIN {SCHEMA}.variants v ON v.id = x.variant_id"""


async def outbox_backlog(db: asyncpg.Pool | asyncpg.Connection) -> asyncpg.Record:
    """unsent (rows), oldest (created_at of the oldest unsent row, or None), last_error (of that row).
    Takes any pool or connection, so `neonblue status` reads it without opening a store."""
    return await db.fetchrow(
        f"""SELECT count(*) AS unsent, min(created_at) AS oldest,
                   (SELECT last_error FROM {_OUTBOX} WHERE sent_at IS NULL ORDER BY id LIMIT 1) AS last_error
        FROM {_OUTBOX} WHERE sent_at IS NULL"""
    )


class _SettledPool:
    """The store's main pool, read-your-writes: every use first waits for the assignment writes this
    store queued (`PostgresStore.queue_assignment`), so whatever reads the registry through the store
    sees every assignment get_variant has answered in this process."""

    def __init__(self, pool: asyncpg.Pool, store: PostgresStore) -> None:
        self._pool = pool
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        await self._store.settle()
        return await self._pool.fetch(*args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        await self._store.settle()
        return await self._pool.fetchrow(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        await self._store.settle()
        return await self._pool.fetchval(*args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await self._store.settle()
        return await self._pool.execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        await self._store.settle()
        return await self._pool.executemany(*args, **kwargs)

    @asynccontextmanager
    async def acquire(self, **kwargs: Any) -> AsyncIterator[asyncpg.Connection]:
        await self._store.settle()
        async with self._pool.acquire(**kwargs) as conn:
            yield conn


# A queued assignment: experiment id, user id, variant id, bucket, attributes, exposed.
QueuedAssignment = tuple[int, str, int, float | None, dict[str, Any] | None, bool]
_WRITE_ATTEMPTS = 3
WRITE_BEHIND_DELAY = 0.02  # seconds answers wait to be recorded together (bench_assignment: 0.01 s gained less)
WRITE_BEHIND_BATCH = 500  # queued assignments that start the write before WRITE_BEHIND_DELAY is up


class PostgresStore:
    """asyncpg pools over the `neonblue` schema.

    Assignment writes go through `assignment_pool`, whose sessions commit with
    synchronous_commit=off (unless durable_assignments): an assignment is a pure
    function of (seed, user, weights), so a crash of the database server can at
    worst forget assignments made in its last fraction of a second, and those users
    are re-hashed to the same variant unless the weights changed meanwhile. This
    removes the WAL flush from get_variant's latency. Everything else (definitions,
    results, decisions, the change log) commits durably.

    An exposure's outbox row is written by the statement that records the assignment (or first
    marks it exposed), so the two share one transaction and one fate: a crash that forgets an
    assignment forgets its exposure too, and the user's next get_variant writes both again (with
    the same event id, so an exposure the relay had already sent still counts once).
    """

    def __init__(self, pool: asyncpg.Pool, readonly_role: str | None,
                 assignment_pool: asyncpg.Pool | None = None) -> None:
        self.pool: Any = _SettledPool(pool, self)
        self.assignment_pool = assignment_pool or self.pool
        self.readonly_role = readonly_role
        self._listener: asyncpg.Connection | None = None
        self._change_callbacks: list[Callable[[int | None], None]] = []
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False
        self.writes_behind = False  # see write_assignments_behind
        self._queued: list[QueuedAssignment] = []
        self._writing: asyncio.Task[None] | None = None
        self._write_now = asyncio.Event()

    # ------------------------------------------------------------ assignment writes off the latency path

    def write_assignments_behind(self) -> None:
        """Let get_variant record new users' assignments after answering (see queue_assignment). The
        default of `open_service` (settings.assignment_writes = "behind"): a new user then costs no round
        trip on the latency path.

        What changes for callers, against "before_answer": another connection sees an assignment a round
        trip after get_variant returned (reads through this store wait for it); a failed write is retried,
        then logged, never raised to the caller; and an answer to a user this process has not seen says
        source "hash" and newly_recorded even when another process recorded that same variant first.

        Durability: a process that dies with writes queued (at most WRITE_BEHIND_DELAY, ~20 ms, of new
        users) loses them: the hash gives those users the same variant on their next call, which records
        it and its exposure then; the exposure of a user who never returns is lost. A graceful stop
        (SIGTERM, `close`) writes them first. Not with durable_assignments.
        """
        if self.assignment_pool is self.pool:
            raise ValueError("durable_assignments writes every assignment before answering: no write-behind")
        self.writes_behind = True

    def queue_assignment(self, experiment_id: int, user_id: str, variant_id: int, bucket: float | None,
                         attributes: dict[str, Any] | None, exposed: bool) -> None:
        """Record a first assignment (and with `exposed` its exposure) after the answer has gone.

        The write starts at once in a task (several queued meanwhile go in one statement); every read
        through this store waits for it first (`settle`). It inserts only while the experiment runs and
        never over an existing assignment (the first wins); with `exposed`, a recorded assignment not
        exposed yet is stamped exposed, and the exposure goes to the outbox in the same statement.
        """
        self._queued.append((experiment_id, user_id, variant_id, bucket, attributes, exposed))
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write_queued())
        elif len(self._queued) >= WRITE_BEHIND_BATCH:
            self._write_now.set()

    async def settle(self) -> None:
        """Wait until every assignment queued so far is written (or given up on, logged)."""
        while self._writing is not None:
            self._write_now.set()
            await asyncio.shield(self._writing)

    async def _write_queued(self) -> None:
        try:
            # Wait a little so that one statement records many answers (a write per answer, even off the
            # path, takes the CPU the next answers need); a read through this store ends the wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._write_now.wait(), WRITE_BEHIND_DELAY)
            self._write_now.clear()
            while self._queued:
                batch, self._queued = self._queued, []
                by_experiment: dict[int, dict[str, QueuedAssignment]] = {}
                for row in batch:
                    users = by_experiment.setdefault(row[0], {})
                    first = users.get(row[1])  # the first answer for a user wins; exposed if any call showed it
                    users[row[1]] = row if first is None else first[:5] + (first[5] or row[5],)
                for experiment_id, rows in by_experiment.items():
                    await self._write_assignments(experiment_id, list(rows.values()))
        finally:
            self._writing = None

    async def _write_assignments(self, experiment_id: int, rows: list[QueuedAssignment]) -> None:
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                diverged = await self.assignment_pool.fetchval(
                    f"""WITH e AS (
                        SELECT key FROM {SCHEMA}.experiments WHERE id = $1 AND status = 'running'
                    ), t AS (
                        SELECT * FROM unnest($2::text[], $3::bigint[], $4::float8[], $5::jsonb[], $6::boolean[])
                            AS t(u, v, b, attrs, x)
                    ), ins AS (
                        INSERT INTO {SCHEMA}.assignments (experiment_id, user_id, variant_id, source, bucket, attributes,
                                                         exposed_at)
                        SELECT $1, u, v, 'hash', b, attrs, CASE WHEN x THEN now() END FROM t WHERE EXISTS (SELECT 1 FROM e)
                        ON CONFLICT (experiment_id, user_id) DO NOTHING
                        RETURNING user_id, variant_id, exposed_at
                    ), shown AS (
                        UPDATE {SCHEMA}.assignments a SET exposed_at = now() FROM t
                        WHERE a.experiment_id = $1 AND a.user_id = t.u AND t.x AND a.exposed_at IS NULL
                          AND a.source <> 'forced' AND EXISTS (SELECT 1 FROM e)
                        RETURNING a.user_id, a.variant_id, a.exposed_at
                    ), outbox AS (
                        {_exposure_outbox("(SELECT * FROM ins WHERE exposed_at IS NOT NULL UNION ALL SELECT * FROM shown)",
                                          "(SELECT key FROM e)")}
                    )
                    SELECT ARRAY(SELECT a.user_id FROM {SCHEMA}.assignments a JOIN t ON a.user_id = t.u
                                 WHERE a.experiment_id = $1 AND a.variant_id <> t.v)""",
                    experiment_id, [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                    [r[4] for r in rows], [r[5] for r in rows],
                )
            except Exception as exc:  # noqa: BLE001 - the caller has its answer; retry, then log what is lost
                if attempt == _WRITE_ATTEMPTS:
                    log.error("gave up recording %d assignment(s) of experiment %d: %s (those users are "
                              "assigned again by the hash on their next call)", len(rows), experiment_id, exc)
                    return
                await asyncio.sleep(0.05 * attempt)
                continue
            if diverged:  # a record made meanwhile by another path wins: forget what this process answered
                log.warning("experiment %d: %d user(s) already had another recorded variant than the one just "
                            "served (a concurrent writer); they get their recorded variant from now on",
                            experiment_id, len(diverged))
                self._announce(experiment_id)
            return

    # ------------------------------------------------------------ change notifications

    @property
    def listening(self) -> bool:
        """True while this store receives every committed experiment change (LISTEN on CHANGES_CHANNEL)."""
        return self._listener is not None and not self._listener.is_closed()

    def on_experiment_change(self, callback: Callable[[int | None], None]) -> None:
        """Call `callback(experiment_id)` for each committed change of an experiment, by any process;
        `callback(None)` when notifications stop (the listening connection is lost): anything may be stale."""
        self._change_callbacks.append(callback)

    def _announce(self, experiment_id: int | None) -> None:
        for callback in self._change_callbacks:
            callback(experiment_id)

    async def listen(self, dsn: str, *, quiet: bool = False) -> bool:
        """Open the connection that LISTENs for experiment changes; False (logged) when it cannot.
        When that connection is lost, it is opened again (with back-off) and every cache dropped then."""
        conn: asyncpg.Connection | None = None

        def changed(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            self._announce(int(payload) if payload.isdigit() else None)

        def lost(_conn: Any) -> None:
            if conn is not None and self._listener is conn:
                self._listener = None
                self._announce(None)
                if not self._closing:
                    log.warning("lost the LISTEN connection: get_variant checks every call in the database until "
                                "it is back")
                    self._relisten = asyncio.get_running_loop().create_task(self._listen_again(dsn))

        try:
            conn = await asyncpg.connect(dsn, server_settings={"application_name": "neonblue-postgres-listen"})
            await conn.add_listener(CHANGES_CHANNEL, changed)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if conn is not None:
                conn.terminate()
            if not quiet:
                log.warning("cannot LISTEN for experiment changes (%s): get_variant checks every call in the "
                            "database", exc)
            return False
        conn.add_termination_listener(lost)
        self._listener = conn
        return True

    async def _listen_again(self, dsn: str) -> None:
        delay = 0.2
        while not self._closing:
            await asyncio.sleep(delay)
            if await self.listen(dsn, quiet=True):
                self._announce(None)  # changes made while nobody listened: nothing cached before is trusted
                log.warning("listening for experiment changes again")
                return
            delay = min(delay * 2, 30.0)

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 1, max_size: int = 10, run_migrations: bool = True,
                   durable_assignments: bool = False) -> PostgresStore:
        pools: list[asyncpg.Pool] = []
        try:
            for synchronous_commit in ("on",) if durable_assignments else ("on", "off"):
                pools.append(await asyncpg.create_pool(
                    dsn, min_size=min_size, max_size=max_size, init=_init_connection,
                    server_settings={"application_name": "neonblue-postgres", "synchronous_commit": synchronous_commit},
                    # The assignment pool runs single statements that leave no session state (no SET, LISTEN,
                    # cursor or session lock), so a connection goes back without asyncpg's reset query: that
                    # query was a second round trip on every get_variant. (An open transaction is still
                    # rolled back by the pool itself.)
                    reset=_keep_session if synchronous_commit == "off" else None,
                ))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            for pool in pools:
                await pool.close()
            raise BackendUnavailable(f"DATABASE_URL: cannot connect to PostgreSQL at {redact_dsn(dsn)} ({exc})") from exc
        pool = pools[0]
        try:
            async with pool.acquire() as conn:
                if run_migrations:
                    await migrate(conn)
                usable = await conn.fetchval(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)"
                    " THEN pg_has_role(current_user, $1, 'MEMBER') ELSE false END",
                    READONLY_ROLE,
                )
        except BaseException:
            for p in pools:
                await p.close()
            raise
        if not usable:
            log.warning("role %s unavailable: postgres_query relies on the SQL guard and READ ONLY only", READONLY_ROLE)
        store = cls(pool, READONLY_ROLE if usable else None, pools[-1] if len(pools) > 1 else None)
        await store.listen(dsn)
        return store

    async def close(self) -> None:
        await self.settle()
        self._closing = True
        if self._relisten is not None:
            self._relisten.cancel()
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        if self.assignment_pool is not self.pool:
            await self.assignment_pool.close()
        await self.pool._pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    # ------------------------------------------------------------ experiments

    async def fetch_experiment(self, ref: str | int, conn: asyncpg.Connection | None = None) -> Experiment | None:
        clause, value = _ref_clause(ref)
        row = await (conn or self.pool).fetchrow(f"{_EXPERIMENT_SELECT} WHERE {clause}", value)
        return experiment_from_row(row) if row is not None else None

    async def lock_experiment(self, conn: asyncpg.Connection, ref: str | int) -> asyncpg.Record | None:
        """Lock the experiment row for the rest of the transaction; returns id, key, status."""
        clause, value = _ref_clause(ref)
        return await conn.fetchrow(f"SELECT e.id, e.key, e.status FROM {SCHEMA}.experiments e WHERE {clause} FOR UPDATE", value)

    async def insert_experiment(self, conn: asyncpg.Connection, fields: dict[str, Any]) -> int | None:
        """Insert an experiment row; None when the key is taken. Column names come from code, never input."""
        columns = list(fields)
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        try:
            return await conn.fetchval(
                f"INSERT INTO {SCHEMA}.experiments ({', '.join(columns)}) VALUES ({placeholders}) RETURNING id",
                *fields.values(),
            )
        except asyncpg.UniqueViolationError:
            return None

    async def update_experiment(self, conn: asyncpg.Connection, experiment_id: int, fields: dict[str, Any]) -> None:
        """Set columns (names come from code, never from input) and bump updated_at."""
        sets = "".join(f"{column} = ${i}, " for i, column in enumerate(fields, start=2))
        await conn.execute(
            f"UPDATE {SCHEMA}.experiments SET {sets}updated_at = now() WHERE id = $1", experiment_id, *fields.values()
        )

    async def set_status(self, conn: asyncpg.Connection, experiment_id: int, status: str,
                         winner: str | None = None) -> None:
        """Move to `status`, stamping the matching timestamp(s)."""
        await conn.execute(
            f"""UPDATE {SCHEMA}.experiments SET status = $2, updated_at = now(),
                winner = CASE WHEN $2 = 'concluded' THEN $3 ELSE winner END,
                started_at = CASE WHEN $2 = 'running' THEN now() ELSE started_at END,
                stopped_at = CASE WHEN $2 IN ('stopped', 'concluded') THEN COALESCE(stopped_at, now()) ELSE stopped_at END,
                concluded_at = CASE WHEN $2 = 'concluded' THEN now() ELSE concluded_at END,
                archived_at = CASE WHEN $2 = 'archived' THEN now() ELSE archived_at END
            WHERE id = $1""",
            experiment_id, status, winner,
        )

    async def replace_variants(self, conn: asyncpg.Connection, experiment_id: int, variants: Sequence[dict[str, Any]]) -> None:
        await conn.execute(f"DELETE FROM {SCHEMA}.variants WHERE experiment_id = $1", experiment_id)
        await conn.executemany(
            f"""INSERT INTO {SCHEMA}.variants (experiment_id, position, key, name, is_control, weight, config)
            VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            [(experiment_id, i, v["key"], v["name"], v["is_control"], v["weight"], v["config"]) for i, v in enumerate(variants)],
        )

    async def set_weights(self, conn: asyncpg.Connection, experiment_id: int, weights: dict[str, float]) -> None:
        await conn.execute(
            f"""UPDATE {SCHEMA}.variants v SET weight = w.weight, updated_at = now()
            FROM unnest($2::text[], $3::float8[]) AS w(key, weight)
            WHERE v.experiment_id = $1 AND v.key = w.key""",
            experiment_id, list(weights), list(weights.values()),
        )
        await conn.execute(f"UPDATE {SCHEMA}.experiments SET updated_at = now() WHERE id = $1", experiment_id)

    async def log_change(self, conn: asyncpg.Connection, experiment_id: int, change_type: str, actor: str,
                         changes: dict[str, Any], reason: str | None) -> None:
        await conn.execute(
            f"""INSERT INTO {SCHEMA}.experiment_changes (experiment_id, change_type, actor, changes, reason)
            VALUES ($1, $2, $3, $4, $5)""",
            experiment_id, change_type, actor, changes, reason,
        )

    async def change_log(self, experiment_id: int, limit: int) -> list[ChangeLogEntry]:
        rows = await self.pool.fetch(
            f"""SELECT id, change_type, actor, changes, reason, created_at FROM {SCHEMA}.experiment_changes
            WHERE experiment_id = $1 ORDER BY id DESC LIMIT $2""",
            experiment_id, limit,
        )
        return [ChangeLogEntry(**dict(r)) for r in rows]

    async def assignment_counts(self, experiment_id: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""SELECT v.key, count(a.user_id) FILTER (WHERE a.source <> 'forced') AS hashed,
                       count(a.user_id) FILTER (WHERE a.source = 'forced') AS forced
            FROM {SCHEMA}.variants v
            LEFT JOIN {SCHEMA}.known_assignments a ON a.experiment_id = v.experiment_id AND a.variant_id = v.id
            WHERE v.experiment_id = $1 GROUP BY v.key, v.position ORDER BY v.position""",
            experiment_id,
        )

    async def list_experiments(self, *, statuses: Sequence[str] | None, type_: str | None, owner: str | None,
                               tag: str | None, search: str | None, limit: int, offset: int) -> tuple[list[ExperimentListItem], int]:
        clauses: list[str] = []
        params: list[Any] = []

        def where(fragment: str, value: Any) -> None:
            params.append(value)
            clauses.append(fragment.replace("?", f"${len(params)}"))

        if statuses:
            where("e.status = ANY(?::text[])", list(statuses))
        else:
            clauses.append("e.status <> 'archived'")
        if type_:
            where("e.type = ?", type_)
        if owner:
            where("e.owner = ?", owner)
        if tag:
            where("? = ANY(e.tags)", tag)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where("(e.key ILIKE ? OR e.name ILIKE ? OR e.description ILIKE ? OR e.hypothesis ILIKE ?)", f"%{escaped}%")
        params += [limit, offset]
        sql = f"""
            SELECT e.id, e.key, e.name, e.type, e.status, e.primary_metric, e.winner, e.owner, e.tags,
                   e.created_at, e.started_at, e.stopped_at,
                   COALESCE((SELECT array_agg(v.key ORDER BY v.position) FROM {SCHEMA}.variants v
                             WHERE v.experiment_id = e.id), '{{}}') AS variant_keys,
                   count(*) OVER () AS total
            FROM {SCHEMA}.experiments e
            {"WHERE " + " AND ".join(clauses) if clauses else ""}
            ORDER BY e.created_at DESC, e.id DESC
            LIMIT ${len(params) - 1} OFFSET ${len(params)}"""
        rows = await self.pool.fetch(sql, *params)
        total = rows[0]["total"] if rows else await self._count_experiments(clauses, params[:-2])
        items = [
            ExperimentListItem(**{k: v for k, v in dict(r).items() if k != "total"} | {"tags": list(r["tags"]),
                               "variant_keys": list(r["variant_keys"])})
            for r in rows
        ]
        return items, total

    async def _count_experiments(self, clauses: list[str], params: list[Any]) -> int:
        sql = f"SELECT count(*) FROM {SCHEMA}.experiments e {'WHERE ' + ' AND '.join(clauses) if clauses else ''}"
        return await self.pool.fetchval(sql, *params)

    # ------------------------------------------------------------ assignment

    async def fetch_for_assignment(self, ref: str | int, user_id: str) -> asyncpg.Record | None:
        """The experiment with its variants and this user's recorded assignment, in one round trip."""
        clause, value = _ref_clause(ref)
        return await self.pool.fetchrow(
            f"""SELECT x.*, a.variant_id AS assigned_variant_id, a.source AS assigned_source, a.bucket AS assigned_bucket,
                   a.exposed_at AS assigned_exposed_at
            FROM ({_EXPERIMENT_SELECT} WHERE {clause}) x
            LEFT JOIN {SCHEMA}.assignments a ON a.experiment_id = x.id AND a.user_id = $2""",
            value, user_id,
        )

    async def assign_if_current(self, experiment_id: int, user_id: str, revision: int, variant_id: int | None,
                                bucket: float | None, attributes: dict[str, Any] | None,
                                exposed: bool = True) -> asyncpg.Record | None:
        """One round trip for get_variant with a cached definition.

        Reads the experiment's status and row version and the user's recorded
        assignment, and (when `variant_id` is given, the experiment is running and
        still at `revision`, and the user has no assignment) records the new one.
        With `exposed`, a new assignment, or a recorded one not exposed before, is
        stamped exposed and its exposure written to the outbox, in the same statement;
        a user exposed before costs no write. Returns status, revision, prior_variant,
        prior_bucket, prior_settled (exposed before, or forced: no exposure will ever be written),
        inserted, exposure_written; None when the experiment no longer exists.
        """
        return await self.assignment_pool.fetchrow(
            f"""WITH e AS (
                SELECT id, key, status, xmin::text::bigint AS revision FROM {SCHEMA}.experiments WHERE id = $1
            ), prior AS (
                SELECT variant_id, bucket, source, exposed_at FROM {SCHEMA}.assignments
                WHERE experiment_id = $1 AND user_id = $2
            ), ins AS (
                INSERT INTO {SCHEMA}.assignments (experiment_id, user_id, variant_id, source, bucket, attributes, exposed_at)
                SELECT $1, $2, $4, 'hash', $5, $6, CASE WHEN $7::boolean THEN now() END FROM e
                WHERE $4::bigint IS NOT NULL AND e.status = 'running' AND e.revision = $3
                  AND NOT EXISTS (SELECT 1 FROM prior)
                ON CONFLICT (experiment_id, user_id) DO NOTHING
                RETURNING user_id, variant_id, exposed_at
            ), shown AS (
                UPDATE {SCHEMA}.assignments a SET exposed_at = now()
                WHERE $7::boolean AND a.experiment_id = $1 AND a.user_id = $2
                  AND a.exposed_at IS NULL AND a.source <> 'forced'
                  AND EXISTS (SELECT 1 FROM prior WHERE prior.exposed_at IS NULL AND prior.source <> 'forced')
                  AND EXISTS (SELECT 1 FROM e WHERE e.status = 'running' AND e.revision = $3)
                RETURNING a.user_id, a.variant_id, a.exposed_at
            ), exposed AS (
                SELECT * FROM ins WHERE exposed_at IS NOT NULL UNION ALL SELECT * FROM shown
            ), outbox AS (
                {_exposure_outbox("exposed", "(SELECT key FROM e)")}
                RETURNING 1
            )
            SELECT e.status, e.revision, (SELECT variant_id FROM prior) AS prior_variant,
                   (SELECT bucket FROM prior) AS prior_bucket,
                   (SELECT exposed_at IS NOT NULL OR source = 'forced' FROM prior) AS prior_settled,
                   EXISTS (SELECT 1 FROM ins) AS inserted,
                   EXISTS (SELECT 1 FROM outbox) AS exposure_written
            FROM e""",
            experiment_id, user_id, revision, variant_id, bucket, attributes, exposed,
        )

    async def insert_assignment(self, experiment_id: int, user_id: str, variant_id: int, source: str,
                                bucket: float | None, attributes: dict[str, Any] | None, exposed: bool = True) -> bool:
        """Record the first assignment of a user (with `exposed`, also its exposure, in the outbox);
        False when one exists already or the experiment stopped meanwhile."""
        row = await self.assignment_pool.fetchval(
            f"""WITH e AS (
                SELECT key FROM {SCHEMA}.experiments WHERE id = $1 AND status = 'running'
            ), ins AS (
                INSERT INTO {SCHEMA}.assignments (experiment_id, user_id, variant_id, source, bucket, attributes, exposed_at)
                SELECT $1, $2, $3, $4, $5, $6, CASE WHEN $7::boolean THEN now() END FROM e
                ON CONFLICT (experiment_id, user_id) DO NOTHING
                RETURNING user_id, variant_id, exposed_at
            ), outbox AS (
                {_exposure_outbox("(SELECT * FROM ins WHERE exposed_at IS NOT NULL)", "(SELECT key FROM e)")}
            )
            SELECT 1 FROM ins""",
            experiment_id, user_id, variant_id, source, bucket, attributes, exposed,
        )
        return row is not None

    async def mark_exposed(self, experiment_id: int, user_ids: Sequence[str]) -> set[str]:
        """Users assigned earlier but not exposed until now (never QA-forced ones): stamp them exposed and
        write their exposures to the outbox, in one statement. Returns the user ids newly exposed."""
        rows = await self.assignment_pool.fetch(
            f"""WITH e AS (
                SELECT key FROM {SCHEMA}.experiments WHERE id = $1 AND status = 'running'
            ), shown AS (
                UPDATE {SCHEMA}.assignments a SET exposed_at = now()
                WHERE a.experiment_id = $1 AND a.user_id = ANY($2::text[]) AND a.exposed_at IS NULL
                  AND a.source <> 'forced' AND EXISTS (SELECT 1 FROM e)
                RETURNING a.user_id, a.variant_id, a.exposed_at
            ), outbox AS (
                {_exposure_outbox("shown", "(SELECT key FROM e)")}
            )
            SELECT user_id FROM shown""",
            experiment_id, list(user_ids),
        )
        return {r["user_id"] for r in rows}

    async def force_assignment(self, experiment_id: int, user_id: str, variant_id: int,
                               attributes: dict[str, Any] | None) -> bool:
        """Record (or overwrite) a QA-forced assignment; True when something changed."""
        row = await self.assignment_pool.fetchval(
            f"""INSERT INTO {SCHEMA}.assignments (experiment_id, user_id, variant_id, source, bucket, attributes)
            VALUES ($1, $2, $3, 'forced', NULL, $4)
            ON CONFLICT (experiment_id, user_id) DO UPDATE
                SET variant_id = EXCLUDED.variant_id, source = 'forced', bucket = NULL, assigned_at = now()
                WHERE assignments.variant_id <> EXCLUDED.variant_id OR assignments.source <> 'forced'
            RETURNING 1""",
            experiment_id, user_id, variant_id, attributes,
        )
        return row is not None

    async def recorded_assignments(self, experiment_id: int, user_ids: Sequence[str]) -> dict[str, tuple[int, str, bool]]:
        """user id -> (variant id, source, exposed) of the given users' recorded assignments."""
        rows = await self.pool.fetch(
            f"""SELECT user_id, variant_id, source, exposed_at IS NOT NULL AS exposed FROM {SCHEMA}.assignments
            WHERE experiment_id = $1 AND user_id = ANY($2::text[])""",
            experiment_id, list(user_ids),
        )
        return {r["user_id"]: (r["variant_id"], r["source"], r["exposed"]) for r in rows}

    async def insert_assignments(self, experiment_id: int, user_ids: Sequence[str], variant_ids: Sequence[int],
                                 buckets: Sequence[float | None], source: str = "hash", exposed: bool = True) -> set[str]:
        """Bulk first-assignment insert (running experiments only), with `exposed` their exposures in the
        outbox too (same statement); returns the user ids inserted."""
        rows = await self.assignment_pool.fetch(
            f"""WITH e AS (
                SELECT key FROM {SCHEMA}.experiments WHERE id = $1 AND status = 'running'
            ), ins AS (
                INSERT INTO {SCHEMA}.assignments (experiment_id, user_id, variant_id, source, bucket, exposed_at)
                SELECT $1, u, v, $5, b, CASE WHEN $6::boolean THEN now() END
                FROM unnest($2::text[], $3::bigint[], $4::float8[]) AS t(u, v, b)
                WHERE EXISTS (SELECT 1 FROM e)
                ON CONFLICT (experiment_id, user_id) DO NOTHING
                RETURNING user_id, variant_id, exposed_at
            ), outbox AS (
                {_exposure_outbox("(SELECT * FROM ins WHERE exposed_at IS NOT NULL)", "(SELECT key FROM e)")}
            )
            SELECT user_id FROM ins""",
            experiment_id, list(user_ids), list(variant_ids), list(buckets), source, exposed,
        )
        return {r["user_id"] for r in rows}

    async def experiments_by_key(self, experiment_keys: Sequence[str]) -> dict[str, asyncpg.Record]:
        """key -> the experiment row with its variants and `revision` (as get_variant reads it)."""
        rows = await self.pool.fetch(f"{_EXPERIMENT_SELECT} WHERE e.key = ANY($1::text[])", list(experiment_keys))
        return {r["key"]: r for r in rows}

    async def keep_streamed_exposures(
            self, batches: Mapping[int, tuple[int, Sequence[str], Sequence[int], Sequence[datetime]]]) -> set[int]:
        """Keep streamed exposures the hash agrees with, without assignment rows (migration 0007).

        `batches`: experiment id -> (the revision they were hashed at, user ids, variant ids, exposure
        times). In one transaction, each experiment still running, not hash_divergent and at that
        revision is locked FOR SHARE (a change waits for the commit, and its materialising trigger
        then sees these rows) and gets one streamed_exposures row. Returns the experiment ids kept;
        the caller records the others' exposures as assignment rows.
        """
        if not batches:
            return set()
        ids = sorted(batches)
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await conn.fetch(
                f"""SELECT e.id FROM {SCHEMA}.experiments e
                JOIN unnest($1::bigint[], $2::bigint[]) AS w(id, revision) ON w.id = e.id
                WHERE e.xmin::text::bigint = w.revision AND e.status = 'running' AND NOT e.hash_divergent
                ORDER BY e.id FOR SHARE OF e""",
                ids, [batches[i][0] for i in ids])
            kept = {r["id"] for r in locked}
            for i in sorted(kept):
                # The arrays travel as JSON (orjson encodes 100k ids in milliseconds; asyncpg's array
                # encoding costs about a microsecond per element on the event loop), built server-side.
                _, users, variants, times = batches[i]
                await conn.execute(
                    f"""INSERT INTO {SCHEMA}.streamed_exposures (experiment_id, user_ids, variant_ids, exposed_at)
                    SELECT $1, ARRAY(SELECT json_array_elements_text($2::json)),
                           ARRAY(SELECT json_array_elements_text($3::json)::bigint),
                           ARRAY(SELECT json_array_elements_text($4::json)::timestamptz)""",
                    i, list(users), list(variants), list(times))  # the json codec: orjson
        return kept

    async def insert_exposures(self, rows: Sequence[tuple[int, str, int, datetime | None]]) -> int:
        """Insert SDK-reported exposures, first one wins; returns how many were new.

        The rows are COPYed into a per-session temporary table, then inserted with ON CONFLICT DO
        NOTHING: binary COPY costs the client about half of encoding the same rows as unnest()
        arrays (measured with 100k stream exposures; the server's work is the same).
        """
        if not rows:
            return 0
        # An SDK's variant is its own choice: from now on get_variant reads every new user's record first
        # (migration 0006). A no-op once set, so the row changes (and is announced) once per experiment.
        await self.pool.execute(
            f"UPDATE {SCHEMA}.experiments SET hash_divergent = true WHERE id = ANY($1::bigint[]) AND NOT hash_divergent",
            sorted({row[0] for row in rows}))
        if len(rows) >= 2 * EXPOSURE_CHUNK_MIN:
            # Large batches in EXPOSURE_WRITERS concurrent transactions, split by user (a pair is in one
            # of them): the server's per-row work (unique check, three indexes, two foreign keys) then
            # runs on several backends while the client encodes the next chunk. Each chunk commits on its
            # own; the caller retries the whole batch on any failure, and a chunk already committed then
            # inserts nothing again (ON CONFLICT DO NOTHING).
            chunks: list[list[tuple[int, str, int, datetime | None]]] = [[] for _ in range(EXPOSURE_WRITERS)]
            for row in rows:
                chunks[hash(row[1]) % EXPOSURE_WRITERS].append(row)
            counts = await asyncio.gather(*(self._insert_exposure_chunk(chunk) for chunk in chunks if chunk))
            return sum(counts)
        return await self._insert_exposure_chunk(rows)

    async def _insert_exposure_chunk(self, rows: Sequence[tuple[int, str, int, datetime | None]]) -> int:
        # The durable pool: the stream processor commits Kafka offsets once this returns, so these
        # exposures must survive a database crash (one WAL flush per batch costs nothing here).
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS exposures_in (e bigint, u text, v bigint, t timestamptz) "
                "ON COMMIT DELETE ROWS")
            await conn.copy_records_to_table("exposures_in", records=rows)
            # Exposed already (these ARE exposure events): stamped, and never written to the outbox.
            status = await conn.execute(
                f"""INSERT INTO {SCHEMA}.assignments (experiment_id, user_id, variant_id, source, assigned_at, exposed_at)
                SELECT e, u, v, 'exposure', COALESCE(t, now()), COALESCE(t, now()) FROM exposures_in
                ON CONFLICT (experiment_id, user_id) DO NOTHING""")
        return int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows inserted>"

    # ------------------------------------------------------------ results

    async def insert_result(self, experiment_id: int, variant_id: int, user_id: str, metric: str, value: float,
                            event_id: str | None, metadata: dict[str, Any], recorded_at: datetime | None,
                            experiment_key: str, variant_key: str) -> asyncpg.Record | None:
        """Insert a result and its metric event's outbox row in one statement; None when `event_id` was
        recorded before (then nothing is written). The event's id is the caller's `event_id` when the event
        schema can carry it (1-128 characters), so the same fact sent over Kafka with that id counts once;
        else one derived from it, or from the result row."""
        return await self.pool.fetchrow(
            f"""WITH r AS (
                INSERT INTO {SCHEMA}.results
                    (experiment_id, variant_id, user_id, metric_name, metric_value, event_id, metadata, recorded_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()))
                ON CONFLICT (experiment_id, event_id) DO NOTHING
                RETURNING id, recorded_at
            ), outbox AS (
                INSERT INTO {_OUTBOX} (event_id, event_type, experiment_key, variant_key, user_id, metric, value, occurred_at)
                SELECT CASE WHEN length($6) BETWEEN 1 AND 128 THEN $6
                            ELSE {SCHEMA}.event_uuid('result:' || $9 || ':' ||
                                 COALESCE($6, r.id || ':' || extract(epoch FROM r.recorded_at))) END,
                       'metric', $9, $10, $3, $4, $5, r.recorded_at
                FROM r
            )
            SELECT id, recorded_at FROM r""",
            experiment_id, variant_id, user_id, metric, value, event_id, metadata, recorded_at, experiment_key,
            variant_key,
        )

    async def result_by_event(self, experiment_id: int, event_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"""SELECT r.id, r.user_id, r.metric_name, r.metric_value, r.recorded_at, v.key AS variant_key
            FROM {SCHEMA}.results r JOIN {SCHEMA}.variants v ON v.id = r.variant_id
            WHERE r.experiment_id = $1 AND r.event_id = $2""",
            experiment_id, event_id,
        )

    async def metric_aggregates(self, experiment_id: int, metrics: Sequence[str], aggregation: str) -> list[asyncpg.Record]:
        """Per (variant, metric): users, records, Σv, Σv², users with v > 0 — v being each user's value."""
        per_user = "sum(r.metric_value)" if aggregation == "sum" else "avg(r.metric_value)"
        return await self.pool.fetch(
            f"""WITH a AS (
                SELECT user_id, variant_id FROM {SCHEMA}.known_assignments WHERE experiment_id = $1 AND source <> 'forced'
            ), per_user AS (
                SELECT r.variant_id, r.metric_name, r.user_id, {per_user} AS v, count(*) AS records
                FROM {SCHEMA}.results r JOIN a ON a.user_id = r.user_id AND a.variant_id = r.variant_id
                WHERE r.experiment_id = $1 AND r.metric_name = ANY($2::text[])
                GROUP BY r.variant_id, r.metric_name, r.user_id
            )
            SELECT variant_id, metric_name, count(*) AS users, sum(records)::bigint AS records,
                   sum(v) AS s, sum(v * v) AS ss, count(*) FILTER (WHERE v > 0) AS positive
            FROM per_user GROUP BY variant_id, metric_name""",
            experiment_id, list(metrics),
        )

    async def assignment_totals(self, experiment_id: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"""SELECT variant_id, count(*) FILTER (WHERE source <> 'forced') AS users,
                       count(*) FILTER (WHERE source = 'forced') AS forced
            FROM {SCHEMA}.known_assignments WHERE experiment_id = $1 GROUP BY variant_id""",
            experiment_id,
        )

    # ------------------------------------------------------------ the event outbox (read by the relay)

    async def claim_outbox(self, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
        """Lease up to `limit` unsent rows, oldest first, that no live lease holds; in id order.

        SKIP LOCKED lets several relays claim disjoint batches; a lease (not a long transaction)
        marks a claim, so a relay that dies between producing and marking sent only delays the
        rows until the lease ends, when any relay sends them again (the same event ids).
        """
        rows = await self.pool.fetch(
            f"""UPDATE {_OUTBOX} o SET leased_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
            WHERE o.id IN (
                SELECT id FROM {_OUTBOX}
                WHERE sent_at IS NULL AND (leased_until IS NULL OR leased_until < now())
                ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
            RETURNING o.id, o.event_id, o.event_type, o.experiment_key, o.variant_key, o.user_id, o.metric, o.value,
                      o.occurred_at""",
            limit, float(lease_seconds),
        )
        return sorted(rows, key=lambda r: r["id"])

    async def mark_outbox_sent(self, ids: Sequence[int]) -> None:
        await self.pool.execute(
            f"UPDATE {_OUTBOX} SET sent_at = now(), leased_until = NULL, last_error = NULL WHERE id = ANY($1::bigint[])",
            list(ids),
        )

    async def release_outbox(self, ids: Sequence[int], error: str) -> None:
        """Give claimed rows back at once (the broker refused them): the next claim retries them."""
        await self.pool.execute(
            f"UPDATE {_OUTBOX} SET leased_until = NULL, last_error = $2 WHERE id = ANY($1::bigint[]) AND sent_at IS NULL",
            list(ids), error[:1000],
        )

    async def outbox_backlog(self) -> asyncpg.Record:
        return await outbox_backlog(self.pool)

    async def prune_outbox(self, older_than_seconds: float, limit: int = 10_000) -> int:
        """Delete up to `limit` rows sent more than `older_than_seconds` ago and older than every unsent row."""
        status = await self.pool.execute(
            f"""DELETE FROM {_OUTBOX} WHERE id IN (
                SELECT id FROM {_OUTBOX}
                WHERE id < COALESCE((SELECT min(id) FROM {_OUTBOX} WHERE sent_at IS NULL), 9223372036854775807)
                  AND sent_at < now() - make_interval(secs => $1)
                ORDER BY id LIMIT $2)""",
            float(older_than_seconds), limit,
        )
        return int(status.rsplit(" ", 1)[1])

    # ------------------------------------------------------------ decisions

    async def insert_decision(self, experiment_id: int | None, action: str, reasoning: str, inputs: dict[str, Any],
                              confidence: float | None, actor: str, applied: bool) -> Decision:
        row = await self.pool.fetchrow(
            f"""WITH d AS (
                INSERT INTO {SCHEMA}.decisions (experiment_id, action, reasoning, inputs, confidence, actor, applied)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *)
            SELECT d.*, e.key AS experiment_key FROM d LEFT JOIN {SCHEMA}.experiments e ON e.id = d.experiment_id""",
            experiment_id, action, reasoning, inputs, confidence, actor, applied,
        )
        return _decision(row)

    async def list_decisions(self, *, experiment_id: int | None, action: str | None, actor: str | None,
                             applied: bool | None, limit: int, offset: int) -> tuple[list[Decision], int]:
        clauses: list[str] = []
        params: list[Any] = []
        for fragment, value in (("d.experiment_id = ?", experiment_id), ("d.action = ?", action),
                                ("d.actor = ?", actor), ("d.applied = ?", applied)):
            if value is not None:
                params.append(value)
                clauses.append(fragment.replace("?", f"${len(params)}"))
        where = "WHERE " + " AND ".join(clauses) if clauses else ""
        total = await self.pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.decisions d {where}", *params)
        rows = await self.pool.fetch(
            f"""SELECT d.*, e.key AS experiment_key FROM {SCHEMA}.decisions d
            LEFT JOIN {SCHEMA}.experiments e ON e.id = d.experiment_id {where}
            ORDER BY d.created_at DESC, d.id DESC LIMIT ${len(params) + 1} OFFSET ${len(params) + 2}""",
            *params, limit, offset,
        )
        return [_decision(r) for r in rows], total

    # ------------------------------------------------------------ read-only SQL

    async def run_read_only(self, query: GuardedQuery, timeout_ms: int, max_rows: int, max_bytes: int) -> dict[str, Any]:
        """Run a guarded statement READ ONLY, as the read-only role when available, with limits."""
        started = time.perf_counter()
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction(readonly=True):
                    await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
                    await conn.execute(f"SET LOCAL search_path = {SCHEMA}, public")
                    if self.readonly_role:
                        await conn.execute(f"SET LOCAL ROLE {self.readonly_role}")
                    statement = await conn.prepare(query.sql)
                    columns = [QueryColumn(name=a.name, type=a.type.name) for a in statement.get_attributes()]
                    cursor = await statement.cursor()
                    fetched = await cursor.fetch(max_rows + 1)
            except asyncpg.QueryCanceledError:
                raise QueryRefused(f"query cancelled: it ran longer than the {timeout_ms} ms statement timeout") from None
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError) as exc:
                raise QueryRefused(f"PostgreSQL refused the query: {exc} (postgres_query can only read)") from None
            except asyncpg.PostgresError as exc:
                raise InvalidInput(f"PostgreSQL rejected the query: {exc}") from None
        truncated_reason = None
        if len(fetched) > max_rows:
            fetched = fetched[:max_rows]
            truncated_reason = f"row limit: only the first {max_rows} rows are returned"
        rows: list[list[Any]] = []
        size = 0
        for record in fetched:
            row = [jsonable(v) for v in record.values()]
            size += len(orjson.dumps(row, default=str))
            if size > max_bytes:
                truncated_reason = f"size limit: result exceeded {max_bytes} bytes after {len(rows)} rows"
                break
            rows.append(row)
        return {
            "statement": query.kind, "columns": columns, "rows": rows, "row_count": len(rows),
            "truncated": truncated_reason is not None, "truncated_reason": truncated_reason,
            "read_only_role": self.readonly_role, "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
        }

    async def describe_tables(self) -> list[TableInfo]:
        rows = await self.pool.fetch(
            f"""SELECT c.relname AS table_name, obj_description(c.oid, 'pg_class') AS table_comment,
                       GREATEST(c.reltuples, -1)::bigint AS estimate,
                       a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS column_type,
                       NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS column_default,
                       col_description(c.oid, a.attnum) AS column_comment
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = '{SCHEMA}'
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
            WHERE c.relkind IN ('r', 'v', 'm', 'p')
            ORDER BY c.relname, a.attnum"""
        )
        tables: dict[str, TableInfo] = {}
        for r in rows:
            table = tables.get(r["table_name"])
            if table is None:
                estimate = r["estimate"]
                table = tables[r["table_name"]] = TableInfo(
                    name=r["table_name"], description=r["table_comment"], columns=[],
                    estimated_rows=estimate if estimate >= 0 else None,
                )
            table.columns.append(ColumnInfo(name=r["column_name"], type=r["column_type"], nullable=r["nullable"],
                                            default=r["column_default"], description=r["column_comment"]))
        return list(tables.values())


def _decision(row: asyncpg.Record) -> Decision:
    return Decision(
        id=row["id"], experiment_key=row["experiment_key"], action=row["action"], reasoning=row["reasoning"],
        inputs=row["inputs"], confidence=row["confidence"], actor=row["actor"], applied=row["applied"],
        created_at=row["created_at"],
    )
