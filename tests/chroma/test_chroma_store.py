"""Writes are idempotent upserts, data survives a restart, a collection built with another
embedding model is refused, and the embedded store has a single owner process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mcp_servers.chroma import open_service
from mcp_servers.chroma.embeddings import make_embedding_function
from schemas.errors import BackendUnavailable, Conflict

REPO = Path(__file__).resolve().parents[2]

EXPERIMENT = {
    "key": "checkout-1step", "name": "2-step vs 1-step checkout", "type": "ui", "industry": "ecommerce",
    "segment": "mobile users", "hypothesis": "Fewer steps raise mobile conversion.",
    "variants": [{"key": "two_step", "is_control": True}, {"key": "one_step"}],
    "primary_metric": {"name": "checkout_conversion", "direction": "higher"},
}
ANALYSIS = {"winner": "one_step", "lift": 0.15, "p_value": 0.003, "sample_size": 12000}


async def count(service, collection: str = "experiments") -> int:
    stats = await service.collection_stats()
    return next(c.count for c in stats.collections if c.name == collection)


async def test_storing_the_same_record_twice_keeps_one_document_and_reembeds_nothing(service):
    first = await service.store_experiment_context(EXPERIMENT, ANALYSIS)
    again = await service.store_experiment_context(EXPERIMENT, ANALYSIS)
    assert (first.status, again.status) == ("created", "unchanged")
    assert first.document == again.document and first.metadata == again.metadata
    assert await count(service) == 1


async def test_a_changed_record_replaces_its_document_under_the_same_id(service):
    await service.store_experiment_context(EXPERIMENT)
    assert (await service.semantic_experiment_search("checkout", n_results=1)).hits[0].metadata.get("outcome") is None
    updated = await service.store_experiment_context(EXPERIMENT, ANALYSIS)
    assert updated.status == "updated"
    assert await count(service) == 1
    (hit,) = (await service.semantic_experiment_search("checkout", n_results=5)).hits
    assert hit.metadata["outcome"] == "success" and "winner one_step" in hit.document


async def test_data_survives_closing_and_reopening_the_persistent_client(chroma_path, embedding_model):
    async with open_service(path=chroma_path) as service:
        await service.store_experiment_context(EXPERIMENT, ANALYSIS)
        await service.store_user_journey({"steps": ["landing", "product", "cart", "purchase"], "device_type": "mobile"})
        await service.store_optimization_pattern({"optimization_type": "checkout_flow", "outcome": "success",
                                                  "description": "Cut checkout from 4 steps to 2"})
        before = await service.semantic_experiment_search("shorter checkout on phones", n_results=1)
    async with open_service(path=chroma_path) as reopened:
        stats = await reopened.collection_stats()
        assert {c.name: c.count for c in stats.collections} == {
            "experiments": 1, "user_journeys": 1, "optimization_patterns": 1}
        after = await reopened.semantic_experiment_search("shorter checkout on phones", n_results=1)
        assert after.hits == before.hits
        # and the HNSW settings chosen at creation are still the collection's
        experiments = next(c for c in stats.collections if c.name == "experiments")
        assert experiments.space == "cosine" and experiments.hnsw["ef_search"] >= 200
        assert (await reopened.store_experiment_context(EXPERIMENT, ANALYSIS)).status == "unchanged"


async def test_a_collection_embedded_with_another_model_is_refused(chroma_path, embedding_model):
    async with open_service(path=chroma_path) as service:
        await service.store_experiment_context(EXPERIMENT)
        recorded = (await service.collection_stats()).collections[0].embedding_function
    assert recorded == "neonblue-local-minilm:sentence-transformers/all-MiniLM-L6-v2"
    other = make_embedding_function("chroma-default")  # Chroma's ONNX model: a different embedding space
    with pytest.raises(Conflict, match=r"holds vectors from neonblue-local-minilm.*but this process embeds with default"):
        async with open_service(path=chroma_path, embedding_function=other):
            pass
    # the refusal changed nothing: the original configuration still opens and finds the data
    async with open_service(path=chroma_path) as service:
        assert await count(service) == 1


def run_python(code: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NEONBLUE_HOME": str(home)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_a_second_process_cannot_open_the_same_embedded_store(chroma_path, embedding_model):
    async with open_service(path=chroma_path):
        proc = run_python(f"""
            import anyio
            from mcp_servers.chroma import open_service
            from schemas.errors import BackendUnavailable
            async def main():
                try:
                    async with open_service(path={str(chroma_path)!r}, warm_up=False):
                        print("opened")
                except BackendUnavailable as exc:
                    print("refused:", exc)
            anyio.run(main)
        """, chroma_path.parent)
        assert "refused:" in proc.stdout, proc.stderr[-2000:]
        assert f"pid {os.getpid()}" in proc.stdout and "single owner" in proc.stdout
        # within this process a second open shares the store
        async with open_service(path=chroma_path, warm_up=False) as second:
            assert await count(second) == 0


async def test_plain_chromadb_rebuilds_the_embedding_function_from_the_collection_configuration(
        chroma_path, embedding_model):
    """What any process that imports mcp_servers.chroma.embeddings gets: Chroma itself finds the
    function recorded in the collection and embeds query texts with it (no function passed)."""
    import chromadb

    from mcp_servers.chroma.embeddings import LocalMiniLMEmbeddingFunction

    async with open_service(path=chroma_path) as service:
        await service.store_experiment_context(EXPERIMENT, ANALYSIS)
        await service.store_experiment_context({"key": "annual-discount", "name": "Annual plan discount 20% vs 15%"})
    client = chromadb.PersistentClient(str(chroma_path))
    try:
        collection = client.get_collection("experiments")
        assert isinstance(collection.configuration["embedding_function"], LocalMiniLMEmbeddingFunction)
        found = collection.query(query_texts=["fewer checkout steps on phones"], n_results=1)
        assert found["ids"][0] == ["checkout-1step"]
    finally:
        client.close()


async def test_an_unreachable_chroma_server_is_a_clear_backend_error(embedding_model):
    with pytest.raises(BackendUnavailable, match="Chroma server at http://127.0.0.1:9 is unreachable"):
        async with open_service(url="http://127.0.0.1:9", warm_up=False):
            pass
