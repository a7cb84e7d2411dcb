"""A local stand-in for the Anthropic Messages API, speaking its wire format.

Anthropic is a paid external API, so the chat tests point the REAL `anthropic`
client (base_url) at this server instead. It implements `POST /v1/messages`:

- JSON responses and SSE streaming (`message_start`, `content_block_start`,
  `ping`, `content_block_delta` with `text_delta` / `input_json_delta`,
  `content_block_stop`, `message_delta` with stop_reason and usage,
  `message_stop`);
- the request checks of the real API that matter to a tool-use loop: the
  key (`x-api-key` or `Authorization: Bearer`) (401 `authentication_error`), required fields, user/assistant
  alternation, and every `tool_use` answered by a `tool_result` with the same id
  in the next user message (400 `invalid_request_error`);
- scripted replies: a test queues what the "model" says next (text, tool calls,
  or a function of the request so the answer can quote a tool result), or an
  error status (429 `rate_limit_error`, 529 `overloaded_error`, 401...) in
  Anthropic's error JSON shape;
- every request is recorded so the test can assert what the client sent back.

The server runs in a thread with its own event loop, so both in-process async
tests and CLI subprocesses can talk to it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# Fields the API accepts per content block (a subset: what a tool-use loop sends back).
BLOCK_FIELDS = {
    "text": {"type", "text", "cache_control", "citations"},
    "tool_use": {"type", "id", "name", "input", "cache_control"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
    "image": {"type", "source", "cache_control"},
}


@dataclass
class Reply:
    """What the model says in one response."""

    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    input_tokens: int | None = None  # default: a rough count of the request
    output_tokens: int | None = None  # default: a rough count of the content


@dataclass
class Failure:
    """An error answer, in Anthropic's error shape."""

    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamFailure:
    """A streamed response that breaks off with an SSE `error` event (e.g. overloaded_error) after some text."""

    error_type: str
    message: str
    partial_text: str = ""


Script = Reply | Failure | StreamFailure | Callable[[dict[str, Any]], "Reply | Failure | StreamFailure"]


