"""`neonblue serve` stops what it started: nothing of its embedded PostgreSQL outlives it.

Each test runs `python -m mcp_router serve` as a real subprocess with its own NEONBLUE_HOME
and free ports, stops it the way clients do (Claude Desktop closes stdin and/or sends SIGTERM,
a terminal sends SIGINT, a supervisor may SIGKILL), then looks for a PostgreSQL of that data
dir. A stack's PostgreSQL (`neonblue up`) must be left running; another home's must never be
used. Homes live outside pytest's basetemp: PostgreSQL runs as an unprivileged user when the
tests run as root.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from mcp_router.runtime.embedded import EmbeddedPostgres, _pid_alive, free_port, port_is_free

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240  # the full router opens chDB, Chroma and the embedding model: 10-40 s on a busy box
EXIT_TIMEOUT = 30  # PostgreSQL stops in < 1 s; unloading torch/chDB at interpreter exit takes a few more
OWNER_FILE = "neonblue-owner.pid"  # in the data dir: the pid of the process that started that PostgreSQL


@dataclass
class Home:
    path: Path
    pg_port: int
    http_port: int

    @property
    def data_dir(self) -> Path:
        return self.path / "pgdata"

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "NEONBLUE_HOME": str(self.path), "NEONBLUE_PG_PORT": str(self.pg_port),
               "NEONBLUE_HTTP_PORT": str(self.http_port), "LOG_LEVEL": "INFO", "HF_HUB_OFFLINE": "1",
               "ANONYMIZED_TELEMETRY": "False", "PYTHONPATH": str(REPO)}
        for name in ("DATABASE_URL", "NEONBLUE_BACKENDS", "NEONBLUE_HTTP_TOKEN"):
            env.pop(name, None)
        return {**env, **extra}


@dataclass(frozen=True)
class Postmaster:
    pid: int
    port: int
    state: str


def read_postmaster(data_dir: Path) -> Postmaster | None:
    """The live server of data_dir, from the lock file PostgreSQL keeps there (pid, ..., port, ..., state)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        running = Postmaster(int(lines[0]), int(lines[3]), lines[7].strip())
    except (OSError, ValueError, IndexError):
        return None
    return running if _pid_alive(running.pid) else None


def postmasters_of(data_dir: Path) -> list[int]:
    """Every live process started with `-D data_dir` (the postmaster; a crashed one leaves no lock file)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "-D" in argv and argv.index("-D") + 1 < len(argv) and argv[argv.index("-D") + 1] == str(data_dir):
            pid = int(cmdline.parent.name)
            if _pid_alive(pid):
                found.append(pid)
    return found


def force_stop(data_dir: Path) -> None:
    """Cleanup whatever a test (or a bug) left running in data_dir."""
    if (data_dir / "PG_VERSION").exists():
        EmbeddedPostgres(data_dir, 0).stop()
    for pid in postmasters_of(data_dir):
        os.kill(pid, signal.SIGQUIT)  # PostgreSQL's immediate shutdown
    deadline = time.monotonic() + 15
    while postmasters_of(data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.fixture
def make_home() -> Iterator:
    homes: list[Home] = []

    def make(pg_port: int | None = None) -> Home:
        home = Home(Path(tempfile.mkdtemp(prefix="neonblue-serve-")), pg_port or free_port(), free_port())
        homes.append(home)
        return home

    yield make
    for home in homes:
        force_stop(home.data_dir)
        shutil.rmtree(home.path, ignore_errors=True)


@pytest.fixture
def start_serve(make_home) -> Iterator:
    """Start `serve` (stdio unless --http) for a home; anything still running is killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(home: Home, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (home.path / "serve.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "mcp_router", "serve", *args], cwd=REPO, env=home.env(**env),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def serve_log(home: Home) -> str:
    path = home.path / "serve.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def wait_for_postgres(home: Home, proc: subprocess.Popen[bytes]) -> int:
    """The pid of this home's PostgreSQL once it accepts connections."""
    deadline = time.monotonic() + START_TIMEOUT
    while (running := read_postmaster(home.data_dir)) is None or running.state != "ready":
        assert proc.poll() is None, serve_log(home)
        assert time.monotonic() < deadline, serve_log(home)
        time.sleep(0.05)
    return running.pid


def _rpc(home: Home, proc: subprocess.Popen[bytes], messages: list[dict]) -> list[dict]:
    """Send JSON-RPC messages over the process's stdio; the responses to those with an id, in order."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    proc.stdin.flush()
    expected = {m["id"] for m in messages if "id" in m}
    answers: dict[int, dict] = {}
    while expected - answers.keys():
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        assert ready, serve_log(home)
        line = proc.stdout.readline()
        assert line, serve_log(home)
        message = json.loads(line)
        if message.get("id") in expected:
            assert "result" in message and not message["result"].get("isError"), message
            answers[message["id"]] = message["result"]
    return [answers[i] for i in sorted(answers)]


def handshake(home: Home, proc: subprocess.Popen[bytes]) -> dict:
    """MCP initialize over the process's stdio: proves it serves."""
    return _rpc(home, proc, [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
                              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                         "clientInfo": {"name": "lifecycle-test", "version": "0"}}}])[0]


