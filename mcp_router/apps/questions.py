"""A server's questions (MCP elicitation: a destructive call's confirmation, a prompt's missing context)
put to the person at the terminal, never answered by the model. `neonblue chat` and `neonblue call`
both ask this way; each says the question and reads a line its own way.

A yes/no field needs "y" (anything else declines, and nothing changes); an empty answer takes the
field's default; end of input dismisses the question (cancel: nothing changes either).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

ReadLine = Callable[[str], Awaitable[str | None]]  # prompt -> the line typed, None at end of input
Elicitation = Callable[[Any, Any], Awaitable[Any]]  # an MCP client's elicitation_callback


def terminal_questions(say: Callable[[str], None], read_line: ReadLine) -> Elicitation:
    """The elicitation callback that says the question with `say` and reads each field's answer with
    `read_line`, in the order of the requested schema's properties."""
    import mcp.types as types

    async def ask(context: Any, params: Any) -> Any:
        say(params.message)
        content: dict[str, Any] = {}
        for name, prop in (params.requested_schema.get("properties") or {}).items():
            label = prop.get("title") or name
            default = prop.get("default")
            if prop.get("type") == "boolean":
                line = await read_line(f"{label}? [y/N] ")
                if line is None:
                    return types.ElicitResult(action="cancel")
                if line.strip().lower() not in ("y", "yes"):
                    return types.ElicitResult(action="decline")
                content[name] = True
                continue
            line = await read_line(f"{label}{f' [{default}]' if default else ''}: ")
            if line is None:
                return types.ElicitResult(action="cancel")
            content[name] = line.strip() or default or ""
        return types.ElicitResult(action="accept", content=content)

    return ask
