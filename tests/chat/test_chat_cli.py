"""`neonblue ask` and `neonblue chat` as a user (or a CI job) runs them: real subprocesses.

Most runs talk to a router this test serves over streamable HTTP with a bearer token
(`--server URL`, as against a running stack), so a subprocess does not reopen every store;
one run opens the router in-process, as a bare `neonblue ask` does without a stack. Each
subprocess gets its own NEONBLUE_HOME (chDB and Chroma allow one owning process per data
directory). The Anthropic API is the local fake.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fake_anthropic import FakeAnthropic, text, tool_use

from mcp_router.gateway.router import Router
from mcp_router.runtime.embedded import EmbeddedPostgres, free_port
from mcp_router.runtime.serving import open_router
from mcp_router.web.http_app import build_http_app

TOKEN = "chat-cli-test-token"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_env(pg_dsn: str, tmp_path: Path):
    def build(fake: FakeAnthropic | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "NEONBLUE_"))}
        env.update({"NEONBLUE_HOME": str(tmp_path / "home"), "DATABASE_URL": pg_dsn, "COLUMNS": "200",
                    "NEONBLUE_HTTP_TOKEN": TOKEN})
        if fake is not None:
            env.update({"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.url,
                        "ANTHROPIC_MODEL": "claude-cli-test"})
        env.update(extra)
        return env

    return build


async def neonblue(*args: str, env: dict[str, str], stdin: str | None = None) -> Done:
    """Run the CLI without blocking this loop (it may be serving the router the CLI talks to)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_router", *args, env=env, cwd=Path(__file__).parent,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout=300)
    return Done(proc.returncode, out.decode(), err.decode())


@asynccontextmanager
async def served_router(settings) -> AsyncIterator[tuple[str, Router]]:
    """The real router over streamable HTTP with a bearer token, on a free loopback port."""
    async with open_router(settings) as router:
        port = free_port()
        app = build_http_app(router, settings.model_copy(update={"http_port": port}), TOKEN)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}/mcp", router
        finally:
            server.should_exit = True
            await task


async def test_ask_json_is_one_object_with_mode_answer_tool_calls_and_usage(
        fake_anthropic, cli_env, chat_settings) -> None:
    fake_anthropic.then(tool_use("router_status", {}), text("All backends are healthy.", output_tokens=7))
    async with served_router(chat_settings()) as (url, router):
        done = await neonblue("ask", "--server", url, "--json", "Is", "the", "stack", "healthy?",
                              env=cli_env(fake_anthropic))

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mode"] == "agent"
    assert out["answer"] == "All backends are healthy."
    assert out["tool_calls"] == [{"tool": "router_status", "arguments": {}, "is_error": False}]
    assert out["usage"]["requests"] == 2 and out["usage"]["output_tokens"] > 7
    assert out["model"] == "claude-cli-test" and out["error"] is None
    assert fake_anthropic.requests[0].messages[0]["content"][0]["text"] == "Is the stack healthy?"


async def test_ask_streams_text_shows_its_tools_and_errors_are_one_line(
        fake_anthropic, cli_env, chat_settings) -> None:
    fake_anthropic.then(tool_use("router_status", {}, say="Checking."), text("Healthy."))
    async with served_router(chat_settings()) as (url, router):
        shown = await neonblue("ask", "--server", url, "Is the stack healthy?", env=cli_env(fake_anthropic))
        bad_env = cli_env(fake_anthropic, ANTHROPIC_API_KEY="sk-ant-wrong")
        bad = await neonblue("ask", "--server", url, "hello", env=bad_env)
        bad_json = await neonblue("ask", "--server", url, "--json", "hello", env=bad_env)
        no_experiment = await neonblue("ask", "--server", url, "--experiment", "no-such-test", "hello",
                                       env=cli_env(fake_anthropic))

    assert shown.returncode == 0, shown.stderr
    assert "Checking." in shown.stdout and "Healthy." in shown.stdout
    assert "⚙ router_status {}" in shown.stdout
    assert "tools: router_status" in shown.stdout
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.startswith("neonblue:")] == [
        "neonblue: Anthropic rejected the API key (401 authentication_error): check ANTHROPIC_API_KEY, "
        "or run without it for offline mode."]
    assert bad_json.returncode == 1
    assert json.loads(bad_json.stdout)["error"].startswith("Anthropic rejected the API key")
    assert no_experiment.returncode == 2 and "Traceback" not in no_experiment.stderr
    assert no_experiment.stderr.strip().startswith("neonblue: experiment 'no-such-test': get_experiment failed:")
    assert "no experiment with key or id 'no-such-test'" in no_experiment.stderr


