"""Streamed exposures the hash agrees with cost no assignment row (issue 21, migration 0007), and lose
nothing: every user keeps the variant they were shown, through weight changes, SDK variants the hash does
not give, QA overrides, another process and a change racing the stream's write. Real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from mcp_servers.postgres import open_service
from mcp_servers.postgres.assignment import AssignmentSpec, assign
from schemas.events import Event
from stream_processor.sinks import PostgresSink, Record

KEY = "kept-exp"
USERS = [f"user-{i}" for i in range(400)]


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        await svc.create_experiment({
            "key": KEY, "name": "Kept", "type": "ui", "primary_metric": "conversion",
            "forced_variations": {"qa-user": "treatment"},
            "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}]})
        await svc.start_experiment(KEY)
        yield svc


def hashed(user: str, weights=(0.5, 0.5)) -> str:
    return ("control", "treatment")[assign(AssignmentSpec(seed=KEY, weights=weights), user).variation]


def other(variant: str) -> str:
    return "control" if variant == "treatment" else "treatment"


def exposure(offset: int, user: str, variant: str) -> Record:
    raw = orjson.dumps({"event_id": f"x{offset}", "event_type": "exposure", "timestamp": "2026-03-01T10:00:00Z",
                        "user_id": user, "experiment_id": KEY, "variant": variant})
    return Record.of(Event.model_validate_json(raw), raw, "exposures", 0, offset)


async def stream(sink: PostgresSink, pairs: list[tuple[str, str]], start: int = 0) -> None:
    for offset, (user, variant) in enumerate(pairs, start):
        sink.add(exposure(offset, user, variant))
    await sink.flush()


async def registry(service) -> tuple[dict[str, str], int, bool]:
    """(assignment rows: user -> variant key, streamed_exposures rows, hash_divergent) of the experiment."""
    rows = await service.store.pool.fetch(
        "SELECT a.user_id, v.key FROM neonblue.assignments a JOIN neonblue.variants v ON v.id = a.variant_id "
        "JOIN neonblue.experiments e ON e.id = a.experiment_id WHERE e.key = $1", KEY)
    kept = await service.store.pool.fetchval(
        "SELECT count(*) FROM neonblue.streamed_exposures s JOIN neonblue.experiments e ON e.id = s.experiment_id "
        "WHERE e.key = $1", KEY)
    divergent = await service.store.pool.fetchval("SELECT hash_divergent FROM neonblue.experiments WHERE key = $1", KEY)
    return {r["user_id"]: r["key"] for r in rows}, kept, divergent


async def test_agreeing_exposures_write_no_row_yet_count_and_stay_sticky_through_a_weight_change(service, pg_dsn):
    sink = PostgresSink(service)
    shown = {user: hashed(user) for user in USERS}
    await stream(sink, [*shown.items(), ("qa-user", "treatment")])
    rows, kept, divergent = await registry(service)
    assert (rows, kept, divergent) == ({}, 1, False)  # 401 exposures, one streamed_exposures row
    summary = await service.analyze_experiment_data(KEY)
    counts = {v.variant_key: v.assigned_users for v in summary.variants}
    # An SDK's exposure is analysed, a QA-forced user's too (as when it was a row of source 'exposure').
    assert counts == {"control": list(shown.values()).count("control"),
                      "treatment": list(shown.values()).count("treatment") + 1}
    assert sum((await service.get_experiment(KEY)).assignments_by_variant.values()) == len(USERS) + 1
    async with open_service(dsn=pg_dsn) as elsewhere:  # another process answers them alike
        for user in USERS[:50]:
            assert (await elsewhere.get_variant(KEY, user)).variant_key == shown[user]

    await stream(sink, list(shown.items()), start=1000)  # a replay: remembered, nothing written
    assert (await registry(service))[1] == 1

    # The hash stops being the truth: every kept exposure becomes an assignment row in that transaction.
    await service.set_variant_weights(KEY, {"control": 0.1, "treatment": 0.9}, reason="ramp")
    rows, kept, divergent = await registry(service)
    assert divergent and kept == 0
    assert rows == {**shown, "qa-user": "treatment"}
    moved = [user for user in USERS if hashed(user, (0.1, 0.9)) != shown[user]]
    assert moved  # users the new weights would put elsewhere keep what they were shown
    async with open_service(dsn=pg_dsn) as elsewhere:
        for user in moved[:30]:
            served = await elsewhere.get_variant(KEY, user)
            assert (served.source, served.variant_key) == ("recorded", shown[user])
    counts_after = {v.variant_key: v.assigned_users for v in (await service.analyze_experiment_data(KEY)).variants}
    assert counts_after == counts


async def test_an_sdk_variant_the_hash_does_not_give_is_a_row_and_makes_the_kept_ones_rows(service):
    sink = PostgresSink(service)
    agreeing = {user: hashed(user) for user in USERS[:100]}
    await stream(sink, list(agreeing.items()))
    assert (await registry(service))[:2] == ({}, 1)
    rebel = USERS[100]
    await stream(sink, [(rebel, other(hashed(rebel))), (USERS[0], other(agreeing[USERS[0]]))], start=100)
    rows, kept, divergent = await registry(service)
    assert divergent and kept == 0
    assert rows == {**agreeing, rebel: other(hashed(rebel))}  # USERS[0]'s first exposure won
    assert (await service.get_variant(KEY, rebel)).variant_key == other(hashed(rebel))
    # From now on every exposure is a row, agreeing or not.
    await stream(sink, [(USERS[200], hashed(USERS[200]))], start=200)
    assert (await registry(service))[0][USERS[200]] == hashed(USERS[200])


async def test_a_user_shown_the_forced_variant_is_kept_and_keeps_it_once_un_forced(service):
    forced_to = other(hashed("qa-user"))
    await service.store.pool.execute(
        "UPDATE neonblue.experiments SET forced_variations = jsonb_build_object('qa-user', $2::text) WHERE key = $1",
        KEY, forced_to)
    sink = PostgresSink(service)
    await stream(sink, [("qa-user", forced_to)])
    assert (await registry(service))[:3] == ({}, 1, False)
    await service.store.pool.execute("UPDATE neonblue.experiments SET forced_variations = '{}' WHERE key = $1", KEY)
    rows, kept, divergent = await registry(service)
    assert (rows, kept, divergent) == ({"qa-user": forced_to}, 0, True)
    assert (await service.get_variant(KEY, "qa-user")).variant_key == forced_to


async def test_a_change_racing_the_write_turns_the_exposures_into_rows(service, pg_dsn):
    """The stream hashed at one revision; a weight change commits before its write: the exposures are
    recorded as rows after all, not kept under a hash that is no longer the truth."""
    experiment = (await service.store.experiments_by_key([KEY]))[KEY]
    change = await asyncpg.connect(pg_dsn)
    try:
        transaction = change.transaction()
        await transaction.start()
        await change.execute("UPDATE neonblue.variants SET weight = CASE WHEN is_control THEN 0.2 ELSE 0.8 END "
                             "WHERE experiment_id = $1", experiment["id"])
        shown = {user: hashed(user) for user in USERS[:20]}
        batch = (experiment["revision"], list(shown), [experiment["variants"][v == "treatment"]["id"]
                                                       for v in shown.values()], [experiment["created_at"]] * 20)
        keeping = asyncio.create_task(service.store.keep_streamed_exposures({experiment["id"]: batch}))
        await asyncio.sleep(0.3)
        assert not keeping.done()  # waits for the change's lock
        await transaction.commit()
        assert await asyncio.wait_for(keeping, 10) == set()  # not kept: the caller records rows instead
    finally:
        await change.close()
    assert (await registry(service))[1:] == (0, True)

    sink = PostgresSink(service)  # the sink, reading the new revision, records rows
    await stream(sink, list(shown.items()))
    rows, kept, _ = await registry(service)
    assert rows == shown and kept == 0


async def test_an_edit_between_the_read_and_the_write_is_read_again_not_recorded_as_rows(service):
    """The stream read the experiment, then someone edited its description (the revision moved, the hash
    did not): the exposures are split again on a fresh read and kept. After a weight change instead,
    they are recorded as rows under the variant they were shown."""
    stale = await service.store.experiments_by_key([KEY])
    experiment_id = stale[KEY]["id"]
    ids = {v["key"]: v["id"] for v in stale[KEY]["variants"]}
    shown = {user: hashed(user) for user in USERS[:50]}
    rows = [(experiment_id, user, ids[variant], None) for user, variant in shown.items()]
    await service.update_experiment(KEY, {"description": "edited while the stream was reading"})

    left, kept = await service._keep_agreeing(rows, stale)  # noqa: SLF001 - the race, made deterministic
    assert (left, kept) == ([], 50)
    assert (await registry(service))[:3] == ({}, 1, False)

    stale = await service.store.experiments_by_key([KEY])
    await service.set_variant_weights(KEY, {"control": 0.3, "treatment": 0.7}, reason="ramp")
    more = {user: hashed(user) for user in USERS[50:80]}
    left, kept = await service._keep_agreeing(  # noqa: SLF001
        [(experiment_id, user, ids[variant], None) for user, variant in more.items()], stale)
    assert kept == 0 and sorted(row[1] for row in left) == sorted(more)  # recorded as rows by the caller
