"""clickhouse_query on real chDB: read-only SQL runs, every escape attempt is refused.

chDB is the ClickHouse engine inside this process with its filesystem access, so
the corpus below is run for real: each statement must be refused, nothing may be
written, and the content of /etc/passwd must never come back.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mcp_servers.clickhouse import QueryLimits, ddl, open_service
from mcp_servers.clickhouse.sql_guard import check_ast, check_text, tokenize
from mcp_servers.clickhouse.store import StoreError
from schemas.errors import InvalidInput, QueryRefused
from schemas.events import Event
from schemas.settings import Settings

OUTFILE = Path("/tmp") / f"neonblue_escape_{uuid.uuid4().hex[:8]}.txt"
OTHER_DB = f"t_other_{uuid.uuid4().hex[:8]}"

ESCAPES = [
    # files
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM FiLe('/etc/passwd', 'LineAsString')",
    "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    "DESCRIBE file('/etc/passwd', 'LineAsString')",
    "DESCRIBE TABLE file('/etc/passwd', 'LineAsString')",
    "EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "WITH x AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM x",
    "SELECT * FROM view(SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "SELECT * FROM numbers(1) WHERE toString(number) IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "SELECT * FROM sqlite('/etc/passwd', 't')",
    "SELECT * FROM fileCluster('default', '/etc/passwd', 'LineAsString')",
    f"SELECT 1 INTO OUTFILE '{OUTFILE}'",
    f"SELECT 1 INTO OUTFILE '{OUTFILE}' FORMAT CSV",
    # network, other servers and databases
    "SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'a String')",
    "SELECT * FROM s3('https://bucket.s3.amazonaws.com/x.csv', 'CSV', 'a String')",
    "SELECT * FROM s3Cluster('default', 'https://b.s3.amazonaws.com/x.csv')",
    "SELECT * FROM hdfs('hdfs://h:9000/x', 'CSV', 'a String')",
    "SELECT * FROM azureBlobStorage('DefaultEndpointsProtocol=https', 'c', 'b')",
    "SELECT * FROM iceberg('https://b.s3.amazonaws.com/t')",
    "SELECT * FROM deltaLake('https://b.s3.amazonaws.com/t')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1', system.one)",
    "SELECT * FROM cluster('default', system.one)",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('127.0.0.1:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM mongodb('127.0.0.1:27017', 'db', 'c', 'u', 'p', 'x String')",
    "SELECT * FROM jdbc('jdbc:mysql://h/db', 't')",
    "SELECT * FROM odbc('DSN=x', 't')",
    f"SELECT * FROM {OTHER_DB}.events",
    f"SELECT count() FROM events WHERE event_id IN {OTHER_DB}.events",
    f"SHOW TABLES FROM {OTHER_DB}",
    f"SELECT * FROM merge('{OTHER_DB}', '.*')",
    "SELECT * FROM system.users",
    "SELECT * FROM information_schema.tables",
    "SELECT dictGet('d', 'x', toUInt64(1))",
    # programs and this process
    "SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 'l String')",
    "SELECT * FROM executablePool('x', 'TSV', 'l String')",
    "SELECT * FROM python(nb_batch)",
    "SELECT * FROM Python(nb_batch)",
    "SELECT * FROM input('a String')",
    # writes, DDL, session changes
    "INSERT INTO events (event_id, event_type, user_id) VALUES ('x', 'click', 'u')",
    "DROP TABLE events",
    "TRUNCATE TABLE events",
    "ALTER TABLE events DELETE WHERE 1",
    "OPTIMIZE TABLE events FINAL",
    "CREATE TABLE escape ENGINE = File(CSV, '/tmp/escape.csv') AS SELECT 1 AS x",
    "RENAME TABLE events TO gone",
    "SET readonly = 0",
    "USE system",
    "SYSTEM SHUTDOWN",
    "KILL QUERY WHERE 1",
    "GRANT ALL ON *.* TO default",
    # limits and multi-statements
    "SELECT 1 SETTINGS readonly = 0",
    "SELECT count() FROM events SETTINGS max_execution_time = 100000, max_result_rows = 0",
    "SELECT * FROM (SELECT 1 SETTINGS readonly = 0)",
    "SELECT 1; DROP TABLE events",
    "SELECT 1; SELECT 2",
    "SELECT 1 /* ; */ ; DROP TABLE events",
    "SELECT 1 -- comment\n; DROP TABLE events",
    "SELECT $$ x $$; DROP TABLE events",
    "SELECT 1 FORMAT JSON",
    "SELECT sleep(3)",
    "SELECT 1 /* unterminated",
    "SELECT 'unterminated",
]


@pytest.fixture(scope="module")
async def ch(chdb_path):
    database = f"t_guard_{uuid.uuid4().hex[:8]}"
    async with open_service(Settings(), chdb_path=chdb_path, database=OTHER_DB, clickhouse_url="") as other, \
            open_service(Settings(), chdb_path=chdb_path, database=database, clickhouse_url="") as service:
        event = Event(event_id="e1", event_type="exposure", timestamp="2025-01-01T00:00:00Z", user_id="u1",
                      experiment_id="g", variant="a")
        await other.ingest_events([event], "secret")
        await service.ingest_events([event], "mine")
        yield service


def test_the_corpus_is_large_enough():
    assert len(ESCAPES) >= 20


@pytest.mark.parametrize("sql", ESCAPES)
async def test_escape_attempts_are_refused(ch, sql):
    with pytest.raises(QueryRefused) as refused:
        await ch.run_query(sql)
    assert "root:" not in str(refused.value)


def files_written() -> list[Path]:
    return [p for p in (OUTFILE, Path("/tmp/escape.csv")) if p.exists()]


async def test_nothing_escaped(ch):
    assert files_written() == []
    result = await ch.run_query("SELECT count() AS n FROM events")
    assert result.rows == [[1]]  # still there, unchanged
    tables = {t.name for t in (await ch.list_tables()).tables}
    assert tables == set(ddl.TABLES)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT count() AS n FROM events FINAL", [[1]]),
        ("  select event_id, variant from events where experiment_id = 'g' ; ", [["e1", "a"]]),
        ("WITH 2 AS k SELECT k * 21 AS answer", [[42]]),
        ("(SELECT 1 AS x) UNION ALL (SELECT 1 AS x)", [[1], [1]]),
        ("SELECT number FROM numbers(3) ORDER BY number", [[0], [1], [2]]),
        ("SELECT name FROM system.tables WHERE database = currentDatabase() AND name = 'events'", [["events"]]),
        ("SELECT '/etc/passwd' AS just_a_string, 'file(' AS also", [["/etc/passwd", "file("]]),
        ("SELECT encodeURLComponent('a b') AS u", [["a%20b"]]),
    ],
)
async def test_read_only_statements_run(ch, sql, expected):
    assert (await ch.run_query(sql)).rows == expected


async def test_a_semicolon_is_allowed_only_at_the_end(ch):
    """Checked on the raw text, so no disagreement about quoting can hide a second statement."""
    with pytest.raises(QueryRefused, match="char\\(59\\)"):
        await ch.run_query("SELECT 'a;b' AS s")
    assert (await ch.run_query("SELECT concat('a', char(59), 'b') AS s")).rows == [["a;b"]]


async def test_show_describe_and_explain_work(ch):
    assert ["events"] in (await ch.run_query("SHOW TABLES")).rows
    columns = [row[0] for row in (await ch.run_query("DESCRIBE TABLE events")).rows]
    assert columns[:3] == ["event_id", "event_type", "experiment_id"]
    assert (await ch.run_query("EXPLAIN SELECT count() FROM events")).row_count > 0


async def test_results_are_capped_and_marked_truncated(ch):
    result = await ch.run_query("SELECT number FROM numbers(100000)", max_rows=7)
    assert result.row_count == 7 and result.truncated
    assert result.columns[0].name == "number"
    full = await ch.run_query("SELECT number FROM numbers(5)", max_rows=7)
    assert full.row_count == 5 and not full.truncated


async def test_syntax_errors_are_invalid_input_not_refusals(ch):
    with pytest.raises(InvalidInput, match="ClickHouse rejected the query"):
        await ch.run_query("SELECT FROM WHERE")
    with pytest.raises(InvalidInput):
        await ch.run_query("SELECT no_such_column FROM events")


async def test_the_engine_itself_refuses_writes_in_the_sandbox(ch):
    """Below the guard: the sandbox session runs with readonly=1 (verified, not assumed)."""
    for sql in ("INSERT INTO events (event_id, event_type, user_id) VALUES ('x', 'click', 'u')",
                "CREATE TABLE t (x Int8) ENGINE = Memory", "SELECT * FROM file('/etc/passwd', 'LineAsString')",
                "SET max_result_rows = 0", "SELECT 1 SETTINGS readonly = 0"):
        with pytest.raises(StoreError) as failed:
            await ch.store.sandbox_query(sql)
        assert failed.value.code == 164  # READONLY
    assert (await ch.run_query("SELECT count() AS n FROM events")).rows == [[1]]
    # ...while the writer session of the same path still writes.
    event = Event(event_id="e2", event_type="click", timestamp="2025-01-01T00:00:00Z", user_id="u2")
    await ch.ingest_events([event], "after-sandbox")
    assert (await ch.run_query("SELECT count() AS n FROM events")).rows == [[2]]


async def test_execution_time_is_limited(chdb_path):
    database = f"t_slow_{uuid.uuid4().hex[:8]}"
    limits = QueryLimits(max_execution_seconds=1, max_result_rows=100)
    async with open_service(Settings(), chdb_path=chdb_path, database=database, clickhouse_url="",
                            limits=limits) as slow:
        with pytest.raises(QueryRefused, match="1 s execution-time limit"):
            await slow.run_query("SELECT count() FROM numbers(100000000000)")


def test_the_lexer_knows_clickhouse_quoting():
    tokens = tokenize("SELECT 'it''s \\' -- not a comment', \"col\"\"x\", `t`.`c` /* a /* nested */ still */ # x\n, 1")
    assert [(t.kind, t.text) for t in tokens] == [
        ("word", "SELECT"), ("string", "it's ' -- not a comment"), ("op", ","), ("qident", 'col"x'), ("op", ","),
        ("qident", "t"), ("op", "."), ("qident", "c"), ("op", ","), ("number", "1"),
    ]


def test_check_text_and_check_ast_without_an_engine():
    assert check_text("SELECT 1;", own_database="db") == "SELECT 1"
    with pytest.raises(QueryRefused, match="not this store's database"):
        check_text("SELECT * FROM other.t", own_database="db", other_databases=["other", "db"])
    check_text("SELECT * FROM db.t", own_database="db", other_databases=["other", "db"])
    ast = ["SelectWithUnionQuery (children 1)", " ExpressionList (children 1)", "  SelectQuery (children 2)",
           "   TablesInSelectQuery (children 1)", "    TablesInSelectQueryElement (children 1)",
           "     TableExpression (children 1)", "      Function generateRandom (children 1)"]
    with pytest.raises(QueryRefused, match="table function generateRandom"):
        check_ast(ast, own_database="db")
