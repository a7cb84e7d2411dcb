"""`neonblue call`: one tool call from a shell or a CI job, through a real MCP client over stdio.

The client starts `neonblue serve` as a child over stdio (which attaches to a running stack, or opens
the stores itself when none runs), calls one tool, prints the structured result as JSON (or a table)
on stdout, a refusal as one line on stderr, and exits with the code of the refusal's kind, so a
script can branch on it. `neonblue gate` (`apps/gate.py`) opens the same session.

The exit codes are one table, `EXIT_CODES`, keyed by the error kinds of `schemas.errors.KINDS`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TextIO

import click

from mcp_router.apps.questions import terminal_questions
from schemas.errors import KINDS
from schemas.refusals import one_line

# The one table of exit codes (`call` and `gate`): code, the error kinds it stands for, what it means.
EXIT_TABLE: tuple[tuple[int, tuple[str, ...], str], ...] = (
    (0, ("ok",), "the call succeeded (gate: passed)"),
    (1, ("internal",), "a tool crashed, or anything unexpected"),
    (2, ("invalid_input",), "bad arguments, or a usage error"),
    (3, ("not_found",), "no such experiment, variant, tool..."),
    (4, ("conflict", "refused", "confirmation_required"), "refused now (the line says why)"),
    (5, ("unavailable",), "a store or the stack is down, or serve did not start"),
    (6, ("gate_failed",), "gate only: verdict not allowed, or a guardrail fails"),
)
EXIT_CODES: dict[str, int] = {kind: code for code, kinds, _ in EXIT_TABLE for kind in kinds}
assert set(KINDS) <= set(EXIT_CODES), "every error kind of schemas.errors needs an exit code"


def exit_code_help() -> str:
    """The exit-code table for `--help` (click keeps the lines of a \\b paragraph)."""
    return "\b\nExit codes:\n" + "\n".join(f"  {code}  {', '.join(kinds)}: {text}" for code, kinds, text in EXIT_TABLE)


CALL_HELP = f"""Call one TOOL over MCP (stdio) and print its structured result as JSON.

\b
ARGS: one JSON object, or key=value pairs (a value is read as JSON
when it parses, else as a string), or both (pairs override the object):
  neonblue call get_experiment experiment=checkout-1step
  neonblue call list_experiments '{{"limit": 5}}'
  neonblue call --list

It starts `neonblue serve` over stdio, which attaches to the running
stack (`neonblue up`) or opens the stores itself. The result goes to
stdout; a refusal is one line on stderr.

