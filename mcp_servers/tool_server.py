"""The MCPServer every NeonBlue server (and the router's own tools) is built on.

It differs from the SDK's in one thing: a tool call that fails answers a refusal an agent can act
on (`schemas.refusals`): one line that names the argument and what was expected, no pydantic
dump, no "Error executing tool X:" wrapper, and the error's kind in the result's `_meta`, so the
router and the intelligence server raise the same kind again on their side. The SDK's own handler
flattens every failure to text and loses the kind; here the failure never reaches it.
"""

from __future__ import annotations

import logging
from typing import Any

import mcp.types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError

from schemas.refusals import refusal, refusal_result

log = logging.getLogger(__name__)


class ToolServer(MCPServer):
    """An MCPServer whose failed tool calls answer `schemas.refusals.refusal_result`."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
                        ) -> types.CallToolResult | types.InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except MCPError:
            raise  # a protocol error stays one (JSON-RPC)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a refusal; a crash is logged here
            if not isinstance(exc, ToolError) or isinstance(exc, UnexpectedToolError):
                log.error("tool %s raised an unexpected exception", name, exc_info=exc)
            return refusal_result(refusal(exc, self._tool_input_schema(name)))
