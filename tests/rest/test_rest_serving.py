"""`neonblue serve --http` (run_http) serves the REST API beside /mcp: the whole stack in a
subprocess, every server in-process, so /analyze offers the intelligence source.

Marked slow (the stack starts in ~10-40 s: chDB, Chroma and the embedding model): it runs
with `-m slow` (make test-slow) and is skipped otherwise."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx
import pytest

from mcp_router.runtime.embedded import free_port

pytestmark = pytest.mark.slow


async def test_serve_http_serves_the_rest_api(request, pg_dsn, tmp_path) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("starts the full stack (~10-40 s): run with -m slow")
    port = free_port()
    env = {**os.environ, "NEONBLUE_HOME": str(tmp_path), "DATABASE_URL": pg_dsn, "NEONBLUE_HTTP_PORT": str(port),
           "NEONBLUE_HTTP_TOKEN": "serve-token", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "mcp_router", "serve", "--http", env=env,
                                                    stdout=subprocess.DEVNULL, stderr=sink)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     headers={"Authorization": "Bearer serve-token"}, timeout=30) as http:
            for _ in range(600):
                assert proc.returncode is None, log.read_text()[-2000:]
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
            doc = (await http.get("/openapi.json")).json()
            source = next(p for p in doc["paths"]["/api/v1/experiments/{id}/analyze"]["get"]["parameters"]
                          if p["name"] == "source")
            assert source["schema"]["enum"] == ["intelligence", "registry"]
            created = await http.post("/api/v1/experiments/", json={
                "key": "served", "name": "served", "type": "ui", "primary_metric": "conversion",
                "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]})
            assert created.status_code == 201
            assert (await http.post("/api/v1/experiments/served/start")).status_code == 200
            assigned = await http.post("/api/v1/experiments/get-variant", json={"experiment": "served", "user_id": "u"})
            assert assigned.json()["in_experiment"] is True
            assert (await http.get("/api/v1/experiments/", headers={"Authorization": "Bearer wrong"})).status_code == 401
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 60)
