"""The MCP conformance suite's diagnostic tools and prompt, served by the router only when asked for.

`@modelcontextprotocol/conformance` checks some server duties only through tools and a prompt of fixed
names: a tool needing a client capability the client did not declare must be rejected with -32021
(`test_missing_capability`, it needs sampling); a request's stream carries its own input-required
result, never an independent server request (`test_streaming_elicitation`); no `notifications/message`
reaches a client whose request did not ask for a log level (`test_logging_tool`); and prompts/get can
answer with an input-required result and complete on the retry (`test_input_required_result_prompt`).

They run through the router's real paths: the capability check and the input-required flow of
`mcp_router.gateway.input_required`, the SDK's request-state sealing and log gate. `neonblue serve`
serves them only with NEONBLUE_CONFORMANCE_PROBES=1 (tests/router/test_router_conformance.py); a
normal deployment never lists them.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import mcp.types as types
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError

from mcp_router.gateway.input_required import PromptQuestion, elicitation_mode

_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}
_PROBE = "Conformance probe (NEONBLUE_CONFORMANCE_PROBES=1): "


class ConformanceProbes:
    tools = [
        types.Tool(name="test_missing_capability", input_schema=_NO_ARGUMENTS,
                   description=_PROBE + "needs the client's sampling capability; rejected with -32021 without it."),
        types.Tool(name="test_streaming_elicitation", input_schema=_NO_ARGUMENTS,
                   description=_PROBE + "asks the user one question through an input-required result."),
        types.Tool(name="test_logging_tool", input_schema=_NO_ARGUMENTS,
                   description=_PROBE + "logs at info; delivered only when the request asked for a log level."),
    ]
    tool_names = frozenset(tool.name for tool in tools)
    prompts = [types.Prompt(name="test_input_required_result_prompt",
                            description=_PROBE + "asks for its context first, then renders it.",
                            arguments=[types.PromptArgument(name="context", required=False)])]
    prompt_names = frozenset(prompt.name for prompt in prompts)
    prompt_questions = {"test_input_required_result_prompt": (PromptQuestion(
        "context", "What context should the prompt use?", "The context the prompt should use."),)}

    async def call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult | types.InputRequiredResult:
        if params.name == "test_missing_capability":
            capabilities = ctx.session.client_capabilities
            if capabilities is None or capabilities.sampling is None:
                raise MCPError(code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                               message="test_missing_capability needs the client's sampling capability",
                               data={"requiredCapabilities": {"sampling": {}}})
            return _text("the client declared sampling")
        if params.name == "test_streaming_elicitation":
            answer = (params.input_responses or {}).get("answer")
            if isinstance(answer, types.ElicitResult) and params.request_state:
                return _text(f"answered: {answer.action} {json.dumps(answer.content or {})}")
            if elicitation_mode(ctx) != "input_required":
                raise MCPError(code=types.MISSING_REQUIRED_CLIENT_CAPABILITY,
                               message="test_streaming_elicitation needs the client's elicitation capability",
                               data={"requiredCapabilities": {"elicitation": {"form": {}}}})
            return types.InputRequiredResult(
                input_requests={"answer": types.ElicitRequest(params=types.ElicitRequestFormParams(
                    message="Any answer will do.", requested_schema={
                        "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}))},
                request_state=json.dumps({"probe": "test_streaming_elicitation"}))
        # test_logging_tool: the SDK's gate drops it unless this request's _meta asked for a log level.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the logging capability is deprecated at 2026-07-28
            await ctx.session.send_log_message("info", "test_logging_tool ran", logger="neonblue.probe",
                                               related_request_id=ctx.request_id)
        return _text("logged at info (delivered only when the request asked for a log level)")

    def get_prompt(self, name: str, arguments: dict[str, str]) -> types.GetPromptResult:
        context = arguments.get("context") or "(no context given)"
        return types.GetPromptResult(description=_PROBE + "rendered with its context.", messages=[
            types.PromptMessage(role="user", content=types.TextContent(type="text", text=f"Context: {context}"))])


def _text(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])
