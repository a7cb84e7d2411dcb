"""Calling a tool from a test through a real MCP client: the answer, or the refusal's message."""

from __future__ import annotations

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
