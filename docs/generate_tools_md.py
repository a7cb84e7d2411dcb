"""Write docs/TOOLS.md from a running stack: every tool's description, its input fields, and the
output of one real example call (nothing here is typed by hand; rerun after changing a tool).

    neonblue up && neonblue demo --scale 0.3      # a stack with data
    python docs/generate_tools_md.py              # → docs/TOOLS.md
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_router.runtime.serving import resolve_token
from mcp_router.runtime.stack import Stack
from schemas.settings import Settings

# Keys are permanent in the registry, so each generation creates its own throwaway experiment.
KEY = f"docs-example-{datetime.now(UTC):%Y%m%d%H%M}"
EXPERIMENT = {"key": KEY, "name": "Docs example: shorter signup form", "type": "ui",
              "hypothesis": "Fewer fields raise signup completion.", "primary_metric": {"name": "conversion"},
              "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "short_form", "weight": 0.5}]}

# Example calls, in an order where each prepares the next (docs-example is created, started, stopped).
EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("router_status", {}),
    ("find_tools", {"query": "split traffic toward the winning arm", "limit": 3}),
    ("route_query", {"query": "Show me experiments similar to our checkout optimization that increased conversion by more than 20%"}),
    ("classify_event", {"event": {"event_id": "e1", "event_type": "conversion", "timestamp": "2026-11-01T10:00:00Z",
                                  "user_id": "u1", "experiment_id": "checkout-1step", "variant": "one_step"}}),
    ("create_experiment", {"experiment": EXPERIMENT}),
    ("update_experiment", {"experiment": KEY, "changes": {"description": "Signup form: 7 fields vs 4."}}),
    ("start_experiment", {"experiment": KEY}),
    ("get_experiment", {"experiment": "checkout-1step"}),
    ("list_experiments", {"status": ["running"], "limit": 5}),
    ("get_variant", {"experiment": KEY, "user_id": "user-42", "attributes": {"device": "mobile"}}),
    ("predict_user_assignment", {"experiment": KEY, "user_id": "user-43"}),
    ("record_result", {"experiment": KEY, "user_id": "user-42", "metric": "conversion", "value": 1}),
    ("analyze_experiment_data", {"experiment": KEY}),
    ("get_experiment_summary", {"experiment": "checkout-1step"}),
    ("set_variant_weights", {"experiment": KEY, "weights": {"control": 0.4, "short_form": 0.6}, "confirm": True,
                             "reason": "Docs example: favour the short form."}),
    ("record_decision", {"decision": {"experiment": KEY, "action": "note", "reasoning": "Docs example.",
                                      "confidence": 0.5, "actor": "docs"}}),
    ("list_decisions", {"experiment": "checkout-1step", "limit": 3}),
    ("postgres_query", {"sql": "SELECT key, status FROM neonblue.experiments ORDER BY key LIMIT 5"}),
    ("describe_schema", {}),
    ("stop_experiment", {"experiment": KEY}),
    ("archive_experiment", {"experiment": KEY, "confirm": True, "reason": "Docs example: done."}),
    ("ingest_events", {"events": [{"event_id": "docs-1", "event_type": "page_view", "timestamp": "2026-11-01T10:00:00Z",
                                   "user_id": "u1"}], "idempotency_token": "docs-example-1"}),
    ("get_variant_statistics", {"experiment": "checkout-1step", "metrics": ["conversion", "revenue"], "cuped": True}),
    ("generate_analytics_insights", {"experiment": "checkout-1step", "metrics": ["conversion"]}),
    ("predict_experiment_trends", {"experiment": "checkout-1step", "metric": "conversion", "days_ahead": 3}),
    ("get_exposures_by_period", {"experiment": "checkout-1step", "boundaries": [  # the demo's last two weeks, by week
        f"{datetime.now(UTC) - timedelta(days=days):%Y-%m-%dT00:00:00Z}" for days in (14, 7, -1)]}),
    ("get_segment_statistics", {"experiment": "paywall-personalised", "metric": "conversion"}),
    ("get_interaction_statistics", {"experiment": "checkout-1step", "metric": "conversion", "limit": 3}),
    ("clickhouse_query", {"sql": "SELECT event_type, count() AS n FROM events GROUP BY event_type ORDER BY n DESC"}),
    ("list_tables", {}),
    ("store_experiment_context", {"experiment": {"key": "docs-past-1", "name": "Guest checkout",
                                                 "hypothesis": "No account needed raises conversion.", "lift": 0.06,
                                                 "p_value": 0.01, "primary_metric": "conversion"}}),
    ("semantic_experiment_search", {"query": "reduce checkout steps on mobile", "limit": 3}),
    ("store_user_journey", {"journey": {"journey_id": "docs-j1", "user_id": "u1",
                                        "steps": ["landing", "product", "cart", "purchase"], "device": "mobile",
                                        "session_minutes": 15, "outcome": "purchase"}}),
    ("find_similar_user_journeys", {"query": "mobile user adds to cart then buys", "limit": 3}),
    ("store_optimization_pattern", {"pattern": {"pattern_id": "docs-p1", "optimization_type": "checkout",
                                                "description": "Remove optional fields from checkout forms.",
                                                "improvement": 0.08, "outcome": "success"}}),
    ("search_optimization_patterns", {"query": "simplify checkout form", "limit": 3}),
    ("collection_stats", {}),
    ("sync_from_registry", {}),
    ("analyze_experiment_performance", {"experiment": "checkout-1step"}),
    ("recommend_experiment_optimization", {"experiment": "homepage-aa"}),
    ("predict_experiment_outcome", {"experiment_config": {
        "name": "Single-page checkout on mobile", "hypothesis": "Fewer checkout steps raise mobile conversion.",
        "primary_metric": {"name": "conversion"}, "baseline": {"mean": 0.2}, "traffic_per_day": 3000}}),
    ("plan_experiment", {"goal": "Raise signup conversion with a shorter form", "baseline": {"mean": 0.1},
                         "mde": 0.05, "traffic_per_day": 5000}),
    ("allocate_traffic", {"experiment": "onboarding-bandit", "dry_run": True}),
    ("evaluate_guardrails", {"experiment": "pricing-premium"}),
    ("run_autopilot", {"experiment": "pricing-premium", "dry_run": True}),
    ("predict_user_behavior", {"user_id": "u1"}),
    ("analyze_segment_effects", {"experiment": "paywall-personalised"}),
    ("find_experiment_interactions", {}),
    ("personalize_experiment_experience", {"experiment": "paywall-personalised", "context": {"device": "mobile"}}),
    ("plot_experiment", {"experiment": "checkout-1step"}),
]


def fields(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    out = []
    for name, spec in props.items():
        kind = spec.get("type") or ("object" if "$ref" in spec else "/".join(
            str(x.get("type", "object")) for x in spec.get("anyOf", [])) or "any")
        out.append(f"`{name}`{'' if name in required else '?'} ({kind})")
    return ", ".join(out) or "none"


def clip(text: str, limit: int = 1600) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"


async def main(output: Path) -> None:
    settings = Settings()
    stack = Stack(settings)
    token = resolve_token(settings, create=False)
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=300)
    async with Client(streamable_http_client(f"{stack.owner_url}/mcp", http_client=http)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        done: dict[str, str] = {}
        for name, args in EXAMPLES:
            if name not in tools:
                continue
            result = await client.call_tool(name, args)
            if any(getattr(c, "type", "") == "image" for c in result.content):
                shown = f"(a PNG image, plus) {json.dumps(result.structured_content, indent=1, default=str)}"
            elif result.structured_content is not None:
                shown = json.dumps(result.structured_content, indent=1, default=str)
            else:
                shown = " ".join(getattr(c, "text", "") for c in result.content)
            done[name] = f"{'isError: ' if result.is_error else ''}{clip(shown)}"
        lines = ["# NeonBlue tools", "",
                 f"{len(tools)} tools behind one router. Generated by `docs/generate_tools_md.py` from a running "
                 "stack after `neonblue demo`: every example output below is a real call's answer (clipped).", ""]
        for name in sorted(tools):
            tool = tools[name]
            ann = tool.annotations
            hints = []
            if ann is not None:
                hints += ["read-only"] if ann.read_only_hint else ["writes"]
                hints += ["destructive"] if ann.destructive_hint else []
                hints += ["idempotent"] if ann.idempotent_hint else []
            lines += [f"## `{name}`", "", f"*{', '.join(hints)}* — inputs: {fields(tool.input_schema)}", "",
                      (tool.description or "").strip(), ""]
            example = next((a for n, a in EXAMPLES if n == name), None)
            if example is not None and name in done:
                lines += ["Example call:", "", "```json", json.dumps(example, indent=1), "```", "", "Output:", "",
                          "```json", done[name], "```", ""]
        output.write_text("\n".join(lines))  # noqa: ASYNC240 - written once at the end
    await http.aclose()
    missing = sorted(set(tools) - {n for n, _ in EXAMPLES})
    print(f"wrote {output} ({len(done)} examples; tools without an example: {missing or 'none'})", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(Path(__file__).resolve().parent / "TOOLS.md"))
