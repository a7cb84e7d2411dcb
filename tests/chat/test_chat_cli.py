"""`neonblue ask` and `neonblue chat` as a user (or a CI job) runs them: real subprocesses.

Each command gets its own NEONBLUE_HOME (chDB and Chroma allow one owning
process per data directory) and the test's PostgreSQL database; the Anthropic
API is the local fake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, text, tool_use


@pytest.fixture
def cli_env(pg_dsn: str, tmp_path: Path):
    def build(fake: FakeAnthropic | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
        env.update({"NEONBLUE_HOME": str(tmp_path / "home"), "DATABASE_URL": pg_dsn, "NEONBLUE_LOG_LEVEL": "WARNING",
                    "COLUMNS": "200"})
        if fake is not None:
            env.update({"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.url,
                        "ANTHROPIC_MODEL": "claude-cli-test"})
        env.update(extra)
        return env

    return build


def neonblue(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_router", *args], env=env, input=stdin, text=True,
                          capture_output=True, timeout=240, cwd=Path(__file__).parent)


def test_ask_json_is_one_object_with_mode_answer_tool_calls_and_usage(fake_anthropic, cli_env) -> None:
    fake_anthropic.then(tool_use("router_status", {}), text("All backends are healthy.", output_tokens=7))
    done = neonblue("ask", "--json", "Is", "the", "stack", "healthy?", env=cli_env(fake_anthropic))

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mode"] == "agent"
    assert out["answer"] == "All backends are healthy."
    assert out["tool_calls"] == [{"tool": "router_status", "arguments": {}, "is_error": False}]
    assert out["usage"]["requests"] == 2 and out["usage"]["output_tokens"] > 7
    assert out["model"] == "claude-cli-test" and out["error"] is None
    assert fake_anthropic.requests[0].messages[0]["content"][0]["text"] == "Is the stack healthy?"


def test_ask_streams_text_and_shows_the_tools_it_called(fake_anthropic, cli_env) -> None:
    fake_anthropic.then(tool_use("router_status", {}, say="Checking."), text("Healthy."))
    done = neonblue("ask", "Is the stack healthy?", env=cli_env(fake_anthropic))

    assert done.returncode == 0, done.stderr
    assert "Checking." in done.stdout and "Healthy." in done.stdout
    assert "⚙ router_status {}" in done.stdout
    assert "tools: router_status" in done.stdout


def test_ask_with_a_bad_key_says_so_in_one_line_and_exits_1(fake_anthropic, cli_env) -> None:
    env = cli_env(fake_anthropic, ANTHROPIC_API_KEY="sk-ant-wrong")
    done = neonblue("ask", "hello", env=env)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("neonblue:")]
    assert errors == ["neonblue: Anthropic rejected the API key (401 authentication_error): check "
                      "ANTHROPIC_API_KEY, or run without it for offline mode."]
    as_json = json.loads(neonblue("ask", "--json", "hello", env=env).stdout)
    assert as_json["error"].startswith("Anthropic rejected the API key")


def test_chat_keeps_the_conversation_and_takes_commands(fake_anthropic, cli_env) -> None:
    fake_anthropic.then(
        tool_use("router_status", {}), text("Everything is healthy."),
        text("You asked whether the stack is healthy."),
    )
    done = neonblue("chat", env=cli_env(fake_anthropic),
                    stdin="Is the stack healthy?\nWhat did I ask?\n/usage\n/quit\n")

    assert done.returncode == 0, done.stderr
    assert "agent chat with claude-cli-test" in done.stdout
    assert "Everything is healthy." in done.stdout
    assert "You asked whether the stack is healthy." in done.stdout
    assert "output tokens over 3 requests" in done.stdout
    third = fake_anthropic.requests[2].messages
    assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]


def test_without_a_key_ask_answers_offline_and_says_so(cli_env) -> None:
    done = neonblue("ask", "--json", "list the running experiments", env=cli_env())

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mode"] == "offline"
    assert out["answer"].startswith("offline mode (no ANTHROPIC_API_KEY): answered by route_query rules, no LLM")
    assert [c["tool"] for c in out["tool_calls"]] == ["route_query", "list_experiments"]
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0, "requests": 0}

    shown = neonblue("ask", "list the running experiments", env=cli_env())
    assert "offline mode (no ANTHROPIC_API_KEY)" in shown.stdout
    assert "list_experiments(" in shown.stdout
