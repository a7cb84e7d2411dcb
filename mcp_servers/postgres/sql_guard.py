"""The parser guard in front of `postgres_query`: one read-only statement or a refusal.

Defence in depth, outermost first:
1. this guard parses the text with PostgreSQL's own parser (pglast) and allows
   exactly one SELECT, EXPLAIN <select> or SHOW statement; it then walks the
   whole tree and refuses any nested write (data-modifying CTEs), SELECT INTO,
   row-locking clauses and calls of functions with side effects or file,
   network, lock, sequence or session-setting access;
2. the store runs what passes in a `READ ONLY` transaction with a statement
   timeout, as the SELECT-only role `neonblue_readonly` where available, and
   through the extended protocol (which cannot carry a second statement).

The guard never rewrites the query: it answers "run exactly this" or raises
QueryRefused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pglast
from pglast import ast
from pglast.visitors import Visitor

from schemas.errors import QueryRefused

MAX_SQL_CHARS = 20_000

# Functions refused wherever they appear (matched on the unqualified, lower-cased name).
DENIED_FUNCTIONS = frozenset(
    {
        # session and role manipulation
        "set_config",
        # sequences (write even in SELECT)
        "nextval", "setval",
        # large objects outside the lo_ prefix
        "loread", "lowrite",
        # run SQL given as text, bypassing this guard
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
        "cursor_to_xml", "cursor_to_xmlschema",
        "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
        "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
        "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
        "ts_stat", "ts_rewrite", "crosstab", "crosstab2", "crosstab3", "crosstab4", "connectby",
        # index maintenance that writes
        "brin_summarize_new_values", "brin_summarize_range", "brin_desummarize_range", "gin_clean_pending_list",
        # transaction ids (assign one)
        "txid_current",
    }
)
# Whole families: server files, signals, backups, replication, advisory locks,
# large objects, dblink, ... (pg_*), large objects (lo_*), remote SQL (dblink*).
DENIED_PREFIXES = ("pg_", "lo_", "dblink", "binary_upgrade", "_pg")
# Harmless pg_* helpers an analyst reasonably uses.
ALLOWED_PG_FUNCTIONS = frozenset(
    {
        "pg_typeof", "pg_size_pretty", "pg_column_size", "pg_relation_size", "pg_table_size",
        "pg_total_relation_size", "pg_indexes_size", "pg_get_viewdef", "pg_get_constraintdef",
        "pg_get_indexdef", "pg_get_expr", "pg_get_userbyid", "pg_postmaster_start_time",
        "pg_is_in_recovery", "pg_backend_pid", "pg_encoding_to_char", "pg_get_function_result",
        "pg_get_function_arguments",
    }
)

StatementKind = Literal["select", "explain", "show"]


@dataclass(frozen=True)
class GuardedQuery:
    sql: str
    kind: StatementKind


def function_is_denied(name: str) -> bool:
    name = name.lower()
    if name in DENIED_FUNCTIONS:
        return True
    if name in ALLOWED_PG_FUNCTIONS:
        return False
    return name.startswith(DENIED_PREFIXES)


class _TreeCheck(Visitor):
    """Collects the first reason to refuse, walking every node of the statement."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None

    def refuse(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def visit(self, ancestors, node):  # noqa: ANN001 - pglast's visitor signature
        if isinstance(node, ast.SelectStmt):
            if node.intoClause is not None:
                self.refuse("SELECT INTO is not allowed: it creates a table")
            if node.lockingClause:
                self.refuse("row-locking clauses (FOR UPDATE / FOR SHARE) are not allowed")
        elif isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval if node.funcname else ""
            if function_is_denied(name):
                self.refuse(f"function {name}() is not allowed (side effects or server access)")
        elif isinstance(node, ast.Node) and type(node).__name__.endswith("Stmt") and not isinstance(
            node, ast.SelectStmt | ast.RawStmt | ast.ExplainStmt | ast.VariableShowStmt
        ):
            self.refuse(f"{_describe(node)} is not allowed inside a read-only query")


def _describe(node: ast.Node) -> str:
    names = {
        "InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "MergeStmt": "MERGE",
        "CopyStmt": "COPY", "VariableSetStmt": "SET", "TransactionStmt": "transaction control",
        "CreateStmt": "CREATE TABLE", "CreateTableAsStmt": "CREATE TABLE AS", "DropStmt": "DROP",
        "TruncateStmt": "TRUNCATE", "AlterTableStmt": "ALTER TABLE", "GrantStmt": "GRANT",
        "GrantRoleStmt": "GRANT role", "DoStmt": "DO", "CallStmt": "CALL", "LockStmt": "LOCK",
        "VacuumStmt": "VACUUM/ANALYZE", "ListenStmt": "LISTEN", "NotifyStmt": "NOTIFY",
        "PrepareStmt": "PREPARE", "ExecuteStmt": "EXECUTE", "DeclareCursorStmt": "DECLARE CURSOR",
        "CreateFunctionStmt": "CREATE FUNCTION", "AlterRoleStmt": "ALTER ROLE", "CreateRoleStmt": "CREATE ROLE",
        "LoadStmt": "LOAD", "CheckPointStmt": "CHECKPOINT", "DiscardStmt": "DISCARD",
        "RefreshMatViewStmt": "REFRESH MATERIALIZED VIEW", "CreateExtensionStmt": "CREATE EXTENSION",
        "ViewStmt": "CREATE VIEW", "IndexStmt": "CREATE INDEX", "ClusterStmt": "CLUSTER",
        "ReindexStmt": "REINDEX", "VariableShowStmt": "SHOW", "FetchStmt": "FETCH", "ClosePortalStmt": "CLOSE",
    }
    name = type(node).__name__
    return names.get(name, name.removesuffix("Stmt").upper())


def check_read_only(sql: str) -> GuardedQuery:
    """Return the statement if it is one read-only SELECT / EXPLAIN / SHOW; raise QueryRefused otherwise."""
    if len(sql) > MAX_SQL_CHARS:
        raise QueryRefused(f"query is {len(sql)} characters; the limit is {MAX_SQL_CHARS}")
    if "\x00" in sql:
        raise QueryRefused("query contains a NUL character")
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise QueryRefused(f"could not parse the query: {exc}") from None
    if not statements:
        raise QueryRefused("empty query: send one SELECT, EXPLAIN or SHOW statement")
    if len(statements) > 1:
        raise QueryRefused(
            f"found {len(statements)} statements; send exactly one (multi-statement payloads are refused)"
        )
    raw = statements[0]
    stmt = raw.stmt
    kind: StatementKind
    if isinstance(stmt, ast.SelectStmt):
        kind = "select"
    elif isinstance(stmt, ast.ExplainStmt):
        if not isinstance(stmt.query, ast.SelectStmt):
            raise QueryRefused(f"EXPLAIN {_describe(stmt.query)} is not allowed: EXPLAIN runs only for SELECT")
        kind = "explain"
    elif isinstance(stmt, ast.VariableShowStmt):
        kind = "show"
    else:
        raise QueryRefused(f"{_describe(stmt)} is not allowed: only SELECT, EXPLAIN SELECT and SHOW run here")
    check = _TreeCheck()
    check(raw)
    if check.reason is not None:
        raise QueryRefused(check.reason)
    return GuardedQuery(sql=sql.strip(), kind=kind)
