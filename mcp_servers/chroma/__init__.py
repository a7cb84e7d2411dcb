"""The Chroma MCP server: semantic memory of experiments, user journeys and optimization patterns.

    async with open_service(settings) as service:      # client + collections (+ model warm-up)
        server = build_server(service)                  # MCPServer with the tools

Python callers use the service directly: `store_experiment_context(record, analysis)`,
`semantic_experiment_search(query, where, n_results)`, `store_user_journey`,
`find_similar_user_journeys`, `store_optimization_pattern`, `search_optimization_patterns`,
`sync_from_registry(records)`, `collection_stats()`. The embedding model is shared
per process: `mcp_servers.chroma.embeddings.load_sentence_model()` / `embed_texts()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread

from schemas.settings import Settings, get_settings

from .embeddings import (
    LocalMiniLMEmbeddingFunction,
    embed_texts,
    load_sentence_model,
    make_embedding_function,
)
from .server import build_server
from .service import ChromaService
from .store import DEFAULT_HNSW, ChromaStore


@asynccontextmanager
async def open_service(settings: Settings | None = None, **overrides: Any) -> AsyncIterator[ChromaService]:
    """Open Chroma (CHROMA_URL, or a PersistentClient under NEONBLUE_HOME/chroma), ensure the
    collections, yield the service, close.

    Overrides: path (a Chroma directory), url (a Chroma server), embedding_function (a Chroma
    EmbeddingFunction instead of settings.embedding_provider), hnsw (dict merged over
    DEFAULT_HNSW for new collections), registry (see ChromaService), warm_up (load the local
    model now rather than on the first request; default True).
    """
    settings = settings or get_settings()
    embedding_function = overrides.pop("embedding_function", None) or make_embedding_function(
        settings.embedding_provider
    )
    url = overrides.pop("url", None)
    path = overrides.pop("path", None)
    if url is None and path is None:
        url = settings.chroma_url
        path = None if url else settings.chroma_dir
    hnsw = overrides.pop("hnsw", None)
    registry = overrides.pop("registry", None)
    warm_up = overrides.pop("warm_up", True)
    if overrides:
        raise TypeError(f"unknown open_service overrides: {sorted(overrides)}")

    store = await anyio.to_thread.run_sync(
        lambda: ChromaStore.open(embedding_function=embedding_function, path=path, url=url, hnsw=hnsw)
    )
    try:
        if warm_up and isinstance(embedding_function, LocalMiniLMEmbeddingFunction):
            await anyio.to_thread.run_sync(load_sentence_model)
        yield ChromaService(store, registry=registry)
    finally:
        await anyio.to_thread.run_sync(store.close)


__all__ = [
    "DEFAULT_HNSW",
    "ChromaService",
    "ChromaStore",
    "LocalMiniLMEmbeddingFunction",
    "build_server",
    "embed_texts",
    "load_sentence_model",
    "open_service",
]
