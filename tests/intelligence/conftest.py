"""Fixtures for the Experiment Intelligence server: the real embedded stores behind the real router.

- `intel_settings(environment=...)`: Settings on this test's PostgreSQL database and
  ClickHouse database (the session's chDB path: chDB opens one path per process).
- `open_stack(settings)`: an async context manager opening a Chroma service on this
  test's own directory and the router over every server (Chroma passed in as an
  in-process target), so memory never leaks between tests. Use it INSIDE the test
  body: anyio task groups must enter and exit in one task.
- `kit`: helpers that create and start an experiment through the registry's MCP tools
  and load generated traffic with KNOWN true effects into ClickHouse
  (stream_processor.generator + the ClickHouse service's ingest_json).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mcp import Client
from mcp_calls import call  # type: ignore[import-not-found]

from mcp_router.runtime.serving import open_router
from mcp_servers.chroma import build_server as build_chroma_server
from mcp_servers.chroma import open_service as open_chroma
from mcp_servers.postgres.assignment import AssignmentSpec
from schemas.settings import Settings
from stream_processor.generator import ArmTruth, MetricTruth, TrafficPlan, generate_events

# Generated traffic ends a day before the tests run, so no event lies in the future.
TRAFFIC_START = (datetime.now(UTC) - timedelta(days=16)).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def intel_settings(pg_dsn: str, ch_database: str, chdb_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": pg_dsn, "clickhouse_database": ch_database,
                                  "neonblue_home": chdb_path.parent, "chroma_url": None,
                                  "environment": "development", "log_level": "WARNING"}
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def open_stack(chroma_path: Path) -> Callable[[Settings], Any]:
    @asynccontextmanager
    async def opened(settings: Settings) -> AsyncIterator[Any]:
        async with open_chroma(settings, path=chroma_path) as chroma:
            async with open_router(settings, targets={"chromadb": build_chroma_server(chroma)}) as router:
                yield router

    return opened



@dataclass
class Seeder:
    router: Any
    client: Client

    async def experiment(self, key: str, *, weights: tuple[float, ...] = (0.5, 0.5), min_sample_size: int = 0,
                         guardrails: list[dict[str, Any]] | None = None, secondary: list[dict[str, Any]] | None = None,
                         primary: str = "conversion", description: str = "", hypothesis: str = "",
                         start: bool = True) -> dict[str, Any]:
        keys = ["control"] + (["treatment"] if len(weights) == 2 else [f"t{i}" for i in range(1, len(weights))])
        spec = {
            "key": key, "name": key.replace("-", " "), "type": "ui",
            "description": description or f"Generated experiment {key}", "hypothesis": hypothesis,
            "primary_metric": {"name": primary, "direction": "higher"},
            "guardrail_metrics": guardrails or [], "secondary_metrics": secondary or [],
            "variants": [{"key": k, "is_control": i == 0, "weight": w} for i, (k, w) in enumerate(zip(keys, weights, strict=True))],
            "min_sample_size": min_sample_size,
        }
        created = await call(self.client, "create_experiment", {"experiment": spec})
        if start:
            await call(self.client, "start_experiment", {"experiment": key})
        return created

    async def traffic(self, key: str, truths: dict[str, ArmTruth], *, users: int, days: int = 14, seed: int = 1,
                      weights: tuple[float, ...] | None = None, exposure_keep: dict[str, float] | None = None,
                      start: datetime = TRAFFIC_START) -> int:
        variant_keys = list(truths)
        w = weights or tuple(1.0 / len(variant_keys) for _ in variant_keys)
        plan = TrafficPlan(experiment_key=key, variant_keys=variant_keys, spec=AssignmentSpec(key, w), truths=truths,
                           users=users, start=start, days=days, seed=seed, user_prefix=f"{key}-u",
                           exposure_keep=exposure_keep or {})
        lines = [value for _, _, value in generate_events(plan)]
        ch = self.router.services["clickhouse"]
        for i in range(0, len(lines), 200_000):
            await ch.ingest_json(b"\n".join(lines[i:i + 200_000]), f"{key}:{seed}:{i}")
        return len(lines)


def arms(control: float, treatment: float, **metrics: tuple[float, float]) -> dict[str, ArmTruth]:
    """Two arms with conversion rates and Bernoulli metrics given as (control, treatment) rates."""
    return {
        "control": ArmTruth(control, 20.0, {m: MetricTruth(c) for m, (c, _) in metrics.items()}),
        "treatment": ArmTruth(treatment, 20.0, {m: MetricTruth(t) for m, (_, t) in metrics.items()}),
    }


@pytest.fixture
def kit() -> SimpleNamespace:
    """Helpers for the test bodies: kit.call(client, tool, args), kit.arms(...), kit.Seeder(router, client)."""
    return SimpleNamespace(call=call, arms=arms, Seeder=Seeder)
