"""sync_from_registry: the backfill from the experiment registry (the seeds' migrate_to_chromadb)."""

from __future__ import annotations

import pytest

from schemas.errors import InvalidInput


def records(corpus, n=None):
    return [item["record"] for item in corpus["experiments"][:n]]


async def test_sync_stores_every_record_and_a_rerun_reembeds_nothing(service, corpus):
    first = await service.sync_from_registry(records(corpus, 12), batch_size=5)
    assert (first.received, first.created, first.updated, first.unchanged, first.failed) == (12, 12, 0, 0, [])
    changed = records(corpus, 12)
    changed[3] = {**changed[3], "lift": 0.5, "p_value": 0.0001}
    second = await service.sync_from_registry(changed, batch_size=5)
    assert (second.created, second.updated, second.unchanged) == (0, 1, 11)
    hit = (await service.semantic_experiment_search("anything", where={"experiment_key": changed[3]["key"]})).hits[0]
    assert hit.metadata["lift"] == 0.5


async def test_invalid_records_are_reported_and_the_rest_stored(service, corpus):
    batch = [*records(corpus, 3), {"name": "no key"}, {"key": "bad-lift", "lift": "a lot"}, "not an object"]
    report = await service.sync_from_registry(batch)
    assert (report.received, report.created) == (6, 3)
    failures = [(failure.key, failure.reason) for failure in report.failed]
    assert [key for key, _ in failures] == [None, "bad-lift", None]
    assert "key: Field required" in failures[0][1]
    assert failures[1][1].startswith("lift: Input should be a valid number")
    assert failures[2][1] == "expected an object (dict), got str"


async def test_sync_reads_an_async_iterable_and_a_connected_registry(service, corpus):
    async def stream():
        for record in records(corpus, 4):
            yield record

    assert (await service.sync_from_registry(stream())).created == 4

    async def registry():  # e.g. the router's adapter over the PostgreSQL service's experiments
        return records(corpus, 6)

    service.registry = registry
    report = await service.sync_from_registry()
    assert (report.created, report.unchanged) == (2, 4)


async def test_sync_without_records_or_registry_says_what_is_missing(service):
    with pytest.raises(InvalidInput, match="no experiments given and no registry connected"):
        await service.sync_from_registry()


async def test_the_progress_bar_goes_to_stderr_only(service, corpus, capsys):
    await service.sync_from_registry(records(corpus, 5), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "syncing experiments" in captured.err and "5/5" in captured.err
