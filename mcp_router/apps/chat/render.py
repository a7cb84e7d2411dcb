"""Terminal rendering for the chat: streamed text, tool-call lines, and tool results as tables.

Tool results are structured (pydantic models on the server side), so a result
becomes: a table for its main list of records (columns = the records' scalar
fields, one level of nesting flattened as `a.b`), and a key/value table for its
remaining scalars. Nothing here knows a particular tool.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mcp_router.apps.chat.agent import ChatListener, TurnResult
from mcp_router.apps.chat.tools import ToolCall

MAX_ROWS = 20
MAX_COLUMNS = 9
MAX_CELL = 60


def short_json(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, dict | list):
        value = short_json(value, MAX_CELL)
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a record, nested dicts flattened one level (`metadata.improvement`)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix:
            flat.update(flatten(value, f"{name}."))
        elif _is_scalar(value):
            flat[name] = value
        elif isinstance(value, list) and all(_is_scalar(v) for v in value) and len(value) <= 6:
            flat[name] = ", ".join(str(v) for v in value)
    return flat


def main_records(data: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """The largest list of records in a result (top level or one level down), with its key."""
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return None, data
    if not isinstance(data, dict):
        return None, []
    best: tuple[str | None, list[dict[str, Any]]] = (None, [])
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            if len(value) > len(best[1]):
                best = (key, value)
    if best[1]:
        return best
    # Column-oriented results ({"columns": [...], "rows": [[...]]}), e.g. SQL tools.
    columns, rows = data.get("columns"), data.get("rows")
    if isinstance(columns, list) and isinstance(rows, list) and rows and isinstance(rows[0], list):
        names = [c["name"] if isinstance(c, dict) else str(c) for c in columns]
        return "rows", [dict(zip(names, row, strict=False)) for row in rows]
    return None, []


def records_table(records: list[dict[str, Any]], title: str | None = None) -> Table:
    flat = [flatten(r) for r in records[:MAX_ROWS]]
    columns: list[str] = []
    for row in flat:
        for key in row:
            if key not in columns:
                columns.append(key)
    # Prefer informative columns: drop ones that are empty everywhere, keep the first MAX_COLUMNS.
    columns = [c for c in columns if any(row.get(c) not in (None, "") for row in flat)][:MAX_COLUMNS]
    caption = f"{len(records)} rows, first {MAX_ROWS} shown" if len(records) > MAX_ROWS else None
    table = Table(*columns, title=title, caption=caption, show_lines=False)
    for row in flat:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def result_tables(tool: str, data: Any) -> list[Table]:
    """Tables for one structured tool result."""
    key, records = main_records(data)
    tables = []
    if records:
        tables.append(records_table(records, title=f"{tool} → {key}" if key else tool))
    if isinstance(data, dict):
        scalars = {k: v for k, v in data.items() if k != key and _is_scalar(v) or
                   (isinstance(v, list) and v and all(_is_scalar(x) for x in v))}
        if scalars:
            kv = Table("field", "value", title=None if records else tool)
            for k, v in scalars.items():
                kv.add_row(k, _cell(v if not isinstance(v, list) else ", ".join(map(str, v))))
            tables.append(kv)
    return tables


class ConsoleListener(ChatListener):
    """Streams Claude's text to the terminal and shows each tool call as it happens."""

    def __init__(self, console: Console, *, show_results: bool = False, errors: Console | None = None) -> None:
        self.console = console
        self.errors = errors or Console(stderr=True)
        self.show_results = show_results
        self._mid_line = False

    def _newline(self) -> None:
        if self._mid_line:
            self.console.file.write("\n")
            self._mid_line = False

    def on_text(self, text: str) -> None:
        self.console.file.write(text)
        self.console.file.flush()
        self._mid_line = not text.endswith("\n")

    def on_tool_call(self, tool: str, arguments: dict[str, Any]) -> None:
        self._newline()
        self.console.print(Text.assemble(("  ⚙ ", "cyan"), (tool, "bold cyan"), " ",
                                         (short_json(arguments), "dim")))

    def on_tool_result(self, call: ToolCall) -> None:
        if call.is_error:
            self.console.print(Text.assemble(("    ✗ ", "red"), (call.text[:300], "red")))
        else:
            note = " (truncated for the model)" if call.truncated else ""
            self.console.print(Text(f"    ✓ {call.duration_ms:.0f} ms{note}", style="dim green"))
            if self.show_results and call.structured is not None:
                for table in result_tables(call.tool, call.structured):
                    self.console.print(table)

    def on_notice(self, message: str) -> None:
        self._newline()
        self.console.print(Text(f"  ! {message}", style="yellow"))

    def finish(self, turn: TurnResult) -> None:
        self._newline()
        if turn.error:
            self.errors.print(Text(f"neonblue: {turn.error}", style="bold red"), soft_wrap=True)
        usage = turn.usage
        tools = ", ".join(c.tool for c in turn.tool_calls) or "none"
        detail = (f"tools: {tools} · {usage.input_tokens} in / {usage.output_tokens} out tokens · "
                  f"{turn.latency_ms / 1000:.1f} s") if turn.mode == "agent" else f"tools: {tools}"
        self.console.print(Text(detail, style="dim"))
