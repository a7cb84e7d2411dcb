"""The agent chat: Claude answers questions by calling NeonBlue's MCP tools in a loop.

One turn: send the conversation and the router's tool catalogue (streaming the
text as it arrives); while Claude stops with `tool_use`, run every requested
tool through the MCP client and send the results back as `tool_result` blocks
(`is_error: true` for failures, so Claude can correct itself); stop when it
answers. Limits keep a turn bounded:

- `max_tool_rounds`: after that many rounds of tool calls, one last request
  with `tool_choice: none` and a note asks Claude to answer with what it has;
- `max_total_tokens`: input + output tokens of the turn; once spent, the turn
  ends with what was said so far;
- `max_response_tokens`: `max_tokens` of each request.

API errors end the turn with one clear sentence (`describe_api_error`) and the
conversation is rolled back to before the question, so the next one starts from
a valid history. Rate limits (429), overload (529) and 5xx are retried by the
SDK (`max_retries`, honouring `retry-after`) before that sentence is shown; a
stream that breaks off with an `overloaded_error`/`api_error` event (which the
SDK cannot retry) is retried here, `stream_retries` times, with a notice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anthropic
import anyio

from mcp_router.apps.chat.tools import ToolBridge, ToolCall

log = logging.getLogger("neonblue.chat")

DEFAULT_SYSTEM_PROMPT = """\
You are NeonBlue's experimentation analyst. NeonBlue runs A/B tests, feature experiments and \
prompt/model experiments; its tools read the experiment registry (PostgreSQL), the event \
analytics (ClickHouse), the semantic memory of past experiments (Chroma) and the statistics \
engine (Experiment Intelligence).

