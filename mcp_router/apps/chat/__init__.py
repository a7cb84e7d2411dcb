"""The agent chat (`neonblue chat`, `neonblue ask`): natural-language questions answered with NeonBlue's tools.

- `agent.py`: Claude (anthropic SDK) in a streamed tool-use loop over the router's MCP tools;
- `offline.py`: no API key → the router's `route_query` rules pick the tools, results shown as tables;
- `experiment_client.py`: a prompt/model experiment chooses the system prompt/model per user and
  receives latency, tokens and resolution as results;
- `render.py`: terminal output; `tools.py`: MCP tools ↔ Anthropic tool definitions;
- `session.py`: the session both commands run.
"""

from mcp_router.apps.chat.agent import (
    ChatAgent,
    ChatLimits,
    ChatListener,
    TurnResult,
    Usage,
    describe_api_error,
)
from mcp_router.apps.chat.experiment_client import ChatExperiment, ChatSetupError
from mcp_router.apps.chat.offline import OFFLINE_LABEL, OfflineAnswerer
from mcp_router.apps.chat.session import ChatOptions, ChatSession, open_tools_client, run_ask, run_chat
from mcp_router.apps.chat.tools import ToolBridge, ToolCall

__all__ = [
    "OFFLINE_LABEL", "ChatAgent", "ChatExperiment", "ChatLimits", "ChatListener", "ChatOptions", "ChatSession", "ChatSetupError",
    "OfflineAnswerer", "ToolBridge", "ToolCall", "TurnResult", "Usage", "describe_api_error", "open_tools_client",
    "run_ask", "run_chat",
]
