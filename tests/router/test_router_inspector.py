"""The official MCP Inspector CLI (a real third-party client) talks to `neonblue serve` over stdio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_BIN = REPO / ".node" / "node_modules" / ".bin"


def _inspector() -> list[str]:
    cli = NODE_BIN / "mcp-inspector"
    if not cli.exists() or not (NODE_BIN / "node").exists():
        pytest.skip("MCP Inspector not installed (make install puts it under .node/; needs npm)")
    return [str(cli), "--cli"]


def _run(args: list[str], home: Path) -> dict:
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}", "NEONBLUE_HOME": str(home),
           "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    server = [sys.executable, "-m", "mcp_router", "serve"]
    done = subprocess.run([*_inspector(), *server, *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_inspector_lists_tools_and_calls_one(tmp_path: Path) -> None:
    assert shutil.which("node", path=str(NODE_BIN)) or (NODE_BIN / "node").exists()
    listed = _run(["--method", "tools/list"], tmp_path)
    names = {t["name"] for t in listed["tools"]}
    assert {"router_status", "route_query", "classify_event"} <= names
    assert all(len(n) <= 64 for n in names)

    called = _run(["--method", "tools/call", "--tool-name", "router_status"], tmp_path)
    assert called.get("isError") in (None, False)
    assert called["structuredContent"]["tools"] == len(names)
