"""The whole stack a user's journey runs on (issue 18), in this test's event loop: the router with every
server in-process (Chroma on the test's own directory), the outbox relay carrying the registry's
exposures and results to the real tansu broker, and the stream processor storing them in ClickHouse.

`open_journey(settings, chroma_path)` yields a `Journey`; `journey.settle(events)` waits until the
pipeline has delivered that many events (the harness's wait, not part of the user's interface).
`serve_rest(router, settings)` serves the router's HTTP app (REST and /mcp, bearer auth) on a free
loopback port and yields an authorised httpx client. `planted(...)` draws who converts with a seeded
RNG, so every run plants the same effect.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from kafka_topics import create_topics  # type: ignore[import-not-found]

from mcp_router.runtime.embedded import EmbeddedKafka, free_port
from mcp_router.runtime.serving import open_router
from mcp_router.web.http_app import build_http_app
from mcp_router.web.rest import rest_routes
from mcp_servers.chroma import build_server as build_chroma_server
from mcp_servers.chroma import open_service as open_chroma
from schemas.settings import Settings
from stream_processor.outbox import read_backlog
from stream_processor.runner import StreamWorker, build_outbox_relay, build_processor

TOPICS = ("experiments_events", "user_events", "analytics_events", "experiment_metrics")
RELAY = {"lease_seconds": 5.0, "poll_interval": 0.05, "min_backoff": 0.1, "max_backoff": 1.0, "send_timeout": 10.0}
USERS = 20_000  # the number
TOKEN = "journey-token"


def journey_settings(*, neonblue_home: Path, pg_dsn: str, ch_database: str, kafka_broker: EmbeddedKafka,
                     kafka_topic: str) -> Settings:
    """Settings on this test's PostgreSQL and ClickHouse databases and its own topics on the session broker."""
    return Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn, clickhouse_database=ch_database,
                    chroma_url=None, kafka_bootstrap_servers=kafka_broker.bootstrap,
                    kafka_topics=[f"{kafka_topic}.{name}" for name in TOPICS], kafka_group_id=f"{kafka_topic}-group",
                    kafka_dlq_topic=f"{kafka_topic}.dlq", environment="development", log_level="WARNING")


@dataclass
class Journey:
    router: Any
    worker: StreamWorker
    task: asyncio.Task

    async def settle(self, events: int, timeout: float = 60.0) -> None:
        """Until the outbox is empty and the stream processor has stored `events` events in ClickHouse."""
        postgres = self.router.services["postgres"]
        deadline = time.monotonic() + timeout
        while True:
            if self.task.done():
                self.task.result()  # surface a crash of the processor or the relay
            unsent = (await read_backlog(postgres.store))["unsent"]
            if unsent == 0 and self.worker.stats.stored >= events:
                return
            assert time.monotonic() < deadline, (
                f"the pipeline did not deliver {events} events within {timeout:g}s: {unsent} unsent in the outbox, "
                f"{self.worker.stats.snapshot()}")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def open_journey(settings: Settings, chroma_path: Path) -> AsyncIterator[Journey]:
    await create_topics(settings.effective_kafka_bootstrap, settings.kafka_topics, partitions=2)
    async with open_chroma(settings, path=chroma_path) as chroma, \
            open_router(settings, targets={"chromadb": build_chroma_server(chroma)}) as router:
        worker = StreamWorker(build_processor(settings, router.services, max_batch=5_000),
                              build_outbox_relay(settings, router.services, **RELAY))
        task = asyncio.create_task(worker.run(), name="journey-stream")
        try:
            yield Journey(router, worker, task)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)


@asynccontextmanager
async def serve_rest(router: Any, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = build_http_app(router, settings, TOKEN, extra_routes=rest_routes(router))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # the startup error
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield http
    finally:
        server.should_exit = True
        await task


def planted(assigned: Iterable[tuple[str, str]], rates: dict[str, float], seed: int) -> list[str]:
    """The users who convert: each with their variant's true rate, drawn in order with a seeded RNG."""
    rng = random.Random(seed)
    return [user for user, variant in assigned if rng.random() < rates[variant]]


async def limited(calls: Sequence[Callable[[], Awaitable[Any]]], in_flight: int = 8) -> list[Any]:
    """Run the calls with at most `in_flight` at once (as an application's workers would); answers in order."""
    gate = asyncio.Semaphore(in_flight)

    async def one(make: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await make()

    return await asyncio.gather(*(one(make) for make in calls))
