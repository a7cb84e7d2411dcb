"""The router the front-door tests plan against: this test's own stores, the demo's experiments running.

`demo_router(settings, chroma_path)` opens it inside the test body (anyio task groups must enter
and exit in one task) and yields an MCP client; the experiments are the demo portfolio's
definitions (mcp_router/apps/demo.py), the ones tests/nl/corpus.yaml is labelled against.
(A module of its own: every test directory has a `conftest`, so `from conftest import` is ambiguous.)
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from mcp import Client

sys.path.insert(0, str(Path(__file__).parent.parent))

from mcp_calls import call  # noqa: E402

from mcp_router.apps.demo import portfolio  # noqa: E402
from mcp_router.runtime.serving import open_router  # noqa: E402
from mcp_servers.registry import SERVERS  # noqa: E402
from schemas.settings import Settings  # noqa: E402

CORPUS = Path(__file__).parent / "corpus.yaml"
# The five experiments the corpus is labelled against (the demo may grow; the corpus stays put).
CORPUS_EXPERIMENTS = ("checkout-1step", "homepage-aa", "pricing-premium", "support-bot-prompt", "onboarding-bandit")


@asynccontextmanager
async def demo_router(settings: Settings, chroma_path: Path, keys: tuple[str, ...] = CORPUS_EXPERIMENTS,
                      ) -> AsyncIterator[Client]:
    async with AsyncExitStack() as stack:
        memory = await stack.enter_async_context(SERVERS["chromadb"].open_service(settings, path=chroma_path))
        targets = {"chromadb": SERVERS["chromadb"].build_server(memory)}
        router = await stack.enter_async_context(open_router(settings, targets=targets))
        client = await stack.enter_async_context(Client(router.server))
        for experiment in portfolio(scale=0.05):
            if experiment.key in keys:
                await call(client, "create_experiment", {"experiment": experiment.definition})
                await call(client, "start_experiment", {"experiment": experiment.key})
        yield client