Answer by calling tools, never from memory:
- find past experiments by meaning with semantic_experiment_search;
- for numbers (counts, conversion, segments, trends) use the analytics tools, or write one \
read-only SELECT for the ClickHouse query tool (it refuses writes, several statements and \
file/network table functions);
- judge significance with the analysis tools, not by eye.
Quote numbers exactly as tools return them and name the tool each came from. If a tool \
fails, read its error and correct the call; if the data is not there, say so plainly. Be brief."""

RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})

Stop = Literal["answered", "tool_rounds_exhausted", "token_budget_exhausted", "max_tokens", "error",
               "no_plan", "needs_input", "not_run"]


@dataclass(frozen=True)
class ChatLimits:
    max_tool_rounds: int = 8
    max_total_tokens: int = 200_000
    max_response_tokens: int = 2048


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.requests += other.requests

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "requests": self.requests}


@dataclass
class TurnResult:
    """What one question produced, whichever mode answered it."""

    mode: Literal["agent", "offline"]
    question: str
    answer: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop: Stop = "answered"
    latency_ms: float = 0.0
    model: str | None = None
    error: str | None = None
    variant: str | None = None  # set when an experiment chose the prompt/model
    # Offline answers: the key data of each call's result (names, verdicts, numbers; chat/facts.py).
    data: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "answer": self.answer,
            "tool_calls": [c.summary() for c in self.tool_calls],
            "usage": self.usage.as_dict(),
            "stop": self.stop,
            "model": self.model,
            "latency_ms": round(self.latency_ms, 1),
            "error": self.error,
        }
        if self.variant is not None:
            out["variant"] = self.variant
        if self.mode == "offline":
            out["data"] = self.data
        return out


class ChatListener:
    """Hooks for a front end (the terminal renderer); the defaults do nothing."""

    def on_text(self, text: str) -> None: ...

    def on_tool_call(self, tool: str, arguments: dict[str, Any]) -> None: ...

    def on_tool_result(self, call: ToolCall) -> None: ...

    def on_notice(self, message: str) -> None: ...


def make_client(api_key: str, base_url: str | None = None, *, max_retries: int = 3,
                timeout: float = 120.0) -> anthropic.AsyncAnthropic:
    """The Anthropic client; the SDK retries 408/409/429/5xx/529 with backoff and `retry-after`."""
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=max_retries,
                                    timeout=timeout)


class ChatAgent:
    """A conversation with Claude over NeonBlue's tools. Keeps the history across `ask` calls."""

    def __init__(self, client: anthropic.AsyncAnthropic, tools: ToolBridge, *, model: str,
                 system: str = DEFAULT_SYSTEM_PROMPT, limits: ChatLimits | None = None,
                 listener: ChatListener | None = None, user_id: str | None = None,
                 preselect: Callable[[str], Awaitable[list[str]]] | None = None) -> None:
        self.client = client
        # Before each question: add the tools the offline router ranks for it (session.ToolPreselector).
        self.preselect = preselect
        self.user_id = user_id  # sent as metadata.user_id (an opaque id the API uses for abuse detection)
        self.tools = tools
        self.model = model
        self.system = system
        self.limits = limits or ChatLimits()
        self.listener = listener or ChatListener()
        self.messages: list[dict[str, Any]] = []
        self.conversation_usage = Usage()
        self.stream_retries = 2  # retries of a stream that broke off with an error event

    def reset(self) -> None:
        self.messages.clear()

    async def ask(self, question: str) -> TurnResult:
        started = time.perf_counter()
        checkpoint = len(self.messages)
        turn = TurnResult(mode="agent", question=question, answer="", model=self.model)
        texts: list[str] = []
        if self.preselect is not None:
            await self.preselect(question)
        self._append_user([{"type": "text", "text": question}])
        rounds = 0
        try:
            while True:
                last_round = rounds >= self.limits.max_tool_rounds
                if last_round:
                    self._append_user([{"type": "text", "text": (
                        f"[neonblue: the budget of {self.limits.max_tool_rounds} tool rounds is used up. "
                        "Answer now with what the tools returned, and say what is still unknown.]")}])
                message = await self._request(turn.usage, tools_allowed=not last_round)
                content = assistant_content(message.content)
                self.messages.append({"role": "assistant", "content": content})
                said = "".join(b["text"] for b in content if b["type"] == "text")
                if said:
                    texts.append(said)
                uses = [b for b in content if b["type"] == "tool_use"]
                if message.stop_reason != "tool_use" or not uses:
                    if message.stop_reason == "max_tokens":
                        turn.stop = "max_tokens"
                        self.listener.on_notice(
                            f"the answer hit the {self.limits.max_response_tokens}-token response limit "
                            "(--max-tokens) and is cut short")
                    elif last_round:
                        turn.stop = "tool_rounds_exhausted"
                    break
                if last_round:
                    # Claude asked for tools anyway: answer each use so the history stays valid.
                    self._append_user([_refused(b["id"], "not executed: the tool budget is used up") for b in uses])
                    turn.stop = "tool_rounds_exhausted"
                    self.listener.on_notice(f"stopped after {self.limits.max_tool_rounds} tool rounds")
                    break
                results = []
                for block in uses:
                    self.listener.on_tool_call(self.tools.api_to_mcp.get(block["name"], block["name"]),
                                               block["input"])
                    call = await self.tools.call(block["name"], block["input"])
                    turn.tool_calls.append(call)
                    self.listener.on_tool_result(call)
                    results.append(tool_result_block(block["id"], call))
                self._append_user(results)
                rounds += 1
                if turn.usage.total >= self.limits.max_total_tokens:
                    turn.stop = "token_budget_exhausted"
                    self.listener.on_notice(
                        f"stopped: this question used {turn.usage.total} tokens, over the budget of "
                        f"{self.limits.max_total_tokens} (--max-total-tokens)")
                    break
        except anthropic.APIError as exc:
            del self.messages[checkpoint:]
            turn.stop = "error"
            turn.error = describe_api_error(exc, model=self.model)
            log.info("chat turn failed: %s", turn.error)
        turn.answer = "\n\n".join(texts).strip()
        turn.latency_ms = (time.perf_counter() - started) * 1000
        self.conversation_usage.add(turn.usage)
        return turn

    async def _request(self, usage: Usage, *, tools_allowed: bool) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.limits.max_response_tokens,
            "system": self.system,
            "messages": self.messages,
        }
        if self.user_id:
            kwargs["metadata"] = {"user_id": self.user_id}
        definitions = self.tools.definitions()
        if definitions:
            kwargs["tools"] = definitions
            if not tools_allowed:
                kwargs["tool_choice"] = {"type": "none"}
        attempt = 0
        while True:
            try:
                async with self.client.messages.stream(**kwargs) as stream:
                    async for event in stream:
                        if event.type == "text":
                            self.listener.on_text(event.text)
                    message = await stream.get_final_message()
                break
            except anthropic.APIStatusError as exc:
                # An error event inside an HTTP 200 stream: the SDK cannot retry it, so do it here.
                kind = api_error_type(exc)
                if exc.status_code != 200 or kind not in RETRYABLE_STREAM_ERRORS or attempt >= self.stream_retries:
                    raise
                attempt += 1
                self.listener.on_notice(f"the response stream broke off ({kind}); retrying "
                                        f"({attempt}/{self.stream_retries})")
                await anyio.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
        usage.input_tokens += message.usage.input_tokens or 0
        usage.output_tokens += message.usage.output_tokens or 0
        usage.requests += 1
        return message

    def _append_user(self, blocks: list[dict[str, Any]]) -> None:
        """Add user content; merged into the last message when that is already the user's
        (tool results followed by a note or the next question), as the API needs alternation."""
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": "user", "content": list(blocks)})


