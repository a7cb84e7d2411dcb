"""`neonblue up | down | status` on a real embedded stack, and fail-fast configuration errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_router.runtime.embedded import free_port


def neonblue(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_router", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    # Outside pytest's basetemp (reset to 0700 by any concurrent pytest), since PostgreSQL runs as
    # an unprivileged user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="neonblue-stack-"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    env.update(NEONBLUE_HOME=str(base / "home"), NEONBLUE_PG_PORT=str(free_port()),
               NEONBLUE_KAFKA_PORT=str(free_port()), NEONBLUE_HTTP_PORT=str(free_port()), LOG_LEVEL="WARNING")
    yield env
    shutil.rmtree(base, ignore_errors=True)


def status_of(env: dict[str, str]) -> dict[str, dict]:
    done = neonblue(["status", "--json"], env)
    assert done.returncode == 0, done.stderr
    return {p["name"]: p for p in json.loads(done.stdout)}


def test_up_is_idempotent_down_stops_and_a_crash_is_reported(stack_env: dict[str, str]) -> None:
    first = neonblue(["up"], stack_env)
    try:
        assert first.returncode == 0, first.stderr
        parts = status_of(stack_env)
        assert all(parts[name]["running"] for name in ("postgres", "kafka", "router+stores")), parts
        assert parts["router+stores"]["stream"]["consumed"] >= 0  # the owner's stream-processor figures
        _assert_status_is_whole_at_any_width(stack_env, parts)
        _assert_stdio_calls_are_quiet(stack_env)
        owner_pid = Path(stack_env["NEONBLUE_HOME"], "run", "owner.pid").read_text()

        second = neonblue(["up"], stack_env)  # starting twice is harmless: same processes
        assert second.returncode == 0, second.stderr
        assert Path(stack_env["NEONBLUE_HOME"], "run", "owner.pid").read_text() == owner_pid

        kafka_pid = int(Path(stack_env["NEONBLUE_HOME"], "run", "kafka.pid").read_text())
        os.kill(kafka_pid, signal.SIGKILL)
        parts = status_of(stack_env)
        assert parts["kafka"]["running"] is False
        assert "crashed" in parts["kafka"]["detail"]
    finally:
        down = neonblue(["down"], stack_env)
    assert down.returncode == 0, down.stderr
    parts = status_of(stack_env)
    assert not any(parts[name]["running"] for name in ("postgres", "kafka", "router+stores"))
    assert not Path(stack_env["NEONBLUE_HOME"], "run", "owner.pid").exists()


def _assert_status_is_whole_at_any_width(env: dict[str, str], parts: dict[str, dict]) -> None:
    """`status` folds long values at the terminal's width but never cuts one: every address and data
    directory appears whole (once the folding line breaks are removed), at 80 and 120 columns."""
    for columns in ("80", "120"):
        done = neonblue(["status"], {**env, "COLUMNS": columns})
        assert done.returncode == 0, done.stderr
        assert "…" not in done.stdout and max(len(line.rstrip()) for line in done.stdout.splitlines()) <= int(columns)
        joined = "".join(done.stdout.split())
        for part in parts.values():
            for value in (part["address"], part["data_dir"]):
                assert "".join(value.split()) in joined, (columns, value, done.stdout)
        assert "stream" in done.stdout and "consumed" in done.stdout


def _assert_stdio_calls_are_quiet(env: dict[str, str]) -> None:
    """`serve` over stdio logs nothing per call by default (its stderr is the client's log); a level set
    in the environment or --verbose brings the INFO lines back."""
    import anyio
    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def calls(extra_env: dict[str, str], args: list[str]) -> str:
        quiet = {k: v for k, v in env.items() if k not in ("LOG_LEVEL", "NEONBLUE_LOG_LEVEL")} | extra_env
        params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_router", "serve", *args], env=quiet)
        with tempfile.TemporaryFile("w+") as errlog:
            async with Client(stdio_client(params, errlog=errlog)) as client:
                for _ in range(2):
                    assert not (await client.call_tool("list_experiments", {})).is_error
            errlog.seek(0)
            return errlog.read()

    assert " INFO " not in anyio.run(calls, {}, [])
    assert "tool=list_experiments" in anyio.run(calls, {}, ["--verbose"])
    assert "tool=list_experiments" in anyio.run(calls, {"NEONBLUE_LOG_LEVEL": "INFO"}, [])


def _assert_one_line_error(done: subprocess.CompletedProcess[str], setting: str) -> None:
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line
             and "user_runtime_dir" not in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"neonblue: {setting}:"), lines[0]
    assert "Traceback" not in done.stderr


def test_unreachable_database_url_fails_fast(stack_env: dict[str, str]) -> None:
    stack_env["DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    done = neonblue(["up"], stack_env, timeout=60)
    _assert_one_line_error(done, "DATABASE_URL")


def test_occupied_port_fails_fast(stack_env: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        stack_env["NEONBLUE_PG_PORT"] = str(sock.getsockname()[1])
        done = neonblue(["up"], stack_env, timeout=60)
    _assert_one_line_error(done, "NEONBLUE_PG_PORT")


def test_unwritable_home_fails_fast(stack_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    stack_env["NEONBLUE_HOME"] = str(blocker / "home")
    done = neonblue(["up"], stack_env, timeout=60)
    _assert_one_line_error(done, "NEONBLUE_HOME")


def test_invalid_setting_value_fails_fast(stack_env: dict[str, str]) -> None:
    stack_env["NEONBLUE_HTTP_PORT"] = "not-a-port"
    done = neonblue(["status"], stack_env, timeout=60)
    _assert_one_line_error(done, "NEONBLUE_HTTP_PORT")


def test_claude_config_prints_a_ready_entry(stack_env: dict[str, str]) -> None:
    done = neonblue(["claude-config"], stack_env)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["mcpServers"]["neonblue"]
    assert Path(entry["command"]).is_absolute()
    assert "serve" in entry["args"]
    assert entry["env"]["NEONBLUE_HOME"] == str(Path(stack_env["NEONBLUE_HOME"]).resolve())
