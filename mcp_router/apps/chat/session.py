"""A chat session: the MCP connection, the answering mode, the experiment, the commands.

Both `neonblue chat` (interactive) and `neonblue ask` (one question) run a
`ChatSession`. The tools are reached through a real `mcp.Client`: on the
router's server in this process (every backend opened in-process), or, when a
stack started by `neonblue up` owns the stores, through that stack over HTTP.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from mcp import Client
from rich.console import Console
from rich.text import Text

from mcp_router.apps.chat.agent import ChatAgent, ChatLimits, ChatListener, TurnResult, make_client
from mcp_router.apps.chat.experiment_client import ChatExperiment
from mcp_router.apps.chat.offline import OFFLINE_LABEL, OfflineAnswerer
from mcp_router.apps.chat.render import ConsoleListener, result_tables
from mcp_router.apps.chat.tools import ToolBridge
from mcp_router.apps.questions import Elicitation, ReadLine, terminal_questions
from mcp_router.gateway.backends import PROFILE_META
from schemas.settings import Settings

log = logging.getLogger(__name__)
# Pre-selection is a help, not a step the answer waits on: the first question of a process fits the
# router's classifier (a few seconds, more on a busy machine); past this budget Claude gets the listed tools.
PRESELECT_BUDGET_S = 20.0

HELP = """\
/help        this list
/tools       the tools the chat can call
/usage       tokens used in this conversation
/reset       forget the conversation
/resolved    the last answer solved my question (recorded when an experiment drives the chat)
/unresolved  it did not
/quit        leave (also /exit, Ctrl-D)"""


@dataclass(frozen=True)
class ChatOptions:
    model: str | None = None  # default: settings.anthropic_model
    offline: bool = False
    read_only: bool = False  # expose only tools annotated read-only
    limits: ChatLimits = ChatLimits()
    max_retries: int = 3
    experiment: str | None = None
    user_id: str | None = None
    attributes: dict | None = None
    server_url: str | None = None  # a running NeonBlue's /mcp endpoint instead of an in-process router


def default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli-user"




def chat_questions(console: Console, read_line: ReadLine) -> Elicitation:
    """The MCP elicitation callback of `neonblue chat`: a question of the router (a destructive call
    Claude wants to make, a prompt's missing context) is put to the person at the terminal, never
    answered by the model (`mcp_router.apps.questions`: "y" confirms, an empty answer takes the
    default, end of input dismisses it)."""
    return terminal_questions(lambda message: console.print(Text(f"NeonBlue asks you: {message}", style="bold yellow")),
                              read_line)


@asynccontextmanager
async def open_tools_client(settings: Settings, server_url: str | None = None,
                            elicitation_callback: Elicitation | None = None
                            ) -> AsyncIterator[Client]:
    """An MCP client on the router: a NeonBlue HTTP endpoint when given (bearer token from
    NEONBLUE_HTTP_TOKEN), else a running `neonblue up` stack, else a router owning the stores in-process
    (with the embedded PostgreSQL started for this process when DATABASE_URL is unset).
    With `elicitation_callback` the client declares elicitation: the router's questions go to it."""
    from mcp_router.runtime.serving import embedded_database, open_attached_router, open_router, resolve_token
    from mcp_router.runtime.stack import Stack

    if server_url:
        import httpx
        from mcp.client.streamable_http import streamable_http_client

        token = settings.http_token.get_secret_value() if settings.http_token else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(headers=headers, timeout=settings.backend_timeout) as http, \
                Client(streamable_http_client(server_url, http_client=http),
                       read_timeout_seconds=settings.backend_timeout, elicitation_callback=elicitation_callback
                       ) as client:
            yield client
        return
    stack = Stack(settings)
    async with AsyncExitStack() as opened:
        if stack.owner.pid() is not None and stack.owner_healthy():
            router = await opened.enter_async_context(
                open_attached_router(f"{stack.owner_url}/mcp", resolve_token(settings, create=False)))
        else:
            # No stack running: this process owns the stores, with an embedded PostgreSQL of its own when
            # DATABASE_URL is unset (as `neonblue call` and `serve` do), stopped again on exit.
            opened.enter_context(embedded_database(settings))
            router = await opened.enter_async_context(open_router(settings))
        yield await opened.enter_async_context(Client(router.server, elicitation_callback=elicitation_callback))


class ToolPreselector:
    """Before each question, the tools the offline router ranks for it (route_query's `candidates`)
    join the tools offered to Claude: the listed profile stays small, and the question's tools are
    there even when the profile does not list them. A router without route_query changes nothing."""

    def __init__(self, client: Client, bridge: ToolBridge) -> None:
        self.client = client
        self.bridge = bridge
        self._catalogue: dict[str, Any] | None = None

    async def __call__(self, question: str) -> list[str]:
        with anyio.move_on_after(PRESELECT_BUDGET_S):
            return await self._preselect(question)
        log.info("tool pre-selection skipped: route_query took over %s s", PRESELECT_BUDGET_S)
        return []

    async def _preselect(self, question: str) -> list[str]:
        try:
            result = await self.client.call_tool("route_query", {"query": question[:2000]})
            if result.is_error or not isinstance(result.structured_content, dict):
                return []
            candidates = [c for c in result.structured_content.get("candidates", []) if c not in self.bridge.names]
            if not candidates:
                return []
            if self._catalogue is None:
                listed = await self.client.list_tools(meta={PROFILE_META: "full"})
                self._catalogue = {t.name: t for t in listed.tools}
            return self.bridge.add([self._catalogue[c] for c in candidates if c in self._catalogue])
        except Exception as exc:  # noqa: BLE001 - pre-selection is a help; the listed tools still answer
            log.info("tool pre-selection skipped: %s", exc)
            return []


class ChatSession:
    """One conversation, online (Claude + tools) or offline (route_query rules + tools)."""

    def __init__(self, client: Client, settings: Settings, options: ChatOptions,
                 listener: ChatListener | None = None) -> None:
        self.client = client
        self.settings = settings
        self.options = options
        self.listener = listener or ChatListener()
        self.tools: ToolBridge | None = None
        self.agent: ChatAgent | None = None
        self.offline: OfflineAnswerer | None = None
        self.experiment: ChatExperiment | None = None
        self.notices: list[str] = []

    @property
    def mode(self) -> str:
        return "offline" if self.agent is None else "agent"

    async def start(self) -> None:
        self.tools = await ToolBridge.load(self.client, read_only=self.options.read_only)
        key = self.settings.anthropic_api_key
        if key is not None and key.get_secret_value() and not self.options.offline:
            anthropic = make_client(key.get_secret_value(), self.settings.anthropic_base_url,
                                    max_retries=self.options.max_retries)
            self.agent = ChatAgent(anthropic, self.tools, model=self.options.model or self.settings.anthropic_model,
                                   limits=self.options.limits, listener=self.listener,
                                   preselect=ToolPreselector(self.client, self.tools))
        else:
            self.offline = OfflineAnswerer(self.tools, self.listener)
        if self.options.experiment:
            # The harness's own calls (assignment, results) must work even with --read-only.
            harness = self.tools if not self.options.read_only else await ToolBridge.load(self.client)
            self.experiment = ChatExperiment(harness, self.options.experiment,
                                             self.options.user_id or default_user(), self.options.attributes)
            await self.experiment.enroll()
            if self.agent is not None:
                self.experiment.apply(self.agent)
            else:
                self.experiment.notices.append("offline mode: the experiment's prompt/model do not apply and "
                                               "nothing is recorded")
        self._drain_notices()

    async def ask(self, question: str) -> TurnResult:
        if self.agent is not None:
            turn = await self.agent.ask(question)
        else:
            assert self.offline is not None
            turn = await self.offline.ask(question)
        if self.experiment is not None and self.agent is not None:
            await self.experiment.record_turn(turn)
        elif self.experiment is not None and self.experiment.arm is not None:
            turn.variant = self.experiment.arm.variant
        self._drain_notices()
        return turn

    async def command(self, line: str) -> str | None:
        """Run a /command; the text to show (None for /quit)."""
        name = line.strip().split()[0].lower()
        if name in ("/quit", "/exit"):
            return None
        if name == "/help":
            return HELP
        if name == "/tools":
            assert self.tools is not None
            return "\n".join(sorted(self.tools.names))
        if name == "/reset":
            if self.agent is not None:
                self.agent.reset()
            return "conversation cleared"
        if name == "/usage":
            if self.agent is None:
                return "offline mode: no tokens used"
            u = self.agent.conversation_usage
            return f"{u.input_tokens} input + {u.output_tokens} output tokens over {u.requests} requests"
        if name in ("/resolved", "/unresolved"):
            if self.experiment is None or not self.experiment.recording or self.agent is None:
                return "noted (no experiment is recording this chat)"
            if await self.experiment.mark(name == "/resolved"):
                return f"recorded resolved={int(name == '/resolved')} for the last answer"
            return "there is no answer to judge yet"
        return f"unknown command {name}; /help lists them"

    async def close(self) -> None:
        if self.experiment is not None and self.agent is not None:
            await self.experiment.flush()
        self._drain_notices()

    def _drain_notices(self) -> None:
        if self.experiment is not None:
            for message in self.experiment.notices:
                self.listener.on_notice(message)
                self.notices.append(message)
            self.experiment.notices.clear()

    def banner(self) -> str:
        assert self.tools is not None
        if self.agent is None:
            head = OFFLINE_LABEL
        else:
            head = f"agent chat with {self.agent.model} · limits: {self.agent.limits.max_tool_rounds} tool rounds, " \
                   f"{self.agent.limits.max_total_tokens} tokens per question"
        arm = self.experiment.arm if self.experiment else None
        if arm is not None:
            head += f" · experiment {arm.experiment}: user {arm.user_id} → variant {arm.variant or '(none)'}"
        return f"{head} · {len(self.tools.names)} tools"


# ---------------------------------------------------------------- front ends


async def run_ask(settings: Settings, question: str, options: ChatOptions, *, as_json: bool,
                  console: Console | None = None) -> TurnResult:
    """`neonblue ask`: one question; a streamed answer with tables, or one JSON object."""
    console = console or Console()
    listener: ChatListener = ChatListener() if as_json else ConsoleListener(console)
    async with open_tools_client(settings, options.server_url) as client:
        session = ChatSession(client, settings, options, listener)
        await session.start()
        if not as_json:
            console.print(Text(session.banner(), style="dim"))
        turn = await session.ask(question)
        await session.close()
    if as_json:
        out = turn.to_json()
        if session.notices:
            out["notices"] = session.notices
        console.file.write(json.dumps(out, default=str) + "\n")
    else:
        _show_turn(console, listener, turn)
    return turn


def _show_turn(console: Console, listener: ChatListener, turn: TurnResult) -> None:
    if turn.mode == "offline":
        for call in turn.tool_calls:
            if call.tool != "route_query" and not call.is_error and call.structured is not None:
                for table in result_tables(call.tool, call.structured):
                    console.print(table)
        console.print(turn.answer)
    if isinstance(listener, ConsoleListener):
        listener.finish(turn)


async def run_chat(settings: Settings, options: ChatOptions, read_line: ReadLine,
                   console: Console | None = None) -> None:
    """`neonblue chat`: read questions until /quit or end of input; the conversation is kept. A destructive
    call asks the person at the terminal first (`chat_questions`)."""
    console = console or Console()
    listener = ConsoleListener(console)
    async with open_tools_client(settings, options.server_url, chat_questions(console, read_line)) as client:
        session = ChatSession(client, settings, options, listener)
        await session.start()
        console.print(Text(session.banner(), style="dim"))
        console.print(Text("Ask about your experiments; /help for commands.", style="dim"))
        try:
            while True:
                line = await read_line("you> ")
                if line is None:
                    break
                line = line.strip()
                if not line:
                    continue
                if line.startswith("/"):
                    reply = await session.command(line)
                    if reply is None:
                        break
                    console.print(Text(reply, style="dim"))
                    continue
                if session.agent is not None:
                    console.file.write("neonblue> ")
                turn = await session.ask(line)
                _show_turn(console, listener, turn)
        finally:
            await session.close()
