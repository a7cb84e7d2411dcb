"""Issue 24, the first hour: docs/GETTING_STARTED.md names only what exists. Every `neonblue
<subcommand>` it shows is a command of `neonblue --help`, and every tool it names (in prose or as a
captured call) is in the router's catalogue, built in-process from the real servers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner
from mcp import Client

from mcp_router.apps.cli import cli
from mcp_router.gateway.router import CORE_TOOLS
from mcp_router.runtime.serving import open_router
from schemas.settings import Settings

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "GETTING_STARTED.md"
EVENT_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "event.schema.json"


def _text() -> str:
    return GUIDE.read_text()


def _subcommands(text: str) -> set[str]:
    """`neonblue up`, `.venv/bin/neonblue status --json`, `neonblue claude-config`: the word after."""
    return set(re.findall(r"(?<![\w.-])neonblue ([a-z][a-z-]*)", text))


def _called_tools(text: str) -> set[str]:
    """The captured calls, `→ {"name": "create_experiment", ...}`, and what find_tools found,
    `{"name": "predict_user_assignment", "score": 0.82}`."""
    return (set(re.findall(r'→ \{"name": "([A-Za-z0-9_.-]+)"', text))
            | set(re.findall(r'\{\s*"name": "([A-Za-z0-9_.-]+)",\s*"score"', text)))


def _named_tools(text: str) -> set[str]:
    """Backticked snake_case words in prose (outside code blocks): tool names, or else fields."""
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return set(re.findall(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`", prose))


def test_every_neonblue_subcommand_in_the_guide_is_a_command() -> None:
    named = _subcommands(_text())
    assert {"up", "down", "status", "claude-config", "generate", "schema"} <= named, named
    listing = CliRunner().invoke(cli, ["--help"]).output
    commands = set(re.findall(r"^  ([a-z][a-z-]*)\s", listing.split("Commands:", 1)[1], flags=re.MULTILINE))
    assert named <= commands, f"GETTING_STARTED.md names commands neonblue --help does not list: {named - commands}"


def test_the_guide_shows_the_claude_desktop_calls_and_the_core() -> None:
    text = _text()
    called = _called_tools(text)
    assert {"find_tools", "plan_experiment", "create_experiment", "start_experiment",
            "analyze_experiment_performance", "get_variant_statistics", "predict_user_assignment"} <= called, called
    listed = re.search(r"^(\d+) tools: (.*)$", text, flags=re.MULTILINE)
    assert listed is not None, "the captured tools/list of the core profile is missing"
    assert listed.group(2).split(", ") == list(CORE_TOOLS)


async def test_every_tool_the_guide_names_is_in_the_router_catalogue(neonblue_home, pg_dsn, ch_database) -> None:
    text = _text()
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                        clickhouse_database=ch_database)
    async with open_router(settings) as router, Client(router.server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    called = _called_tools(text)
    assert called <= set(tools), f"captured calls to tools the router does not have: {called - set(tools)}"
    # A backticked snake_case word is a tool, or a field a tool or an event takes (`experiment_id`),
    # a Kafka topic (`analytics_events`), or a value a captured answer shows (`"verdict":"needs_review"`).
    fields = set(json.loads(EVENT_SCHEMA.read_text())["properties"]) | set(Settings(_env_file=None).kafka_topics)
    blocks = " ".join(re.findall(r"```.*?```", text, flags=re.DOTALL))
    fields |= set(re.findall(r'"(?!name")[a-z_]+":\s*"([a-z][a-z0-9_]*)"', blocks))
    for tool in tools.values():
        fields |= set(tool.input_schema.get("properties", {}))
        for spec in tool.input_schema.get("$defs", {}).values():
            fields |= set(spec.get("properties", {}))
    named = _named_tools(text)
    unknown = named - set(tools) - fields
    assert not unknown, f"GETTING_STARTED.md names tools the router does not have: {sorted(unknown)}"
    assert {"find_tools", "get_variant", "predict_user_assignment"} <= named & set(tools), named