def wait_for_health(home: Home, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        assert proc.poll() is None, serve_log(home)
        assert time.monotonic() < deadline, serve_log(home)
        try:
            if httpx.get(f"http://127.0.0.1:{home.http_port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


def assert_stopped_cleanly(home: Home, proc: subprocess.Popen[bytes]) -> None:
    """The process exits on its own, and no PostgreSQL of its data dir remains (port free again)."""
    try:
        code = proc.wait(EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not exit within {EXIT_TIMEOUT}s\n{serve_log(home)}")
    assert code == 0, serve_log(home)
    assert read_postmaster(home.data_dir) is None
    assert postmasters_of(home.data_dir) == []
    assert not EmbeddedPostgres(home.data_dir, home.pg_port).is_running()
    assert not (home.data_dir / OWNER_FILE).exists()
    assert port_is_free("127.0.0.1", home.pg_port)


# SIGTERM is how Claude Desktop stops a server: always run. SIGINT and stdin EOF take the same
# path and run in make test-slow.
@pytest.mark.parametrize("stop", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow),
                                  pytest.param("stdin closed", marks=pytest.mark.slow)])
def test_stdio_serve_stops_its_postgres(make_home, start_serve, stop: str) -> None:
    home = make_home()
    proc = start_serve(home)
    wait_for_postgres(home, proc)
    assert handshake(home, proc)["serverInfo"]["name"]
    assert proc.stdin is not None
    if stop == "stdin closed":
        proc.stdin.close()
    else:
        proc.send_signal(getattr(signal, stop))  # SIGINT: what Ctrl-C sends (it hung, reading stdin)
    assert_stopped_cleanly(home, proc)


def test_http_serve_stops_its_postgres_on_sigterm(make_home, start_serve) -> None:
    home = make_home()
    proc = start_serve(home, "--http")
    wait_for_postgres(home, proc)
    wait_for_health(home, proc)
    proc.send_signal(signal.SIGTERM)  # uvicorn catches it while serving, then raised it again: the default killed
    assert_stopped_cleanly(home, proc)


def test_http_serve_interrupted_while_starting_stops_its_postgres(make_home, start_serve) -> None:
    home = make_home()
    proc = start_serve(home, "--http")
    wait_for_postgres(home, proc)  # the stores and the embedding model are still opening
    proc.send_signal(signal.SIGINT)
    assert_stopped_cleanly(home, proc)


def test_after_sigkill_the_next_serve_of_the_home_starts_and_leaves_nothing(make_home, start_serve) -> None:
    home = make_home()
    first = start_serve(home)
    wait_for_postgres(home, first)
    handshake(home, first)
    first.kill()
    first.wait()
    # The PostgreSQL it started goes down with it (its child, told by the kernel), so the port is free at once.
    deadline = time.monotonic() + 15
    while postmasters_of(home.data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert postmasters_of(home.data_dir) == []

    second = start_serve(home)
    wait_for_postgres(home, second)
    assert handshake(home, second)["serverInfo"]["name"]
    second.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(home, second)


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_postgres_left_by_a_crashed_serve_is_stopped_and_replaced(make_home, start_serve) -> None:
    """A serve killed before it could stop its PostgreSQL (the owner file names a dead process):
    the next serve of the home stops that server, runs its own, and stops it in turn."""
    home = make_home()
    left = EmbeddedPostgres(home.data_dir, home.pg_port)
    left.start()  # daemonised, as an orphan is
    (home.data_dir / OWNER_FILE).write_text(f"{_dead_pid()}\n")
    orphan = read_postmaster(home.data_dir)
    assert orphan is not None

    proc = start_serve(home, "postgres")
    handshake(home, proc)
    replacement = read_postmaster(home.data_dir)
    assert replacement is not None and replacement.pid != orphan.pid
    assert not _pid_alive(orphan.pid)
    assert (home.data_dir / OWNER_FILE).read_text().strip() == str(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert_stopped_cleanly(home, proc)


def test_a_stacks_postgres_is_used_and_left_running(make_home, start_serve) -> None:
    home = make_home()
    stack = EmbeddedPostgres(home.data_dir, home.pg_port)
    stack.start()  # as `neonblue up` does: meant to outlive the CLI, no owner file
    before = read_postmaster(home.data_dir)
    assert before is not None

    proc = start_serve(home, "postgres")
    handshake(home, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_TIMEOUT) == 0, serve_log(home)
    after = read_postmaster(home.data_dir)
    assert after is not None and after.pid == before.pid and after.state == "ready"
    assert not (home.data_dir / OWNER_FILE).exists()


def _connections_logged(server: EmbeddedPostgres) -> int:
    return (server.data_dir / "postgres.log").read_text(errors="replace").count("connection received")


def _execute(dsn: str, *statements: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _refusal(home: Home) -> str:
    lines = [line for line in serve_log(home).splitlines() if line.startswith("neonblue: ")]
    assert lines, serve_log(home)
    return lines[-1]


def test_postgres_of_another_home_is_never_used(make_home, start_serve) -> None:
    """Another home's PostgreSQL on the configured port: refused in one line naming NEONBLUE_PG_PORT,
    without a connection to it, whether this home's server is down or runs on another port."""
    other_home = make_home()
    other = EmbeddedPostgres(other_home.data_dir, other_home.pg_port)
    other.start()
    _execute(other.dsn, "ALTER SYSTEM SET log_connections = on", "SELECT pg_reload_conf()")
    time.sleep(0.5)  # the reload reaches the server processes asynchronously
    other_pid = read_postmaster(other_home.data_dir).pid  # type: ignore[union-attr]
    seen = _connections_logged(other)

    home = make_home(pg_port=other_home.pg_port)
    down = start_serve(home)
    assert down.wait(EXIT_TIMEOUT) == 2, serve_log(home)
    message = _refusal(home)
    assert message.startswith("neonblue: NEONBLUE_PG_PORT:") and str(other_home.data_dir) in message, message
    assert read_postmaster(home.data_dir) is None

    # This home's PostgreSQL runs, but on another port (say, a stack started with another setting).
    elsewhere = EmbeddedPostgres(home.data_dir, free_port())
    elsewhere.start()
    moved = start_serve(home)
    assert moved.wait(EXIT_TIMEOUT) == 2, serve_log(home)
    message = _refusal(home)
    assert message.startswith("neonblue: NEONBLUE_PG_PORT:") and str(elsewhere.port) in message, message

    assert read_postmaster(other_home.data_dir).pid == other_pid  # type: ignore[union-attr]
    assert _connections_logged(other) == seen


def test_sigterm_writes_the_assignments_answered_just_before(make_home, start_serve) -> None:
    """New users are answered first and recorded just after (NEONBLUE_ASSIGNMENT_WRITES=behind): a SIGTERM
    right after the last answer still records every one of them before the process exits."""
    home = make_home()
    stack = EmbeddedPostgres(home.data_dir, home.pg_port)
    stack.start()
    proc = start_serve(home, "postgres")
    handshake(home, proc)

    def tool(i: int, name: str, arguments: dict) -> dict:
        return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": arguments}}

    _rpc(home, proc, [{"jsonrpc": "2.0", "method": "notifications/initialized"},
                      tool(2, "create_experiment", {"experiment": {
                          "key": "sigterm-exp", "name": "SIGTERM", "type": "ui", "primary_metric": "conversion",
                          "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}})])
    _rpc(home, proc, [tool(3, "start_experiment", {"experiment": "sigterm-exp"})])  # requests run concurrently
    users = [f"late-{i}" for i in range(200)]
    answers = _rpc(home, proc, [tool(10 + i, "get_variant", {"experiment": "sigterm-exp", "user_id": user})
                                for i, user in enumerate(users)])
    assert all(a["structuredContent"]["newly_recorded"] for a in answers)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(EXIT_TIMEOUT) == 0, serve_log(home)

    async def recorded() -> int:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM neonblue.assignments a JOIN neonblue.event_outbox o "
                "ON o.user_id = a.user_id AND o.event_type = 'exposure' WHERE a.user_id LIKE 'late-%'")
        finally:
            await conn.close()

    assert asyncio.run(recorded()) == len(users)  # each assignment with its exposure in the outbox
