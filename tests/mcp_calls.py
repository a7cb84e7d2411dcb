"""Calling a tool from a test through a real MCP client: the answer, or the refusal's message; and
`readable`, for a test whose failure would otherwise hide inside the client's exception groups."""

from __future__ import annotations

import functools
from typing import Any

from mcp import Client


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The tool's structured result; the test fails with the tool's own message on isError."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content[0].text if result.content else result)
    return result.structured_content  # type: ignore[return-value]


async def refusal(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    """The message of a call that must be refused (isError)."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, tool
    return result.content[0].text


def readable(test):
    """Re-raise the first real failure out of the anyio/MCP exception-group nesting (pytest stops at depth 10)."""
    from mcp_router.gateway.backends import first_leaf

    @functools.wraps(test)
    async def wrapper(*args, **kwargs):
        try:
            return await test(*args, **kwargs)
        except BaseExceptionGroup as group:
            raise first_leaf(group) from None

    return wrapper