@dataclass
class RecordedRequest:
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last user message."""
        last = self.messages[-1]
        if not isinstance(last["content"], list):
            return []
        return [b for b in last["content"] if b.get("type") == "tool_result"]


def text(value: str, **usage: int) -> Reply:
    return Reply([{"type": "text", "text": value}], "end_turn", **usage)


def tool_use(name: str, arguments: dict[str, Any], *, say: str | None = None, **usage: int) -> Reply:
    return tool_uses([(name, arguments)], say=say, **usage)


def tool_uses(calls: list[tuple[str, dict[str, Any]]], *, say: str | None = None, **usage: int) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": say}] if say else []
    for name, arguments in calls:
        content.append({"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name,
                        "input": arguments})
    return Reply(content, "tool_use", **usage)


def result_text(block: dict[str, Any]) -> str:
    """The text of a tool_result block (a string, or a list of text blocks)."""
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def _rough_tokens(value: Any) -> int:
    return max(1, len(json.dumps(value)) // 4)


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}"}
    return JSONResponse(body, status_code=status, headers={"request-id": body["request_id"], **(headers or {})})


def check_request(body: dict[str, Any]) -> str | None:
    """The real API's validation that a tool-use loop can trip over; None when valid."""
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    messages = body["messages"]
    if not messages or messages[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    for i, (a, b) in enumerate(itertools.pairwise(messages)):
        if a["role"] == b["role"]:
            return f"messages: roles must alternate between \"user\" and \"assistant\" (messages.{i + 1})"
    for tool in body.get("tools", []):
        if not TOOL_NAME.match(tool.get("name", "")):
            return f"tools: name {tool.get('name')!r} does not match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        if tool.get("input_schema", {}).get("type") != "object":
            return f"tools.{tool['name']}.input_schema.type: Input should be 'object'"
    for i, message in enumerate(messages):
        for j, block in enumerate(message["content"] if isinstance(message["content"], list) else []):
            allowed = BLOCK_FIELDS.get(block.get("type"))
            if allowed is None:
                return f"messages.{i}.content.{j}.type: unknown content block type {block.get('type')!r}"
            extra = sorted(set(block) - allowed)
            if extra:
                return f"messages.{i}.content.{j}.{block['type']}.{extra[0]}: Extra inputs are not permitted"
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or not isinstance(message["content"], list):
            continue
        ids = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
        if not ids:
            continue
        following = messages[i + 1]["content"] if i + 1 < len(messages) else []
        answered = {b.get("tool_use_id") for b in following if isinstance(b, dict) and b.get("type") == "tool_result"}
        missing = [x for x in ids if x not in answered]
        if missing:
            return (f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    "in the next message.")
    return None


class FakeAnthropic:
    """Scripted Messages API on 127.0.0.1. Queue replies with `then(...)` (or `always(...)`); read `requests`."""

    def __init__(self, api_key: str = "sk-ant-test-key") -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._script: deque[Script] = deque()
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        self.chunk_size = 7  # characters per streamed text delta / JSON fragment
        self.fallback: Script | None = None  # answers every request once the queue is empty

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------
    def then(self, *replies: Script) -> FakeAnthropic:
        with self._lock:
            self._script.extend(replies)
        return self

    def always(self, reply: Script) -> FakeAnthropic:
        """Answer every request the queue does not cover (e.g. a function of the request)."""
        self.fallback = reply
        return self

    @property
    def unused(self) -> int:
        with self._lock:
            return len(self._script)

    # -- the API ---------------------------------------------------------
    async def _messages(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "invalid_request_error", "request body is not valid JSON")
        with self._lock:
            self.requests.append(RecordedRequest(body, dict(request.headers)))
        # The API takes the key as `x-api-key` or as a bearer token (what SDK 2.x sends).
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if (problem := check_request(body)) is not None:
            return _error(400, "invalid_request_error", problem)
        with self._lock:
            step = self._script.popleft() if self._script else self.fallback
        if step is None:
            return _error(400, "invalid_request_error", "fake anthropic: the test scripted no further response")
        if callable(step):
            step = step(body)
        if isinstance(step, Failure):
            return _error(step.status, step.error_type, step.message, step.headers)
        if isinstance(step, StreamFailure):
            if not body.get("stream"):
                return _error(529 if step.error_type == "overloaded_error" else 500, step.error_type, step.message)
            return StreamingResponse(self._broken_events(body, step), media_type="text/event-stream")
        message = self._message(body, step)
        if body.get("stream"):
            return StreamingResponse(self._events(message), media_type="text/event-stream",
                                     headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"})
        return JSONResponse(message, headers={"request-id": f"req_{uuid.uuid4().hex[:24]}"})

    def _message(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        input_tokens = reply.input_tokens if reply.input_tokens is not None else _rough_tokens(
            [body.get("system"), body["messages"], body.get("tools")])
        output_tokens = reply.output_tokens if reply.output_tokens is not None else _rough_tokens(reply.content)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": body["model"],
            "content": reply.content, "stop_reason": reply.stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

    async def _events(self, message: dict[str, Any]):
        def sse(event: str, data: dict[str, Any]) -> bytes:
            return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

        start = {**message, "content": [], "stop_reason": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        yield sse("message_start", {"type": "message_start", "message": start})
        yield sse("ping", {"type": "ping"})
        n = self.chunk_size
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": {"type": "text", "text": ""}})
                for i in range(0, len(block["text"]), n):
                    yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                      "delta": {"type": "text_delta", "text": block["text"][i:i + n]}})
                    await asyncio.sleep(0)
            elif block["type"] == "tool_use":
                yield sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
                encoded = json.dumps(block["input"])
                for i in range(0, len(encoded), n):
                    yield sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                        "type": "input_json_delta", "partial_json": encoded[i:i + n]}})
            yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
        yield sse("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                    "usage": {"output_tokens": message["usage"]["output_tokens"]}})
        yield sse("message_stop", {"type": "message_stop"})

    async def _broken_events(self, body: dict[str, Any], failure: StreamFailure):
        def sse(event: str, data: dict[str, Any]) -> bytes:
            return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()

        start = self._message(body, Reply([]))
        yield sse("message_start", {"type": "message_start", "message": {**start, "stop_reason": None}})
        if failure.partial_text:
            yield sse("content_block_start", {"type": "content_block_start", "index": 0,
                                              "content_block": {"type": "text", "text": ""}})
            yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": failure.partial_text}})
        yield sse("error", {"type": "error", "error": {"type": failure.error_type, "message": failure.message}})

    # -- lifecycle -------------------------------------------------------
    def start(self) -> FakeAnthropic:
        app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def run() -> None:
            async def serve() -> None:
                task = asyncio.create_task(self._server.serve())
                while not self._server.started and not task.done():
                    await asyncio.sleep(0.01)
                if self._server.started:
                    sock = self._server.servers[0].sockets[0]
                    self.port = sock.getsockname()[1]
                started.set()
                await task

            asyncio.run(serve())

        self._thread = threading.Thread(target=run, name="fake-anthropic", daemon=True)
        self._thread.start()
        if not started.wait(10) or self.port is None:
            raise RuntimeError("the fake Anthropic server did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
