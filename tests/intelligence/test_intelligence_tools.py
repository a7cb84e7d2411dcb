"""The intelligence tools through the router: catalogue, planning, charts, bandit allocation under a
policy, recommendations grounded in memory, clear errors, and the server alone over stdio."""

from __future__ import annotations

import base64
import os
import sys

from mcp import Client, StdioServerParameters

from mcp_servers import stats
from stream_processor.generator import ArmTruth

TOOLS = {
    "analyze_experiment_performance", "recommend_experiment_optimization", "predict_experiment_outcome",
    "plan_experiment", "allocate_traffic", "evaluate_guardrails", "run_autopilot", "predict_user_behavior",
    "plot_experiment", "analyze_segment_effects", "find_experiment_interactions", "personalize_experiment_experience",
}


async def test_catalogue_planning_chart_and_grounded_recommendations(intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        plan = await kit.call(client, "plan_experiment", {
            "goal": "raise mobile checkout conversion with a one-step checkout",
            "baseline": {"mean": 0.08}, "mde": 0.05, "traffic_per_day": 6000})
        # The draft is a valid registry experiment as it is.
        created = await kit.call(client, "create_experiment", {"experiment": plan["create_experiment_draft"]})
        seed = kit.Seeder(router, client)
        await seed.experiment("chart", description="One-step checkout on mobile",
                              hypothesis="Fewer checkout steps raise conversion")
        await seed.traffic("chart", kit.arms(0.10, 0.125), users=20_000)
        await kit.call(client, "store_optimization_pattern", {"pattern": {
            "optimization_type": "checkout_flow", "outcome": "success", "improvement": 0.12, "metric": "conversion",
            "description": "Reduced checkout steps from three to one on mobile; conversion rose"}})
        chart = await client.call_tool("plot_experiment", {"experiment": "chart"})
        advice = await kit.call(client, "recommend_experiment_optimization", {"experiment": "chart"})
        unknown = await client.call_tool("analyze_experiment_performance", {"experiment": "no-such-experiment"})
        bad = await client.call_tool("analyze_experiment_performance",
                                     {"experiment": "chart", "options": {"alpha": 2}})

    assert TOOLS <= set(listed)
    assert all(listed[name].output_schema for name in TOOLS)
    assert listed["allocate_traffic"].annotations.destructive_hint
    assert listed["predict_experiment_outcome"].annotations.read_only_hint
    # Planning: the engine's own sample size, checkout guardrails, a valid draft.
    expected = stats.sample_size(0.05, 0.08, None, target_power=0.8, alpha=0.05)
    assert plan["sample_size_per_variant"] == expected.n_per_variant
    assert plan["duration_days"] == -(-2 * expected.n_per_variant // 6000)
    assert plan["sample_size_per_variant_sequential"] > plan["sample_size_per_variant"]
    assert plan["primary_metric"]["name"] == "conversion"
    assert {"revenue", "error_rate", "latency_ms"} <= {g["name"] for g in plan["guardrail_metrics"]}
    assert created["status"] == "draft" and created["min_sample_size"] == expected.n_per_variant
    # Chart: a PNG image plus the plotted numbers; the band covers the planted +25% at the end.
    assert not chart.is_error
    image = next(c for c in chart.content if c.type == "image")
    assert image.mime_type == "image/png" and base64.b64decode(image.data)[:8] == b"\x89PNG\r\n\x1a\n"
    summary = chart.structured_content
    series = summary["series"][0]
    assert series["variant"] == "treatment" and len(series["days"]) >= 14
    assert series["band_low"][-1] < 0.25 < series["band_high"][-1]
    assert series["band_high"][-1] - series["band_low"][-1] < series["band_high"][3] - series["band_low"][3]
    assert summary["daily_source"] and "ClickHouse" in summary["daily_source"]
    # Recommendations: ship first, grounded in the similar successful pattern, audited.
    first = advice["actions"][0]
    assert first["action"] == "ship" and first["variant"] == "treatment" and first["decision_id"]
    assert first["supporting_patterns"] and first["supporting_patterns"][0]["optimization_type"] == "checkout_flow"
    # Errors the model can read.
    assert unknown.is_error and "no-such-experiment" in unknown.content[0].text
    assert bad.is_error and "alpha" in bad.content[0].text


async def test_bandit_weights_are_applied_in_staging_and_audited(intel_settings, open_stack, kit) -> None:
    truths = {"control": ArmTruth(0.10, 20.0), "t1": ArmTruth(0.10, 20.0), "t2": ArmTruth(0.14, 20.0)}
    async with open_stack(intel_settings(environment="staging")) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("three-way", weights=(0.34, 0.33, 0.33))
        await seed.traffic("three-way", truths, users=9_000, weights=(0.34, 0.33, 0.33))
        proposal = await kit.call(client, "allocate_traffic", {"experiment": "three-way", "dry_run": True})
        applied = await kit.call(client, "allocate_traffic", {"experiment": "three-way", "confirm": True,
                                                              "reason": "t2 leads"})
        experiment = await kit.call(client, "get_experiment", {"experiment": "three-way", "include_change_log": True})
        after = await kit.call(client, "analyze_experiment_performance", {"experiment": "three-way"})
        decisions = await kit.call(client, "list_decisions", {"experiment": "three-way"})

    assert not proposal["applied"] and "dry_run=true" in proposal["why"]
    weights = applied["proposed_weights"]
    assert applied["applied"] and applied["updated"]
    assert weights["t2"] > 0.8 and min(weights.values()) >= applied["min_weight"] - 1e-4
    assert abs(sum(weights.values()) - 1) < 1e-9
    assert applied["min_weight"] == 0.15 / 3  # staging exploration rate spread over three arms
    assert {v["key"]: v["weight"] for v in experiment["variants"]} == weights
    assert experiment["change_log"][0]["actor"] == "autopilot"
    # Users exposed before the change split by the old weights: no false SRM afterwards.
    assert not after["srm"]["flagged"]
    audit = next(d for d in decisions["items"] if d["action"] == "reallocate_weights")
    assert audit["applied"] and audit["actor"] == "autopilot"
    assert audit["inputs"]["proposed_weights"] == weights and audit["inputs"]["policy"]["environment"] == "staging"


async def test_the_server_alone_over_stdio(intel_settings, pg_dsn, tmp_path) -> None:
    env = {**os.environ, "NEONBLUE_HOME": str(tmp_path / "home"), "DATABASE_URL": pg_dsn,
           "EMBEDDING_PROVIDER": "chroma-default", "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.intelligence"], env=env)
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        plan = await client.call_tool("plan_experiment", {"goal": "improve support answers with a new prompt",
                                                          "baseline": {"mean": 0.6}, "mde": 0.05, "traffic_per_day": 800})
    assert names == TOOLS
    assert not plan.is_error
    assert plan.structured_content["primary_metric"]["name"] == "resolution_rate"


async def test_it_works_the_same_with_the_registry_in_another_process(intel_settings, pg_dsn, chroma_path, kit) -> None:
    from mcp_router.runtime.serving import open_router
    from mcp_servers.chroma import build_server as build_chroma_server
    from mcp_servers.chroma import open_service as open_chroma

    settings = intel_settings(environment="development")
    registry = StdioServerParameters(command=sys.executable, args=["-m", "mcp_servers.postgres"],
                                     env={**os.environ, "DATABASE_URL": pg_dsn, "LOG_LEVEL": "WARNING"})
    async with open_chroma(settings, path=chroma_path) as chroma, open_router(
            settings, targets={"postgres": registry, "chromadb": build_chroma_server(chroma)}) as router, \
            Client(router.server) as client:
        assert router.backends["postgres"].kind == "stdio"
        seed = kit.Seeder(router, client)
        await seed.experiment("remote-registry")
        await seed.traffic("remote-registry", kit.arms(0.10, 0.125), users=20_000)
        result = await kit.call(client, "analyze_experiment_performance", {"experiment": "remote-registry"})
        acted = await kit.call(client, "run_autopilot", {"experiment": "remote-registry", "confirm": True,
                                                         "reason": "ship the winner"})
        experiment = await kit.call(client, "get_experiment", {"experiment": "remote-registry"})

    assert result["verdict"]["verdict"] == "ship" and result["decision_id"]
    assert acted["action"] == "ship" and acted["applied"]  # development may ship automatically
    assert experiment["status"] == "concluded" and experiment["winner"] == "treatment"
