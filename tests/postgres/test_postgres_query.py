"""postgres_query is read-only and cannot be escaped: the parser guard refuses a corpus of
escape attempts, and the layers behind it (READ ONLY transaction, SELECT-only role,
statement timeout, row and size caps) hold on their own against a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest
from mcp import Client

from mcp_servers.postgres import build_server, open_service
from mcp_servers.postgres.sql_guard import GuardedQuery, check_read_only
from schemas.errors import InvalidInput, QueryRefused

ESCAPE_ATTEMPTS = [
    # plain writes and DDL
    "DELETE FROM experiments",
    "UPDATE experiments SET status = 'running'",
    "INSERT INTO decisions (action, reasoning, actor) VALUES ('x', 'y', 'z')",
    "MERGE INTO variants v USING variants w ON v.id = w.id WHEN MATCHED THEN DELETE",
    "DROP TABLE experiments",
    "TRUNCATE results",
    "ALTER TABLE experiments ADD COLUMN pwned int",
    "CREATE TABLE pwned (id int)",
    "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM experiments RETURNING 1'",
    "GRANT ALL ON experiments TO PUBLIC",
    "ALTER ROLE neonblue_readonly SUPERUSER",
    "CREATE EXTENSION IF NOT EXISTS dblink",
    # multi-statement payloads and transaction control
    "SELECT 1; DROP TABLE experiments",
    "COMMIT; DROP TABLE experiments",
    "ROLLBACK; DELETE FROM experiments",
    "BEGIN; DELETE FROM experiments; COMMIT",
    "select 1 /* ; */ ; delete from experiments",
    "SELECT 1\n;\nUPDATE experiments SET name = 'x'",
    "SELECT 1 \\; DELETE FROM experiments",
    # data-modifying CTEs, SELECT INTO, row locks
    "WITH gone AS (DELETE FROM experiments RETURNING *) SELECT count(*) FROM gone",
    "WITH x AS (UPDATE variants SET weight = 1 RETURNING 1) SELECT * FROM x",
    "WITH x AS (INSERT INTO decisions (action, reasoning, actor) VALUES ('a', 'b', 'c') RETURNING id) SELECT id FROM x",
    "SELECT * FROM (WITH d AS (DELETE FROM results RETURNING 1) SELECT * FROM d) s",
    "SELECT * INTO pwned FROM experiments",
    "SELECT * FROM experiments FOR UPDATE",
    "SELECT * FROM experiments FOR SHARE NOWAIT",
    # EXPLAIN ANALYZE executes its statement
    "EXPLAIN ANALYZE DELETE FROM experiments",
    "EXPLAIN (ANALYZE) WITH d AS (DELETE FROM results RETURNING 1) SELECT * FROM d",
    # COPY, files, programs
    "COPY experiments TO '/tmp/neonblue-leak.csv'",
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT (SELECT pg_catalog.pg_read_binary_file('/etc/passwd'))",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '/tmp/x')",
    "SELECT loread(lo_open(1, 262144), 100)",
    # roles and session
    "SET ROLE postgres",
    "RESET ROLE",
    "SET SESSION AUTHORIZATION postgres",
    "SELECT set_config('role', 'postgres', true)",
    "SELECT pg_catalog.set_config('statement_timeout', '0', false)",
    # side-effecting and server-control functions
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "SELECT * FROM experiments WHERE id IN (SELECT pg_terminate_backend(pid) FROM pg_stat_activity)",
    "SELECT pg_cancel_backend(1)",
    "SELECT pg_reload_conf()",
    "SELECT pg_sleep(60)",
    "SELECT * FROM ROWS FROM (pg_sleep(5))",
    'SELECT U&"\\0070g_sleep"(5)',
    "SELECT pg_advisory_lock(1)",
    "SELECT nextval('neonblue.experiments_id_seq')",
    "SELECT * FROM dblink('dbname=postgres', 'DROP TABLE x') AS t(a text)",
    "SELECT dblink_exec('dbname=postgres', 'DROP TABLE x')",
    # SQL smuggled as text into functions that execute it
    "SELECT query_to_xml('DELETE FROM experiments RETURNING 1', true, true, '')",
    "SELECT * FROM ts_stat('DELETE FROM results RETURNING 1')",
    # other statement types
    "DO $$ BEGIN DELETE FROM experiments; END $$",
    "CALL some_procedure()",
    "PREPARE p AS DELETE FROM experiments",
    "EXECUTE p",
    "DECLARE c CURSOR FOR SELECT 1",
    "LOCK TABLE experiments IN ACCESS EXCLUSIVE MODE",
    "VACUUM experiments",
    "LISTEN channel",
    "NOTIFY channel, 'x'",
    "",
]

ALLOWED = [
    "SELECT key, status FROM experiments ORDER BY created_at DESC",
    "select v.key, count(*) from assignments a join variants v on v.id = a.variant_id group by 1;",
    "WITH counts AS (SELECT variant_id, count(*) AS n FROM assignments GROUP BY 1) SELECT * FROM counts",
    "SELECT metric_name, avg(metric_value) OVER (PARTITION BY variant_id) FROM results",
    "EXPLAIN SELECT * FROM experiments WHERE key = 'x'",
    "SHOW statement_timeout",
    "VALUES (1, 'a'), (2, 'b')",
    "SELECT pg_typeof(coverage), pg_size_pretty(1024::bigint) FROM experiments",
    "SELECT 'DELETE FROM experiments; DROP TABLE x' AS harmless_text",
]


def test_the_escape_corpus_is_large_enough():
    assert len(ESCAPE_ATTEMPTS) >= 30


@pytest.mark.parametrize("sql", ESCAPE_ATTEMPTS)
def test_the_guard_refuses_every_escape_attempt(sql):
    with pytest.raises(QueryRefused):
        check_read_only(sql)


@pytest.mark.parametrize("sql", ALLOWED)
def test_the_guard_lets_ordinary_reads_through(sql):
    assert check_read_only(sql).kind in ("select", "explain", "show")


def test_refusals_say_why():
    with pytest.raises(QueryRefused, match="found 2 statements"):
        check_read_only("SELECT 1; DROP TABLE experiments")
    with pytest.raises(QueryRefused, match="DELETE is not allowed"):
        check_read_only("WITH g AS (DELETE FROM experiments RETURNING 1) SELECT * FROM g")
    with pytest.raises(QueryRefused, match=r"function pg_terminate_backend\(\) is not allowed"):
        check_read_only("SELECT pg_terminate_backend(1)")
    with pytest.raises(QueryRefused, match="could not parse"):
        check_read_only("SELEKT 1")


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn, max_query_rows=1000) as svc:
        await svc.create_experiment({
            "key": "guarded", "name": "Guarded", "type": "feature", "primary_metric": "conversion",
            "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}],
        })
        await svc.start_experiment("guarded")
        await svc.get_variant("guarded", "alice")
        yield svc


async def _state(dsn: str) -> tuple:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            tuple(await conn.fetchrow("SELECT key, name, status FROM neonblue.experiments")),
            await conn.fetchval("SELECT count(*) FROM neonblue.assignments"),
            await conn.fetchval("SELECT sum(weight) FROM neonblue.variants"),
            await conn.fetchval("SELECT count(*) FROM neonblue.decisions"),
            await conn.fetchval("SELECT count(*) FROM pg_class WHERE relname = 'pwned'"),
            await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = 'neonblue_readonly'"),
        )
    finally:
        await conn.close()


async def test_every_escape_attempt_is_refused_through_the_tool_and_nothing_changes(service, pg_dsn):
    before = await _state(pg_dsn)
    async with Client(build_server(service)) as client:
        for sql in ESCAPE_ATTEMPTS:
            if not sql:
                continue  # the tool schema itself rejects an empty string
            result = await client.call_tool("postgres_query", {"sql": sql})
            assert result.is_error, sql
            text = result.content[0].text
            assert "not allowed" in text or "statements" in text or "could not parse" in text, (sql, text)
    assert await _state(pg_dsn) == before


async def test_reads_return_typed_columns_and_rows(service):
    result = await service.postgres_query(
        "SELECT e.key, v.key AS variant, v.weight, v.config, e.created_at FROM experiments e "
        "JOIN variants v ON v.experiment_id = e.id ORDER BY v.position"
    )
    assert [c.name for c in result.columns] == ["key", "variant", "weight", "config", "created_at"]
    assert [c.type for c in result.columns][:3] == ["text", "text", "float8"]
    assert [r[:3] for r in result.rows] == [["guarded", "control", 0.5], ["guarded", "treatment", 0.5]]
    assert isinstance(result.rows[0][4], str)  # timestamps come back as ISO strings
    assert result.statement == "select" and not result.truncated


async def test_explain_and_show_run(service):
    explain = await service.postgres_query("EXPLAIN SELECT * FROM experiments")
    assert explain.statement == "explain" and "Scan" in explain.rows[0][0]
    show = await service.postgres_query("SHOW statement_timeout")
    assert show.rows == [["5s"]]  # the SET LOCAL timeout is in force


async def test_queries_run_as_the_select_only_role(service):
    result = await service.postgres_query("SELECT current_user, current_setting('transaction_read_only')")
    assert result.rows == [["neonblue_readonly", "on"]]
    assert result.read_only_role == "neonblue_readonly"


async def test_the_read_only_role_cannot_read_outside_the_registry(service):
    with pytest.raises(QueryRefused, match="permission denied"):
        await service.postgres_query("SELECT rolname, rolpassword FROM pg_authid")


async def test_layers_behind_the_guard_hold_on_their_own(service, pg_dsn):
    """Even a statement that slipped past the parser guard cannot write."""
    before = await _state(pg_dsn)
    store = service.store
    for sql in ("DELETE FROM neonblue.assignments",
                "INSERT INTO neonblue.decisions (action, reasoning, actor) VALUES ('a', 'b', 'c')",
                "CREATE TABLE pwned (id int)"):
        with pytest.raises(QueryRefused, match="read-only|permission denied"):
            await store.run_read_only(GuardedQuery(sql, "select"), 5000, 10, 10_000)
    with pytest.raises(InvalidInput, match="multiple commands"):
        await store.run_read_only(GuardedQuery("SELECT 1; DELETE FROM neonblue.assignments", "select"), 5000, 10, 10_000)
    assert await _state(pg_dsn) == before


async def test_row_limit_truncates_and_says_so(service):
    result = await service.postgres_query("SELECT g FROM generate_series(1, 5000) AS g", max_rows=100)
    assert result.row_count == 100 and result.rows[-1] == [100]
    assert result.truncated and "row limit" in result.truncated_reason
    with pytest.raises(InvalidInput, match="max_rows"):
        await service.postgres_query("SELECT 1", max_rows=5000)


async def test_result_size_is_capped(pg_dsn):
    async with open_service(dsn=pg_dsn, max_result_bytes=2_000) as svc:
        result = await svc.postgres_query("SELECT repeat('x', 100) FROM generate_series(1, 500)")
    assert result.truncated and "size limit" in result.truncated_reason
    assert 0 < result.row_count < 20


async def test_long_queries_hit_the_statement_timeout(pg_dsn):
    async with open_service(dsn=pg_dsn, query_timeout_ms=150) as svc:
        with pytest.raises(QueryRefused, match="150 ms statement timeout"):
            await svc.postgres_query("SELECT count(*) FROM generate_series(1, 200000000)")
        # the pooled connection is clean afterwards
        assert (await svc.postgres_query("SELECT 1")).rows == [[1]]


async def test_bad_sql_reports_the_postgres_error(service):
    with pytest.raises(InvalidInput, match='column "nope" does not exist'):
        await service.postgres_query("SELECT nope FROM experiments")


async def test_describe_schema_lists_the_registry_tables(service):
    schema = await service.describe_schema()
    tables = {t.name: t for t in schema.tables}
    assert {"experiments", "variants", "assignments", "results", "decisions", "experiment_changes",
            "schema_migrations"} <= set(tables)
    columns = {c.name: c for c in tables["variants"].columns}
    assert columns["config"].type == "jsonb" and not columns["weight"].nullable
    assert "traffic share" in tables["variants"].description