async def test_chat_keeps_the_conversation_and_takes_commands(fake_anthropic, cli_env, chat_settings) -> None:
    fake_anthropic.then(
        tool_use("router_status", {}), text("Everything is healthy."),
        text("You asked whether the stack is healthy."),
    )
    async with served_router(chat_settings()) as (url, router):
        done = await neonblue("chat", "--server", url, env=cli_env(fake_anthropic),
                              stdin="Is the stack healthy?\nWhat did I ask?\n/usage\n/quit\n")

    assert done.returncode == 0, done.stderr
    assert "agent chat with claude-cli-test" in done.stdout
    assert "Everything is healthy." in done.stdout
    assert "You asked whether the stack is healthy." in done.stdout
    assert "output tokens over 3 requests" in done.stdout
    third = fake_anthropic.requests[2].messages
    assert [m["role"] for m in third] == ["user", "assistant", "user", "assistant", "user"]


async def test_without_a_key_ask_opens_the_router_itself_and_answers_offline(cli_env) -> None:
    done = await neonblue("ask", "--json", "list the running experiments", env=cli_env())

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mode"] == "offline"
    assert out["answer"].startswith("offline mode (no ANTHROPIC_API_KEY): answered by route_query")
    assert out["error"] is None and out["data"] == [
        {"tool": "list_experiments", "arguments": {"status": ["running"]}, "count": 0, "experiments": []}]
    assert out["tool_calls"] == [
        {"tool": "route_query", "arguments": {"query": "list the running experiments"}, "is_error": False},
        {"tool": "list_experiments", "arguments": {"status": ["running"]}, "is_error": False}]
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0, "requests": 0}


async def test_offline_answers_render_tables(cli_env, chat_settings) -> None:
    async with served_router(chat_settings()) as (url, router):
        for key in ("checkout-1step", "pricing-annual-discount"):
            created = await router.call_tool("create_experiment", {"experiment": {
                "key": key, "name": key.replace("-", " "), "type": "ui", "primary_metric": "conversion",
                "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}})
            assert not created.is_error
        done = await neonblue("ask", "--server", url, "list the draft experiments", env=cli_env())

    assert done.returncode == 0, done.stderr
    assert "offline mode (no ANTHROPIC_API_KEY)" in done.stdout
    assert "list_experiments → items" in done.stdout  # the result's records as a table
    assert "checkout-1step" in done.stdout and "pricing-annual-discount" in done.stdout
    # The answer names them, not just a count.
    assert "list_experiments(status=['draft']) → 2 experiments: " in done.stdout
    assert "checkout-1step (checkout 1step, draft)" in done.stdout


async def test_ask_exits_non_zero_when_it_cannot_answer(cli_env) -> None:
    done = await neonblue("ask", "--json", "tell me a joke about cats", env=cli_env())

    assert done.returncode == 1, done.stdout
    out = json.loads(done.stdout)
    assert out["error"] and "I can't answer that offline" in out["answer"]
    assert [c["tool"] for c in out["tool_calls"]] == ["route_query"] and out["data"] == []


async def test_ask_without_a_stack_or_database_starts_its_own_and_leaves_nothing_running(cli_env, tmp_path: Path
                                                                                        ) -> None:
    """A fresh home, no DATABASE_URL, nothing running (a new user's first `neonblue ask`): it starts the
    embedded PostgreSQL for itself, as `neonblue call` does, answers, and stops it on exit."""
    env = cli_env(NEONBLUE_PG_PORT=str(free_port()))
    env.pop("DATABASE_URL")
    done = await neonblue("ask", "--json", "list the running experiments", env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["data"] == [
        {"tool": "list_experiments", "arguments": {"status": ["running"]}, "count": 0, "experiments": []}]
    data_dir = tmp_path / "home" / "pgdata"
    assert (data_dir / "PG_VERSION").exists()  # it was this home's own PostgreSQL ...
    assert not EmbeddedPostgres(data_dir, 0).is_running()  # ... and it is stopped
