"""The official MCP Inspector CLI (a real third-party client) talks to `neonblue serve` over stdio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mcp_router.runtime.embedded import EmbeddedPostgres, free_port

REPO = Path(__file__).resolve().parents[2]
NODE_BIN = REPO / ".node" / "node_modules" / ".bin"


def _inspector() -> list[str]:
    cli = NODE_BIN / "mcp-inspector"
    if not cli.exists() or not (NODE_BIN / "node").exists():
        pytest.skip("MCP Inspector not installed (make install puts it under .node/; needs npm)")
    return [str(cli), "--cli"]


def _run(args: list[str], home: Path, pg_port: int) -> dict:
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}", "NEONBLUE_HOME": str(home),
           "NEONBLUE_PG_PORT": str(pg_port), "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    server = [sys.executable, "-m", "mcp_router", "serve"]
    done = subprocess.run([*_inspector(), *server, *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_inspector_lists_tools_and_calls_one() -> None:
    assert shutil.which("node", path=str(NODE_BIN)) or (NODE_BIN / "node").exists()
    # `neonblue serve` with no stack running owns the stores and starts the embedded PostgreSQL itself
    # (outside pytest's basetemp: PostgreSQL runs as an unprivileged user when tests run as root).
    home = Path(tempfile.mkdtemp(prefix="neonblue-inspector-"))
    try:
        _check(home, free_port())
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _check(tmp_path: Path, pg_port: int) -> None:
    listed = _run(["--method", "tools/list"], tmp_path, pg_port)
    names = {t["name"] for t in listed["tools"]}
    assert {"router_status", "route_query", "classify_event"} <= names
    assert all(len(n) <= 64 for n in names)

    called = _run(["--method", "tools/call", "--tool-name", "router_status"], tmp_path, pg_port)
    assert called.get("isError") in (None, False)
    assert called["structuredContent"]["tools"] == len(names)
    # The PostgreSQL this process started for itself is stopped again when it exits.
    assert not EmbeddedPostgres(tmp_path / "pgdata", pg_port).is_running()
