"""A compact core and discovery by meaning (issue 19): the `core` profile lists a dozen tools for the
experiment journey plus find_tools; find_tools finds any tool of the full catalogue by meaning; a
tool the profile does not list is still called by name, here and through a stdio-style front
attached to a stack over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp_calls import readable  # type: ignore[import-not-found]

from mcp_router.gateway.backends import PROFILE_META
from mcp_router.gateway.router import CORE_TOOLS
from mcp_router.runtime.serving import open_attached_router, open_router
from schemas.settings import Settings

# Typical questions and the tool that answers each: it must come in the top 3.
QUESTIONS = {
    "split traffic toward the winning arm": "allocate_traffic",
    "how many users per variant": "get_variant_statistics",
    "which past experiments are like this one": "semantic_experiment_search",
    "assign a user to a variant": "get_variant",
    "record a conversion for a user": "record_result",
    "is the treatment significantly better than control": "analyze_experiment_performance",
    "how long should the test run and how many users do I need": "plan_experiment",
    "stop the experiment and declare a winner": "stop_experiment",
    "check that guardrail metrics did not degrade": "evaluate_guardrails",
    "draw a chart of the lift over time": "plot_experiment",
    "forecast the metric for the next days": "predict_experiment_trends",
    "show the audit trail of decisions": "list_decisions",
    "run a read-only SQL query on the raw events": "clickhouse_query",
}


def test_the_default_profile_is_full_and_the_setting_reads_core(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).tool_profile == "full"
    monkeypatch.setenv("NEONBLUE_TOOL_PROFILE", "core")
    assert Settings(_env_file=None).tool_profile == "core"
    assert len(CORE_TOOLS) == len(set(CORE_TOOLS)) == 12


def test_serve_and_claude_config_take_a_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from mcp_router.apps.cli import cli

    monkeypatch.setenv("NEONBLUE_HOME", str(tmp_path))
    monkeypatch.setenv("NEONBLUE_TOOL_PROFILE", "full")  # so the option's setting is undone after the test
    assert "NEONBLUE_TOOL_PROFILE" not in CliRunner().invoke(cli, ["claude-config"]).output
    out = CliRunner().invoke(cli, ["claude-config", "--profile", "core"])
    assert out.exit_code == 0, out.output
    assert '"NEONBLUE_TOOL_PROFILE": "core"' in out.output  # Claude Desktop's `serve` lists the core
    assert "--profile [core|full]" in CliRunner().invoke(cli, ["serve", "--help"]).output


@readable
async def test_core_lists_a_dozen_tools_and_every_other_tool_is_found_and_called_by_name(
        neonblue_home: Path, pg_dsn: str, ch_database: str, serve_http) -> None:
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                        clickhouse_database=ch_database, tool_profile="core")
    async with open_router(settings) as router, Client(router.server) as client:
        listed = [t.name for t in (await client.list_tools()).tools]
        everything = {t.name for t in (await client.list_tools(meta={PROFILE_META: "full"}, cache_mode="refresh")).tools}
        assert listed == list(CORE_TOOLS)  # the journey's order
        assert len(everything) >= 44 and set(CORE_TOOLS) <= everything

        for question, tool in QUESTIONS.items():
            found = await client.call_tool("find_tools", {"query": question, "limit": 3})
            assert not found.is_error, found.content
            answer = found.structured_content
            names = [m["name"] for m in answer["matches"]]
            assert tool in names, (question, answer["matches"])
            assert answer["method"] == "embedding" and answer["profile"] == "core"
        match = answer["matches"][0]
        assert set(match) == {"name", "description", "score", "listed", "input_schema"}
        assert "\n" not in match["description"] and match["input_schema"]["type"] == "object"

        # An agent on core: it needs traffic allocation, finds it, and calls it by name.
        found = (await client.call_tool("find_tools", {"query": "split traffic toward the winning arm"})).structured_content
        top = found["matches"][0]
        assert top["name"] == "allocate_traffic" and top["listed"] is False
        assert "experiment" in top["input_schema"]["required"]
        await client.call_tool("create_experiment", {"experiment": {
            "key": "bandit", "name": "Bandit", "type": "feature", "primary_metric": "conversion",
            "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}})
        await client.call_tool("start_experiment", {"experiment": "bandit"})
        allocated = await client.call_tool(top["name"], {"experiment": "bandit", "dry_run": True})
        assert not allocated.is_error, allocated.content
        assert allocated.structured_content["applied"] is False

        # A stdio front attached to this stack over HTTP reads the full catalogue and applies its own profile.
        app = await serve_http(router, settings, None)
        async with open_attached_router(f"{app.url}/mcp", None, "full") as front, Client(front.server) as c:
            assert {t.name for t in (await c.list_tools()).tools} == everything
        async with open_attached_router(f"{app.url}/mcp", None, "core") as front, Client(front.server) as c:
            assert [t.name for t in (await c.list_tools()).tools] == list(CORE_TOOLS)
            guarded = await c.call_tool("evaluate_guardrails", {"experiment": "bandit"})
            assert not guarded.is_error, guarded.content
