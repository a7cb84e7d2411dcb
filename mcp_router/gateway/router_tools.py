"""The router's own tools: router_status, find_tools, classify_event, route_query."""

from __future__ import annotations

import json
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field, ValidationError

from mcp_router.gateway.query_routing import QueryRouter, RoutePlan
from mcp_router.gateway.tool_search import headline
from mcp_servers.annotations import READ_ONLY
from mcp_servers.tool_server import ToolServer
from schemas.errors import InvalidInput
from schemas.events import Event, event_json_schema
from schemas.routing import DataClassification, classify_event


class BackendHealth(BaseModel):
    name: str
    kind: str
    healthy: bool
    circuit: str
    tools: int
    calls: int
    errors: int
    tool_errors: int
    connect_error: str | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class RouterStatus(BaseModel):
    healthy: bool = Field(description="True when every backend is healthy.")
    backends: list[BackendHealth]
    tools: int
    stream: dict[str, Any] | None = Field(default=None, description="Stream processor figures when it runs here.")
    interactions: list[dict[str, Any]] = Field(
        default_factory=list, description="Flagged interacting experiment pairs from the intelligence server's latest "
        "analyses and scan (find_experiment_interactions refreshes them).")


class ToolMatch(BaseModel):
    name: str = Field(description="Call the tool by this name, listed in this profile or not.")
    description: str = Field(description="What it does, in one line.")
    score: float = Field(description="Cosine similarity of the question to the tool's closest text (word overlap "
                         "when the embedding model is unavailable); higher is closer.")
    listed: bool = Field(description="True when the current profile's tools/list shows it.")
    input_schema: dict[str, Any] = Field(description="The tool's inputSchema: its arguments.")


class ToolMatches(BaseModel):
    query: str
    profile: str = Field(description="The router's tool profile: core or full.")
    method: str = Field(description="embedding (all-MiniLM-L6-v2) or keywords (the fallback without the model).")
    matches: list[ToolMatch]