def assistant_content(blocks: list[Any]) -> list[dict[str, Any]]:
    """The response's content as request params (the SDK's objects carry fields the API refuses)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        if block.type == "text" and block.text:
            out.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            out.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input or {}})
        elif block.type == "thinking":
            out.append({"type": "thinking", "thinking": block.thinking, "signature": block.signature})
        elif block.type == "redacted_thinking":
            out.append({"type": "redacted_thinking", "data": block.data})
    return out or [{"type": "text", "text": "(no answer)"}]


def tool_result_block(tool_use_id: str, call: ToolCall) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": call.text}
    if call.is_error:
        block["is_error"] = True
    return block


def _refused(tool_use_id: str, reason: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": reason, "is_error": True}


def api_error_type(exc: anthropic.APIError) -> str | None:
    """The `error.type` of Anthropic's error body (`overloaded_error`, `rate_limit_error`, ...)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("type")
    return None


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", "")) or exc.message
    return exc.message


def describe_api_error(exc: anthropic.APIError, *, model: str | None = None) -> str:
    """One sentence a person can act on; no traceback."""
    if isinstance(exc, anthropic.AuthenticationError):
        return ("Anthropic rejected the API key (401 authentication_error): check ANTHROPIC_API_KEY, "
                "or run without it for offline mode.")
    if isinstance(exc, anthropic.PermissionDeniedError):
        return f"the API key may not use this (403 permission_error): {_api_message(exc)}"
    if isinstance(exc, anthropic.NotFoundError):
        return f"model {model!r} was not found (404): set ANTHROPIC_MODEL or --model. {_api_message(exc)}"
    if isinstance(exc, anthropic.RateLimitError) or api_error_type(exc) == "rate_limit_error":
        return ("Anthropic rate limit (429 rate_limit_error) still hit after the retries; wait a minute and ask "
                f"again. {_api_message(exc)}")
    if (isinstance(exc, anthropic.OverloadedError) or getattr(exc, "status_code", None) == 529
            or api_error_type(exc) == "overloaded_error"):
        return "the Anthropic API is overloaded (529 overloaded_error) even after the retries; try again shortly."
    if isinstance(exc, anthropic.BadRequestError):
        return f"Anthropic refused the request (400): {_api_message(exc)}"
    if isinstance(exc, anthropic.APIStatusError):
        return f"the Anthropic API answered {exc.status_code} after the retries: {_api_message(exc)}"
    if isinstance(exc, anthropic.APITimeoutError):
        return "no answer from the Anthropic API in time (after the retries); try again."
    if isinstance(exc, anthropic.APIConnectionError):
        return f"cannot reach the Anthropic API ({exc.__cause__ or exc}); check ANTHROPIC_BASE_URL and the network."
    return f"Anthropic API error: {exc}"
