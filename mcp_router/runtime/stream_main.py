"""`neonblue stream`: one stream-processor member of the consumer group, run on its own.

It opens the servers through the router's own assembly (in-process, or remote per
NEONBLUE_BACKENDS) and hands their services to the stream processor, which knows
nothing of the router. With the PostgreSQL server in-process it also runs an outbox
relay (any number of members share the outbox: each claims disjoint batches).
"""

from __future__ import annotations

import logging

from mcp_router.runtime.serving import open_router
from mcp_router.runtime.stack import Stack
from schemas.errors import ConfigError
from schemas.settings import Settings
from stream_processor.processor import StreamStats
from stream_processor.runner import StreamWorker, build_stream

log = logging.getLogger(__name__)


async def run_standalone(settings: Settings) -> None:
    """Open the servers, then consume until SIGTERM; refuses when a running stack already owns the stores."""
    embedded = not settings.clickhouse_url or not settings.chroma_url
    if embedded and Stack(settings).owner.pid() is not None:
        raise ConfigError(
            "CLICKHOUSE_URL: the running stack's owner process already runs the stream processor "
            "(chDB and Chroma allow one owning process); use `neonblue status`"
        )
    stats = StreamStats()
    worker: StreamWorker | None = None

    def figures() -> dict:
        return worker.snapshot() if worker is not None else stats.snapshot()

    async with open_router(settings, stream_stats=figures) as router:
        worker = build_stream(settings, router.services, stats, intelligence=router.backends.get("intelligence"))
        log.info("stream processor: group %s on %s; outbox relay %s", settings.kafka_group_id, settings.kafka_topics,
                 "on" if worker.relay is not None else "off (PostgreSQL is not in this process)")
        await worker.run(install_signal_handlers=True)