A destructive call (stop with a winner, archive, moving a running
experiment's traffic, an allocation or autopilot action) asks for
confirmation on a terminal; a script confirms with arguments:

\b
  neonblue call stop_experiment experiment=checkout-1step \\
    winner=one_step confirm=true reason="p<0.01, guardrails fine"

{exit_code_help()}
"""


class CallFailed(Exception):
    """A call that did not succeed: its kind (an `EXIT_CODES` key) and one line for stderr."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind if kind in EXIT_CODES else "internal"
        self.message = one_line(message)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


# ---------------------------------------------------------------- arguments


def parse_arguments(items: Sequence[str]) -> dict[str, Any]:
    """ARGS_JSON and key=value pairs -> the tool's arguments (CallFailed invalid_input when malformed)."""
    arguments: dict[str, Any] = {}
    for i, item in enumerate(items):
        if i == 0 and item.lstrip().startswith("{"):
            try:
                parsed = json.loads(item)
            except json.JSONDecodeError as exc:
                raise CallFailed("invalid_input", f"ARGS_JSON is not valid JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise CallFailed("invalid_input", "ARGS_JSON must be a JSON object")
            arguments.update(parsed)
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            raise CallFailed("invalid_input", f"{item!r}: expected key=value (or one JSON object first)")
        try:
            arguments[key] = json.loads(raw)
        except json.JSONDecodeError:
            arguments[key] = raw
    return arguments


# ---------------------------------------------------------------- the stdio session


def serve_command(extra_env: Mapping[str, str] | None = None, verbose: bool = False) -> Any:
    """`neonblue serve` over stdio, as a child of this process, with this environment (the SDK would
    pass only a few variables: NEONBLUE_HOME and the ports must reach it to find the stack)."""
    from mcp import StdioServerParameters

    env = {**os.environ, "NEONBLUE_TOOL_PROFILE": "full", **(extra_env or {})}  # every tool, listed too
    args = ["-m", "mcp_router", "serve", *(["--verbose"] if verbose else [])]
    return StdioServerParameters(command=sys.executable, args=args, env=env)


def _last_log_line(log: TextIO) -> str:
    log.flush()
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def _read_stdin(prompt: str) -> str | None:
    """One line typed on stdin after `prompt` on stderr (stdout carries the call's result); None at end of input."""
    import anyio

    def read() -> str | None:
        sys.stderr.write(prompt)
        sys.stderr.flush()
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    return await anyio.to_thread.run_sync(read)


# A server's question (a destructive call's confirmation, a prompt's missing context) asked on this
# terminal: the question on stderr, the answers read from stdin. Only offered when both are a terminal,
# so a CI job is never left waiting (it passes confirm=true and a reason instead).
ask_on_terminal = terminal_questions(lambda message: click.echo(f"neonblue: {message}", err=True), _read_stdin)


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


@asynccontextmanager
async def open_session(extra_env: Mapping[str, str] | None = None, verbose: bool = False) -> AsyncIterator[Any]:
    """A connected `mcp.Client` over stdio to a child `neonblue serve`. Its stderr (the server's log)
    is kept aside and named only when the server cannot start (CallFailed unavailable); with
    `verbose`, the server logs at INFO straight to this process's stderr."""
    from mcp import Client
    from mcp.client.stdio import stdio_client

    with tempfile.TemporaryFile(mode="w+", prefix="neonblue-serve-", suffix=".log") as log:
        async with AsyncExitStack() as stack:
            try:
                params = serve_command(extra_env, verbose)
                transport = stdio_client(params, errlog=sys.stderr if verbose else log)
                # On a terminal the user can be asked to confirm a destructive call; elsewhere not (exit 4 with
                # the question, and the call is repeated with confirm=true and a reason).
                client = await stack.enter_async_context(
                    Client(transport, elicitation_callback=ask_on_terminal if interactive() else None))
            except Exception as exc:  # noqa: BLE001 - whatever stopped the child: one line, kind unavailable
                why = _last_log_line(log) or str(exc) or type(exc).__name__
                raise CallFailed("unavailable", f"`neonblue serve` did not start: {why}") from None
            yield client


async def call_tool(client: Any, tool: str, arguments: dict[str, Any]) -> Any:
    """The tool's structured result (or its content, when it has none); CallFailed of the refusal's kind."""
    import mcp.types as types
    from mcp.shared.exceptions import MCPError

    from schemas.refusals import kind_of, result_text

    try:
        result = await client.call_tool(tool, arguments)
    except MCPError as exc:
        kind = {types.INVALID_PARAMS: "invalid_input", types.METHOD_NOT_FOUND: "not_found"}.get(exc.code, "internal")
        if exc.message.startswith("Unknown tool"):
            kind = "not_found"
        raise CallFailed(kind, f"{tool}: {exc.message}") from None
    if result.is_error:
        raise CallFailed(kind_of(result) or "refused", f"{tool}: {result_text(result) or 'refused'}")
    if result.structured_content is not None:
        return result.structured_content
    return {"content": [_content(item) for item in result.content]}


def _content(item: Any) -> Any:
    if getattr(item, "type", "") == "text":
        return {"type": "text", "text": item.text}
    if getattr(item, "type", "") == "image":
        return {"type": "image", "mime_type": item.mime_type, "base64_chars": len(item.data)}
    return {"type": getattr(item, "type", "unknown")}


# ---------------------------------------------------------------- the command


def run_call(tool: str | None, items: Sequence[str], *, fmt: str | None = None, list_tools: bool = False,
             verbose: bool = False) -> int:
    """`neonblue call`: print the result (or the catalogue) and return the exit code."""
    import anyio

    async def main() -> Any:
        arguments = parse_arguments(items)  # before starting anything: bad arguments cost nothing
        async with open_session(verbose=verbose) as client:
            if list_tools:
                return (await client.list_tools()).tools
            return await call_tool(client, tool or "", arguments)

    if not list_tools and not tool:
        return fail(CallFailed("invalid_input", "call: name a TOOL, or --list for the catalogue"))
    try:
        found = run_session(anyio.run, main)
    except CallFailed as exc:
        return fail(exc)
    if list_tools:
        print_catalogue(found, fmt or "text")
    elif fmt == "table":
        print_table(found)
    else:
        print(json.dumps(found, indent=2, ensure_ascii=False, default=str))
    return EXIT_CODES["ok"]


def run_session(runner: Any, main: Any) -> Any:
    """`runner(main)`, with a CallFailed raised inside the MCP client's task groups raised bare again."""
    try:
        return runner(main)
    except CallFailed:
        raise
    except BaseException as exc:
        found = _call_failed(exc)
        if found is None:
            raise
        raise found from None


def _call_failed(exc: BaseException) -> CallFailed | None:
    if isinstance(exc, CallFailed):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        if (found := _call_failed(inner)) is not None:
            return found
    return None


def fail(exc: CallFailed) -> int:
    print(f"neonblue: {exc.message} [{exc.kind}]", file=sys.stderr)
    return exc.exit_code


def summary_line(description: str | None) -> str:
    """A tool's description on one line: the first sentence of its first paragraph."""
    paragraph = " ".join((description or "").strip().split("\n\n")[0].split())
    head, sep, _ = paragraph.partition(". ")
    return head + "." if sep else paragraph


def print_catalogue(tools: Sequence[Any], fmt: str) -> None:
    rows = sorted(((t.name, summary_line(t.description or t.title)) for t in tools), key=lambda r: r[0])
    if fmt == "json":
        print(json.dumps([{"name": n, "description": d} for n, d in rows], indent=2, ensure_ascii=False))
        return
    width = max((len(n) for n, _ in rows), default=0)
    # On a terminal each line ends at its edge; piped (grep, a CI log), the descriptions stay whole.
    columns = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for name, line in rows:
        text = f"{name:<{width}}  {line}"
        print(text if columns is None or len(text) <= columns else text[: columns - 1] + "…")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


def _flat(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects as dotted names (stream.lag.total), lists kept whole."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.extend(_flat(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def print_table(data: Any) -> None:
    """A readable view: the scalar fields as name/value, each list of objects as its own table.
    Values fold at the terminal's width: nothing is cut."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=False)
    if _is_rows(data):
        data = {"items": data}
    if not isinstance(data, dict):
        console.print(Text(_cell(data)))
        return
    fields = Table.grid(padding=(0, 2))
    fields.add_column(no_wrap=True, style="bold")
    fields.add_column(overflow="fold")
    for key, value in _flat({k: v for k, v in data.items() if not _is_rows(v)}):
        fields.add_row(Text(key), Text(_cell(value)))
    if fields.row_count:
        console.print(fields)
    for key, value in data.items():
        if not _is_rows(value):
            continue
        columns = list(dict.fromkeys(k for row in value for k in row))
        natural = sum(max(len(c), *(len(_cell(row.get(c))) for row in value)) + 3 for c in columns)
        if natural <= console.width:  # fits: one row per object
            table = Table(title=key, box=box.SIMPLE_HEAD, title_justify="left")
            for column in columns:
                table.add_column(column, overflow="fold")
            for row in value:
                table.add_row(*(Text(_cell(row.get(c))) for c in columns))
            console.print(table)
            continue
        for i, row in enumerate(value):  # too wide: one name/value block per object
            block = Table.grid(padding=(0, 2))
            block.add_column(no_wrap=True)
            block.add_column(overflow="fold")
            for name, cell in _flat({c: row.get(c) for c in columns}):
                block.add_row(Text(f"  {name}"), Text(_cell(cell)))
            console.print(Text(f"{key}[{i}]", style="bold"))
            console.print(block)
