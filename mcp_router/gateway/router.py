"""The router: one MCP front door over every backend server.

It is a low-level `mcp.server.Server` (the 2.x SDK has no mount()) whose
handlers consult a catalogue built from the backends' own listings:

- names stay as the backends chose them (`analyze_experiment_data`,
  `semantic_experiment_search`); only a name two backends share is prefixed
  with the server name, so names are unique and stable;
- a call is forwarded to its backend, the backend's identity is stripped from
  the result, and every call is logged (stderr) and counted (Prometheus);
- an unknown tool is a JSON-RPC -32602 error, as the spec asks;
- `tools/list` shows the router's profile: `full` (every tool) or `core` (CORE_TOOLS, the journey
  from design to decision, and `find_tools`); every tool stays callable by name whatever the
  profile, and `find_tools` finds any of them by meaning. A client may ask for another profile in
  the request's `_meta` (PROFILE_META): a stdio front attached to a stack reads the stack's full list.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.caching import CacheHint
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPError

from mcp_router.gateway import metrics
from mcp_router.gateway.backends import PROFILE_META, Backend
from mcp_router.gateway.conformance_probes import ConformanceProbes
from mcp_router.gateway.input_required import (
    PROMPT_QUESTIONS,
    PromptQuestion,
    complete_prompt,
    confirm_call,
    elicitation_mode,
)
from mcp_router.gateway.tool_search import ToolIndex
from schemas.errors import ConfirmationRequired
from schemas.logs import log_per_call
from schemas.refusals import kind_of

log = logging.getLogger("neonblue.router")

Profile = Literal["core", "full"]
PROFILES: tuple[Profile, ...] = ("core", "full")
# The journey an agent walks, in order: plan and create, start, assign, record, analyse, recommend,
# remember, decide; plus the registry's list, the health check and the way to every other tool.
CORE_TOOLS: tuple[str, ...] = (
    "find_tools", "list_experiments", "plan_experiment", "create_experiment", "start_experiment", "get_variant",
    "record_result", "analyze_experiment_performance", "recommend_experiment_optimization",
    "semantic_experiment_search", "stop_experiment", "router_status",
)

# Caching hints (2026-07-28, SEP-2549) on the list results: the catalogue changes only when the backends
# reconnect, so a client may reuse a list for a minute; private, as the lists sit behind the server's auth.
LIST_CACHE_HINT = CacheHint(ttl_ms=60_000, scope="private")
CACHE_HINTS = {method: LIST_CACHE_HINT for method in ("tools/list", "prompts/list", "resources/list",
                                                      "resources/templates/list")}
_CALL_LOG = "tool=%s backend=%s outcome=%s duration_ms=%.2f"  # one line per call, at INFO
_LOG_LINE = 0  # the line number a call's record names (the record is made without a stack walk)
MAX_TOOL_NAME = 64
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Route:
    backend: Backend
    original_name: str


@dataclass
class Catalogue:
    tools: dict[str, types.Tool] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    prompts: dict[str, tuple[types.Prompt, Route]] = field(default_factory=dict)
    resources: dict[str, tuple[types.Resource, Backend]] = field(default_factory=dict)
    templates: list[tuple[types.ResourceTemplate, Backend]] = field(default_factory=list)


def public_name(server: str, name: str, collides: bool) -> str:
    """The router-wide name of a backend tool or prompt (≤64 chars, [A-Za-z0-9_.-])."""
    if not collides:
        return name
    prefixed = f"{server}_{name}"
    if len(prefixed) > MAX_TOOL_NAME:
        # Truncate, then keep it unique and stable with a short hash of the full name.
        digest = hashlib.sha1(prefixed.encode()).hexdigest()[:8]
        prefixed = f"{prefixed[:MAX_TOOL_NAME - 9]}_{digest}"
    return prefixed


def build_catalogue(backends: list[Backend]) -> Catalogue:
    cat = Catalogue()
    tool_counts = Counter(t.name for b in backends for t in b.tools)
    prompt_counts = Counter(p.name for b in backends for p in b.prompts)
    for backend in backends:
        for tool in backend.tools:
            name = public_name(backend.name, tool.name, tool_counts[tool.name] > 1)
            if not _NAME_OK.match(name) or name in cat.tools:
                raise ValueError(f"tool name {name!r} from backend {backend.name} is invalid or not unique")
            cat.tools[name] = tool.model_copy(update={"name": name})
            cat.routes[name] = Route(backend, tool.name)
        for prompt in backend.prompts:
            name = public_name(backend.name, prompt.name, prompt_counts[prompt.name] > 1)
            cat.prompts[name] = (prompt.model_copy(update={"name": name}), Route(backend, prompt.name))
        for resource in backend.resources:
            cat.resources.setdefault(str(resource.uri), (resource, backend))
        for template in backend.resource_templates:
            cat.templates.append((template, backend))
    return cat


class Router:
    """Dispatches MCP requests to backends; owns their connections."""

    def __init__(self, backends: list[Backend], *, profile: Profile = "full") -> None:
        self.backends = {b.name: b for b in backends}
        self.services: dict[str, Any] = {}  # in-process services, shared with the stream processor
        self.catalogue = Catalogue()
        self.profile: Profile = profile
        self.tool_index = ToolIndex()  # find_tools' embeddings of the catalogue, built on first use
        # Prompts whose missing context is asked for, and the conformance suite's probes (off unless enabled).
        self.prompt_questions: dict[str, tuple[PromptQuestion, ...]] = dict(PROMPT_QUESTIONS)
        self.probes: ConformanceProbes | None = None
        self.server: Server[Any] = Server(
            "neonblue",
            version="0.1.0",
            instructions=(
                "NeonBlue runs experiments (A/B, prompt and model tests): create and start experiments, "
                "assign users, record results, analyse with trustworthy statistics, search past experiments "
                "by meaning, and get recommendations. Start with list_experiments; find_tools finds any "
                "other tool by what you want to do (every tool is callable by name, listed or not)."
            ),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            cache_hints=CACHE_HINTS,  # type: ignore[arg-type]
        )
        # The requestState of an input-required round (a confirmation, a prompt's question) is sealed on its
        # way out and verified on its way back, so a client cannot forge what it was asked. The key lives in
        # this process: a restart asks again.
        self.server.middleware.append(RequestStateBoundary(RequestStateSecurity.ephemeral(), default_audience="neonblue"))

    def enable_probes(self, probes: ConformanceProbes) -> None:
        """Serve the conformance suite's diagnostic tools and prompt (`neonblue serve` with
        NEONBLUE_CONFORMANCE_PROBES=1; never in a normal deployment)."""
        self.probes = probes
        self.prompt_questions.update(probes.prompt_questions)

    def refresh(self) -> None:
        self.catalogue = build_catalogue(list(self.backends.values()))

    def backend(self, name: str) -> Backend:
        return self.backends[name]

    # -- handlers -----------------------------------------------------------
    def listed_tools(self, profile: Profile | None = None) -> list[types.Tool]:
        """The tools `tools/list` shows for a profile (the router's own by default)."""
        if (profile or self.profile) == "full":
            return list(self.catalogue.tools.values())
        return [self.catalogue.tools[name] for name in CORE_TOOLS if name in self.catalogue.tools]

    async def _list_tools(self, ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        asked = ((getattr(params, "meta", None) or {}) if params is not None else {}).get(PROFILE_META)
        tools = self.listed_tools(asked if asked in PROFILES else None)
        return types.ListToolsResult(tools=tools + (self.probes.tools if self.probes is not None else []))

    async def _call_tool(self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
                         ) -> types.CallToolResult | types.InputRequiredResult:
        if self.probes is not None and params.name in self.probes.tool_names:
            return await self.probes.call_tool(ctx, params)
        arguments = params.arguments or {}
        if arguments.get("confirm") is True and elicitation_mode(ctx) is not None:
            # The person behind this client can be asked: the model's own confirm=true does not stand in for them.
            arguments = {key: value for key, value in arguments.items() if key != "confirm"}
        result = await self.call_tool(params.name, arguments)
        if result.is_error and kind_of(result) == ConfirmationRequired.kind:
            # A destructive call waits for the user's go-ahead: ask them when the client can show it.
            return await confirm_call(ctx, params, result,
                                      lambda extra: self.call_tool(params.name, {**arguments, **extra}))
        return result

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        route = self.catalogue.routes.get(name)
        if route is None:
            metrics.TOOL_CALLS.labels(tool="unknown", outcome="unknown_tool").inc()
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")
        started = time.perf_counter()
        result = await route.backend.call_tool(route.original_name, arguments)
        elapsed = time.perf_counter() - started
        outcome = "error" if result.is_error else "ok"
        metrics.record_call(name, outcome, elapsed)
        if log.isEnabledFor(logging.INFO):
            # Not Logger.info: its stack walk (findCaller) and LogRecord's per-record lookups cost as much as
            # the rest of the router's dispatch on every call (bench/bench_router.py); the record is made by
            # the log writer thread.
            log_per_call(log, logging.INFO, _CALL_LOG, (name, route.backend.name, outcome, elapsed * 1000),
                         "call_tool", __file__, _LOG_LINE)
        return result

    async def _list_prompts(self, ctx: ServerRequestContext[Any], params: Any) -> types.ListPromptsResult:
        prompts = [p for p, _ in self.catalogue.prompts.values()]
        return types.ListPromptsResult(prompts=prompts + (self.probes.prompts if self.probes is not None else []))

    async def _get_prompt(self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
                          ) -> types.GetPromptResult | types.InputRequiredResult:
        probe = self.probes is not None and params.name in self.probes.prompt_names
        entry = self.catalogue.prompts.get(params.name)
        if entry is None and not probe:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        arguments = await complete_prompt(ctx, params, self.prompt_questions.get(params.name, ()))
        if isinstance(arguments, types.InputRequiredResult):
            return arguments  # the prompt needs context the user can give: asked first
        if probe:
            return self.probes.get_prompt(params.name, arguments)
        _, route = entry
        return await route.backend.get_prompt(route.original_name, arguments)

    async def _list_resources(self, ctx: ServerRequestContext[Any], params: Any) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[r for r, _ in self.catalogue.resources.values()])

    async def _list_resource_templates(self, ctx: ServerRequestContext[Any], params: Any) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[t for t, _ in self.catalogue.templates])

    async def _read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        entry = self.catalogue.resources.get(uri)
        if entry is not None:
            return await entry[1].read_resource(uri)
        for template, backend in self.catalogue.templates:
            if _template_matches(template.uri_template, uri):
                return await backend.read_resource(uri)
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown resource: {uri}")

    def status(self) -> list[dict[str, Any]]:
        return [b.status() for b in self.backends.values()]


def _template_matches(template: str, uri: str) -> bool:
    pattern = re.escape(template)
    pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", pattern)
    return re.fullmatch(pattern, uri) is not None


@asynccontextmanager
async def connected(router: Router):
    """Connect every backend (failures mark a backend down), build the catalogue."""
    async with AsyncExitStack() as stack:
        for backend in router.backends.values():
            await backend.connect(stack)
        router.refresh()
        yield router
