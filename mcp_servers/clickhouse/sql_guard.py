"""The guard in front of `clickhouse_query`: one read-only statement or a refusal.

chDB is ClickHouse with the whole filesystem of this process behind it: the
`file()` table AND scalar functions read any file, `INTO OUTFILE` writes one,
`python()` reads this process's memory — and measured here, `readonly=1`
stops none of `file('...')` as a scalar, `INTO OUTFILE`, `python()` or
`DESCRIBE file(...)`. So the text is checked before the engine sees it.

Defence in depth, outermost first:
1. `check_text`: a lexer that knows ClickHouse's quoting (strings with
   backslash escapes, "…"/`…` identifiers, heredocs, nested /* */ comments)
   refuses: more than one statement (any `;` except one trailing — checked on
   the raw text, so no lexing disagreement can hide a second statement);
   statement kinds other than SELECT/WITH/SHOW/DESCRIBE/EXPLAIN; INTO
   [OUTFILE]; SETTINGS and FORMAT clauses; calls of functions that reach
   files, URLs, other servers or databases, programs or this process; names
   qualified with another database.
2. `check_ast`: ClickHouse's own parser (`EXPLAIN AST`, run by the engine in
   the read-only sandbox) must agree: allowed root kind, no SETTINGS node, no
   denied function anywhere, only harmless generators as table functions, and
   tables only in the store's database or a few `system` catalogue tables.
3. The store runs it with `readonly=1` (writes, DDL, setting changes and most
   table functions refused by the engine), `max_execution_time`,
   `max_result_rows` and `max_result_bytes`.

The guard never rewrites the query: it answers "run exactly this" or raises
QueryRefused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.errors import QueryRefused

MAX_SQL_CHARS = 20_000
ALLOWED_KINDS = ("select", "with", "show", "describe", "desc", "explain")

# Functions that reach outside the store's database (files, network, other servers and
# databases, programs, this Python process, dictionaries) or only stall the server.
DENIED_FUNCTIONS = frozenset(
    {
        "file", "filecluster", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss", "cosn",
        "azureblobstorage", "azureblobstoragecluster", "hdfs", "hdfscluster", "hive",
        "iceberg", "icebergs3", "icebergazure", "iceberghdfs", "iceberglocal", "icebergs3cluster",
        "icebergazurecluster", "iceberghdfscluster", "icebergcluster",
        "deltalake", "deltalakes3", "deltalakeazure", "deltalakecluster", "deltalakelocal",
        "hudi", "hudicluster", "paimon", "paimons3", "paimonazure", "paimonhdfs", "paimonlocal",
        "remote", "remotesecure", "cluster", "clusterallreplicas",
        "mysql", "postgresql", "mongodb", "redis", "sqlite", "jdbc", "odbc", "arrowflight", "arrowflightsql",
        "ytsaurus", "kafka", "nats", "rabbitmq", "fuzzjson", "fuzzquery",
        "executable", "executablepool", "python", "pythonudf", "chdb", "dataframe", "pandas", "pyarrow",
        "input", "merge", "loop", "dictionary", "mergetreeindex", "mergetreeprojection",
        "prometheusquery", "prometheusqueryrange", "timeseriesdata", "timeseriesmetrics", "timeseriestags",
        "filesystemavailable", "filesystemcapacity", "filesystemunreserved",
        "sleep", "sleepeachrow", "getmacro", "getclienthttpheader", "getserverport", "getsetting",
        "joinget", "joingetornull", "addresstoline", "addresstolinewithinlines", "addresstosymbol",
        "demangle", "trap", "logtrace", "catboostevaluate", "naivebayesclassifier",
    }
)
DENIED_PREFIXES = ("dict", "iceberg", "deltalake", "hudi", "azure", "s3", "hdfs", "url", "file", "remote",
                   "mysql", "postgres", "mongo", "redis", "executable", "python", "kafka", "jdbc", "odbc")
# Table functions that only generate data.
ALLOWED_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries", "values", "view", "null"}
)
ALLOWED_SYSTEM_TABLES = frozenset(
    {"one", "numbers", "numbers_mt", "zeros", "zeros_mt", "tables", "columns", "parts", "functions",
     "table_functions", "data_type_families", "databases", "time_zones", "formats"}
)


@dataclass(frozen=True)
class Token:
    kind: str  # word | qident | string | number | op
    text: str  # for qident and string: the unquoted content
    pos: int


def _refuse(reason: str) -> QueryRefused:
    return QueryRefused(f"clickhouse_query refused the statement: {reason}")


def tokenize(sql: str) -> list[Token]:
    """ClickHouse's lexical structure, enough to find words outside strings and comments."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i) or c == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:  # ClickHouse nests block comments
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            if depth:
                raise _refuse("unterminated /* comment")
            i = j
        elif c in "'\"`":
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise _refuse(f"unterminated {c}-quoted text")
                ch = sql[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(sql[j + 1])
                    j += 2
                elif ch == c and sql.startswith(c * 2, j):
                    buf.append(c)
                    j += 2
                elif ch == c:
                    j += 1
                    break
                else:
                    buf.append(ch)
                    j += 1
            tokens.append(Token("string" if c == "'" else "qident", "".join(buf), i))
            i = j
        elif c == "$" and (m := re.match(r"\$([A-Za-z0-9_]*)\$", sql[i:])):
            tag = m.group(0)
            end = sql.find(tag, i + len(tag))
            if end < 0:
                raise _refuse("unterminated $heredoc$ string")
            tokens.append(Token("string", sql[i + len(tag) : end], i))
            i = end + len(tag)
        elif c.isalpha() or c == "_":
            m = re.match(r"[A-Za-z_][A-Za-z0-9_$]*", sql[i:])
            assert m is not None
            tokens.append(Token("word", m.group(0), i))
            i += len(m.group(0))
        elif c.isdigit():
            m = re.match(r"[0-9][0-9A-Za-z_.]*", sql[i:])
            assert m is not None
            tokens.append(Token("number", m.group(0), i))
            i += len(m.group(0))
        else:
            tokens.append(Token("op", c, i))
            i += 1
    return tokens


def _is_denied_function(name: str) -> bool:
    lower = name.lower()
    return lower in DENIED_FUNCTIONS or (lower.startswith(DENIED_PREFIXES) and lower not in _SAFE_PREFIXED)


# Ordinary functions that merely share a denied prefix.
_SAFE_PREFIXED = frozenset(
    {"urlencode", "urldecode", "urlhierarchy", "urlpathhierarchy", "fileextension"}
)


def check_text(sql: str, *, own_database: str, other_databases: Iterable[str] = ()) -> str:
    """The statement to run (without a trailing ';'), or QueryRefused with the reason."""
    if not sql or not sql.strip():
        raise _refuse("the statement is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise _refuse(f"the statement is longer than {MAX_SQL_CHARS} characters")
    statement = sql.strip()
    if statement.endswith(";"):
        statement = statement[:-1].rstrip()
    if ";" in statement:
        raise _refuse(
            "only one statement is allowed, and ';' only at its end "
            "(inside a string literal write char(59) instead)"
        )
    if "\x00" in statement:
        raise _refuse("NUL characters are not allowed")
    tokens = tokenize(statement)
    words = [t for t in tokens if t.kind != "op" or t.text != "("]
    if not words:
        raise _refuse("the statement is empty")
    first = words[0]
    if first.kind != "word" or first.text.lower() not in ALLOWED_KINDS:
        raise _refuse(
            f"only SELECT, WITH, SHOW, DESCRIBE and EXPLAIN statements are allowed, not {first.text.upper()!r}"
        )
    if re.search(r"outfile", statement, re.IGNORECASE):
        raise _refuse("INTO OUTFILE writes files")
    others = {d for d in other_databases if d not in (own_database, "system")}
    kind = first.text.lower()
    for k, tok in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else None
        prev = tokens[k - 1] if k else None
        is_name = tok.kind in ("word", "qident")
        if tok.kind == "word":
            lower = tok.text.lower()
            after_dot = prev is not None and prev.kind == "op" and prev.text == "."
            if lower == "into" and not after_dot:
                raise _refuse("INTO (INSERT INTO / INTO OUTFILE) is not allowed")
            if lower == "settings" and not after_dot and nxt is not None and nxt.kind in ("word", "qident"):
                raise _refuse("SETTINGS clauses are not allowed: limits and readonly=1 are fixed by the server")
            if lower == "format" and not after_dot and nxt is not None and not (nxt.kind == "op" and nxt.text == "("):
                raise _refuse("FORMAT clauses are not allowed: results come back as typed rows")
            if kind == "show" and lower in ("from", "in") and nxt is not None and nxt.kind in ("word", "qident"):
                if nxt.text in others:
                    raise _refuse(f"database {nxt.text!r} is not this store's database ({own_database})")
        if is_name and nxt is not None and nxt.kind == "op" and nxt.text == "(" and _is_denied_function(tok.text):
            raise _refuse(
                f"function {tok.text}() reaches outside the store's database (files, network, other "
                "servers or databases, programs, this process) and is not allowed"
            )
        if is_name and nxt is not None and nxt.kind == "op" and nxt.text == ".":
            after = tokens[k + 2] if k + 2 < len(tokens) else None
            if tok.text in others:
                raise _refuse(f"database {tok.text!r} is not this store's database ({own_database})")
            if tok.text.lower() == "system" and after is not None and after.kind in ("word", "qident"):
                if after.text.lower() not in ALLOWED_SYSTEM_TABLES:
                    raise _refuse(
                        f"system.{after.text} is not readable here; allowed: "
                        + ", ".join(f"system.{t}" for t in sorted(ALLOWED_SYSTEM_TABLES))
                    )
    return statement


_ROOT_KINDS = ("Select", "Show", "Describe", "Explain")


def check_ast(ast_lines: list[str], *, own_database: str) -> None:
    """Check the tree ClickHouse's parser printed for the statement (`EXPLAIN AST`)."""
    lines = [line.rstrip() for line in ast_lines if line.strip()]
    if not lines:
        raise _refuse("the engine could not parse the statement")
    root = lines[0].strip()
    if not root.startswith(_ROOT_KINDS):
        raise _refuse(f"statement kind {root.split()[0]} is not allowed")
    if root.startswith("Explain"):
        inner = lines[1].strip() if len(lines) > 1 else ""
        if not inner.startswith("Select"):
            raise _refuse("EXPLAIN is allowed only for SELECT statements")
    if root.startswith("SelectWithUnionQuery") and "(children 1)" not in root:
        raise _refuse("INTO OUTFILE, FORMAT and SETTINGS clauses are not allowed")
    stack: list[tuple[int, str]] = []
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        text = line.strip()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        stack.append((depth, text))
        if text == "Set" or text.startswith("Set "):
            raise _refuse("SETTINGS clauses are not allowed: limits and readonly=1 are fixed by the server")
        if text.startswith("Function "):
            name = text.split()[1]
            if _is_denied_function(name):
                raise _refuse(f"function {name}() reaches outside the store's database and is not allowed")
            if parent.startswith("TableExpression") and name.lower() not in ALLOWED_TABLE_FUNCTIONS:
                raise _refuse(
                    f"table function {name}() is not allowed; allowed: {', '.join(sorted(ALLOWED_TABLE_FUNCTIONS))}"
                )
        if text.startswith("TableIdentifier "):
            ident = text[len("TableIdentifier ") :].split(" (alias ")[0].split(" (children")[0]
            if "." in ident:
                database, table = ident.split(".", 1)
                if database == "system":
                    if table.lower() not in ALLOWED_SYSTEM_TABLES:
                        raise _refuse(f"system.{table} is not readable here")
                elif database != own_database:
                    raise _refuse(f"database {database!r} is not this store's database ({own_database})")
