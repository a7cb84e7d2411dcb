"""One real embedded stack for every tests/apps test: the CI example's own.

The session fixture runs the `run:` steps of docs/ci/neonblue-gate.yml as a runner would (all but
the install, which this venv is, and the gate, which test_ci_example.py runs), in a temp
NEONBLUE_HOME on kernel-assigned free ports: `neonblue up`, create and start checkout-1step through
`neonblue call`, stream its traffic with `neonblue generate`, wait for the stream processor. Then it
adds the demo's rolled-back experiment, pricing-premium, through the demo's own path, smaller
(`demo.ensure_experiment` over MCP, `demo.portfolio`'s planted effects streamed through Kafka).
The workflow's `down` step stops the stack at the end, even when a test failed.

checkout-1step ships (+4 points of conversion, 12,000 users), pricing-premium rolls back (revenue
per order −25%, a failing guardrail). The stack runs under the workflow's production policy, whose
autopilot never ships on its own.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import httpx
import pytest
from apps_stack import run_step, stack_environment, stop_stack, workflow_env, workflow_job
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_router.apps.demo import Agent, ensure_experiment, portfolio, wait_for_ingestion
from mcp_router.runtime.serving import resolve_token
from mcp_router.runtime.stack import Stack
from mcp_servers.postgres.service import assignment_spec
from schemas.settings import Settings
from stream_processor.generator import TrafficPlan, generate_events, produce

NOT_RUN_HERE = {"install"}  # this venv is the install
RUN_BY_THE_TEST = "gate"  # test_ci_example.py runs the gate step itself


@dataclass
class CIStack:
    env: dict[str, str]
    workdir: Path  # the job's working directory (the checkout): reports/ lands here
    ran: dict[str, CompletedProcess[str]] = field(default_factory=dict)  # step id -> its run


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(_env_file=None, neonblue_home=Path(env["NEONBLUE_HOME"]),
                    embedded_pg_port=int(env["NEONBLUE_PG_PORT"]), embedded_kafka_port=int(env["NEONBLUE_KAFKA_PORT"]),
                    http_port=int(env["NEONBLUE_HTTP_PORT"]))


async def seed_demo_experiment(settings: Settings, key: str, scale: float = 0.3) -> None:
    """One experiment of the demo's portfolio, created over MCP and its traffic streamed and stored."""
    token = resolve_token(settings, create=False)
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=300)
    async with http, Client(streamable_http_client(f"{Stack(settings).owner_url}/mcp", http_client=http)) as client:
        agent = Agent(client)
        before = ((await agent.call("router_status", {}))["stream"] or {}).get("consumed", 0)
        exp = next(e for e in portfolio(scale) if e.key == key)
        record = await ensure_experiment(agent, exp)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14)
        plan = TrafficPlan(exp.key, [v.key for v in record.variants], assignment_spec(record), exp.truths,
                           exp.users, start, days=14, seed=exp.seed)
        sent = await produce(settings.effective_kafka_bootstrap, generate_events(plan), progress=False)
        await wait_for_ingestion(agent, before + sent, limit_s=300)


def steps() -> list[dict[str, Any]]:
    return [s for s in workflow_job()["steps"] if "run" in s]


@pytest.fixture(scope="session")
def ci_stack() -> Iterator[CIStack]:
    # Outside pytest's basetemp (reset to 0700 by a concurrent pytest): PostgreSQL runs unprivileged.
    base = Path(tempfile.mkdtemp(prefix="neonblue-apps-"))
    stack = CIStack(workflow_env(stack_environment(base)), base / "checkout")
    stack.workdir.mkdir()
    always = [s for s in steps() if str(s.get("if", "")).startswith("always()")]
    try:
        for step in steps():
            if step["id"] in NOT_RUN_HERE or step in always:
                continue
            if step["id"] == RUN_BY_THE_TEST:
                break
            done = stack.ran[step["id"]] = run_step(step, stack.env, stack.workdir)
            assert done.returncode == 0, (step["id"], done.stdout[-3000:], done.stderr[-3000:])
        asyncio.run(seed_demo_experiment(settings_of(stack.env), "pricing-premium"))
        yield stack
    finally:
        for step in always:
            stack.ran[step["id"]] = run_step(step, stack.env, stack.workdir, timeout=180)
        if any(stack.ran[s["id"]].returncode for s in always):
            stop_stack(stack.env)  # the workflow's own stop failed: still stop what this test started
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def seeded_stack(ci_stack: CIStack) -> dict[str, str]:
    """The environment of the running stack (NEONBLUE_HOME, ports, PATH) for `neonblue` commands."""
    return ci_stack.env
