"""get_variant with assignment_writes_behind: a new user is answered by the hash alone and recorded
after the answer, but only while every recorded assignment agrees with the hash; whenever one may not
(weights changed after start, SDK exposures, a user no longer forced) the database decides first, so a
user never gets another variant than the one recorded for them."""

from __future__ import annotations

import asyncpg
import pytest

from mcp_servers.postgres import open_service
from mcp_servers.postgres.assignment import AssignmentSpec, assign

KEY = "behind"


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn, assignment_writes_behind=True) as svc:
        yield svc


async def running(service, **overrides):
    spec = {"key": KEY, "name": "write-behind", "type": "feature", "primary_metric": "conversion",
            "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}]}
    spec.update(overrides)
    await service.create_experiment(spec)
    await service.start_experiment(KEY)


def hashed(user: str, weights=(0.5, 0.5)) -> str:
    return ("control", "treatment")[assign(AssignmentSpec(seed=KEY, weights=weights), user).variation]


async def recorded(dsn: str) -> dict[str, tuple[str, str, bool]]:
    """user -> (variant key, source, exposed), read on a connection of its own (another process's view)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT a.user_id, v.key, a.source, a.exposed_at IS NOT NULL AS exposed FROM neonblue.assignments a
            JOIN neonblue.variants v ON v.id = a.variant_id""")
        return {r["user_id"]: (r["key"], r["source"], r["exposed"]) for r in rows}
    finally:
        await conn.close()


async def test_new_users_are_answered_by_the_hash_and_recorded_with_their_exposure(service, pg_dsn):
    await running(service)
    await service.get_variant(KEY, "warm-up")  # caches the definition
    answers = {u: await service.get_variant(KEY, u) for u in (f"u{i}" for i in range(40))}
    hidden = await service.get_variant(KEY, "not-shown", exposed=False)
    for user, out in answers.items():
        assert (out.source, out.variant_key, out.newly_recorded, out.newly_exposed) == ("hash", hashed(user), True, True)
    assert service.store.writes_behind
    # Reads through the service wait for the queued writes: the outbox holds one exposure per user shown.
    outbox = await service.store.pool.fetch("SELECT user_id, variant_key FROM neonblue.event_outbox")
    assert sorted((r["user_id"], r["variant_key"]) for r in outbox if r["user_id"] != "warm-up") == sorted(
        (u, a.variant_key) for u, a in answers.items())
    rows = await recorded(pg_dsn)
    assert {u: rows[u] for u in answers} == {u: (a.variant_key, "hash", True) for u, a in answers.items()}
    assert rows["not-shown"] == (hidden.variant_key, "hash", False)
    again = await service.get_variant(KEY, "u0")
    assert (again.source, again.variant_key, again.newly_recorded) == ("recorded", answers["u0"].variant_key, False)


async def test_a_result_right_after_the_answer_finds_the_assignment(service):
    await running(service)
    await service.get_variant(KEY, "warm-up")
    out = await service.get_variant(KEY, "buyer")
    assert out.source == "hash"
    stored = await service.record_result(KEY, "buyer", "conversion", 1.0)
    assert stored.variant_key == out.variant_key


async def test_queued_writes_are_written_when_the_service_closes(pg_dsn):
    async with open_service(dsn=pg_dsn, assignment_writes_behind=True) as svc:
        await running(svc)
        await svc.get_variant(KEY, "warm-up")
        answers = {u: (await svc.get_variant(KEY, u)).variant_key for u in ("x1", "x2", "x3")}
    rows = await recorded(pg_dsn)
    assert {u: rows[u][0] for u in answers} == answers


async def test_after_a_weight_change_other_processes_still_serve_the_recorded_variants(service, pg_dsn):
    await running(service)
    before = {u: (await service.get_variant(KEY, u)).variant_key for u in (f"old{i}" for i in range(30))}
    await service.set_variant_weights(KEY, {"control": 0.05, "treatment": 0.95})
    async with open_service(dsn=pg_dsn, assignment_writes_behind=True) as other:
        await other.get_variant(KEY, "warm-up")
        for user, variant in before.items():  # users this process never saw: their record wins over the hash
            out = await other.get_variant(KEY, user)
            assert (out.source, out.variant_key) == ("recorded", variant)
        for user in (f"new{i}" for i in range(30)):
            assert (await other.get_variant(KEY, user)).variant_key == hashed(user, (0.05, 0.95))


async def test_an_sdk_exposure_with_another_variant_wins_over_the_hash(service, pg_dsn):
    await running(service)
    await service.get_variant(KEY, "warm-up")
    user = "sdk-user"
    other_variant = "control" if hashed(user) == "treatment" else "treatment"
    outcome = await service.record_exposures([{"experiment_key": KEY, "user_id": user, "variant_key": other_variant}])
    assert outcome.recorded == 1
    assert (await service.get_variant(KEY, user)).variant_key == other_variant
    async with open_service(dsn=pg_dsn, assignment_writes_behind=True) as other:
        await other.get_variant(KEY, "warm-up")
        out = await other.get_variant(KEY, user)
        assert (out.source, out.variant_key) == ("recorded", other_variant)


async def test_a_user_no_longer_forced_keeps_the_forced_assignment(service, pg_dsn):
    user = "qa-user"
    forced_to = "control" if hashed(user) == "treatment" else "treatment"
    await running(service, forced_variations={user: forced_to})
    assert (await service.get_variant(KEY, user)).source == "forced"
    await service.update_experiment(KEY, {"forced_variations": {}})
    async with open_service(dsn=pg_dsn, assignment_writes_behind=True) as other:
        await other.get_variant(KEY, "warm-up")
        out = await other.get_variant(KEY, user)
        assert (out.source, out.variant_key) == ("recorded", forced_to)


async def test_nothing_is_recorded_for_an_experiment_stopped_before_the_write(service, pg_dsn):
    await running(service)
    await service.get_variant(KEY, "warm-up")
    await service.stop_experiment(KEY)
    out = await service.get_variant(KEY, "late")
    assert not out.in_experiment
    assert "late" not in await recorded(pg_dsn)


async def test_durable_assignments_refuse_write_behind(pg_dsn):
    with pytest.raises(ValueError, match="durable_assignments"):
        async with open_service(dsn=pg_dsn, durable_assignments=True, assignment_writes_behind=True):
            pass