def build_router_tools(router: Any, stream_stats: Any = None) -> MCPServer:
    mcp = ToolServer("router")

    @mcp.tool(annotations=READ_ONLY)
    async def router_status() -> RouterStatus:
        """Health of every backend server: up/down, circuit state, calls, errors and latency percentiles.

        Use it when a tool call failed with "backend ... is unavailable", or to check the stack.
        Also lists the flagged interacting experiment pairs the intelligence server knows of.
        """
        backends = [BackendHealth(**s) for s in router.status()]
        interactions: list[dict[str, Any]] = []
        if "intelligence" in router.backends:
            try:  # the cached flags only (refresh=false): status never waits for a scan
                scan = await router.backends["intelligence"].call("find_experiment_interactions", {"refresh": False})
                interactions = scan.get("flagged") or []
            except Exception:  # noqa: BLE001 - status answers whatever one backend does
                interactions = []
        return RouterStatus(
            healthy=all(b.healthy for b in backends),
            backends=backends,
            tools=len(router.catalogue.tools),
            stream=stream_stats() if stream_stats else None,
            interactions=interactions,
        )

    @mcp.tool(annotations=READ_ONLY)
    async def find_tools(
        query: Annotated[str, Field(min_length=2, max_length=500, description="What you want to do, in words.")],
        limit: Annotated[int, Field(ge=1, le=20, description="How many tools to return.")] = 5,
    ) -> ToolMatches:
        """Find the tool for a task among ALL of NeonBlue's tools, by meaning, best first, with its arguments.

        Use it when no listed tool fits: the core profile lists a dozen tools, the catalogue has
        over forty (traffic allocation, guardrails, forecasts, SQL, journeys, decisions...), and
        every one can be called by name. Returns name, one-line description, input schema and score.
        Example: {"query": "split traffic toward the winning arm", "limit": 3} -> allocate_traffic first.
        """
        tools = router.catalogue.tools
        ranked = await router.tool_index.search(tools, query, limit)
        listed = {tool.name for tool in router.listed_tools()}
        return ToolMatches(query=query, profile=router.profile, method=router.tool_index.method, matches=[
            ToolMatch(name=name, description=headline(tools[name]), score=score, listed=name in listed,
                      input_schema=tools[name].input_schema)
            for name, score in ranked])

    # Named classify_event for agents; the Python name avoids shadowing the rule function.
    @mcp.tool(name="classify_event", annotations=READ_ONLY)
    async def classify_event_tool(
        event: Annotated[dict[str, Any], Field(description="One event in the Kafka event schema (see schema://event).")],
    ) -> DataClassification:
        """Classify an event the way the stream processor does: data type, priority, target servers, strategy, retention.

        Example: {"event": {"event_id": "e1", "event_type": "conversion", "timestamp": "2026-11-01T10:00:00Z",
        "user_id": "u1", "experiment_id": "checkout-1step"}}
        """
        try:
            parsed = Event.model_validate(event)
        except ValidationError as exc:
            raise InvalidInput(f"not a valid event: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        return classify_event(parsed)

    query_router = QueryRouter(router)

    @mcp.tool(annotations=READ_ONLY)
    async def route_query(
        query: Annotated[str, Field(min_length=3, max_length=2000, description="A natural-language request.")],
    ) -> RoutePlan:
        """Map a natural-language request to the tool calls that answer it, with arguments, and say why.

        It does not run them. The intent is found by meaning (nearest labelled examples, with a
        calibrated confidence); experiments, metrics, segments, users, numbers and periods are
        resolved against the live data; every call's arguments are validated against its tool's
        schema. Values it had to assume are in `assumptions`, values it needs in `missing`; below
        its confidence floor it plans nothing and lists what it can do (`alternatives`).
        Example: "is the checkout experiment significant?" → intelligence /
        analyze_experiment_performance {"experiment": "checkout-1step"}.
        """
        return await query_router.plan(query)

    @mcp.resource("schema://event", name="event_schema", mime_type="application/schema+json")
    def event_schema() -> str:
        """JSON Schema of the Kafka events NeonBlue ingests (topics experiments_events, user_events, ...)."""
        return json.dumps(event_json_schema(), indent=2)

    @mcp.resource("experiment://{key}", name="experiment", mime_type="application/json")
    async def experiment_resource(key: str) -> str:
        """One experiment from the registry: definition, variants, status."""
        backend = router.backends.get("postgres")
        if backend is None:
            raise InvalidInput("the postgres server is not part of this router")
        return json.dumps(await backend.call("get_experiment", {"experiment": key}), indent=2, default=str)

    @mcp.prompt(name="analyze_experiment")
    def analyze_experiment_prompt(experiment: str) -> str:
        """Analyse one experiment end to end and decide what to do."""
        return (
            f"Analyse experiment {experiment!r} with NeonBlue. Call analyze_experiment_performance first; "
            "report the verdict with the rule that produced it, each metric's lift with its confidence interval, "
            "the SRM check and guardrails. Then call recommend_experiment_optimization and list the top actions "
            "with their evidence. Quote numbers exactly as the tools return them."
        )

    @mcp.prompt(name="design_experiment")
    def design_experiment_prompt(goal: str, primary_metric: str = "", baseline: str = "",
                                 traffic_per_day: str = "") -> str:
        """Design a new experiment for a goal: metrics, guardrails, sample size and duration.

        Without a primary metric the router asks the user for it first (when the client can be asked)."""
        metric = (f"Primary metric: {primary_metric} (the user's choice: keep it)." if primary_metric else
                  "Primary metric: not given. Ask the user which metric decides the experiment before planning; "
                  "do not pick one for them.")
        return (
            f"Design an experiment for this goal: {goal}. {metric} Baseline: {baseline or 'unknown'}; "
            f"traffic per day: {traffic_per_day or 'unknown'}. Search similar past experiments with "
            "semantic_experiment_search, call predict_experiment_outcome and plan_experiment, then propose "
            "create_experiment arguments (variants with weights, primary metric, guardrails with directions)."
        )

    return mcp
