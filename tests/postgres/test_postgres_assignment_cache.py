"""get_variant's memory: returning users are answered without a round trip, and the cache never serves
a stale answer after a change made in this process; a change made by another process reaches it by
LISTEN/NOTIFY, and without LISTEN every call checks the database as before."""

from __future__ import annotations

import pytest
from polling import eventually

from mcp_servers.postgres import open_service
from mcp_servers.postgres.assignment import AssignmentSpec, assign


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        yield svc


async def running(service, key="cached"):
    await service.create_experiment({
        "key": key, "name": "cache", "type": "feature", "primary_metric": "conversion",
        "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
    })
    await service.start_experiment(key)


async def outbox_rows(service, user_id: str) -> int:
    return await service.store.pool.fetchval("SELECT count(*) FROM neonblue.event_outbox WHERE user_id = $1", user_id)


async def test_returning_users_get_their_recorded_variant_from_memory(service):
    await running(service)
    assert service.store.listening
    first = {u: await service.get_variant("cached", u) for u in (f"u{i}" for i in range(30))}
    again = {u: await service.get_variant("cached", u) for u in first}
    for user, answer in again.items():
        assert (answer.variant_key, answer.bucket, answer.source) == (first[user].variant_key, first[user].bucket, "recorded")
        assert not answer.newly_recorded and not answer.newly_exposed


async def test_a_stop_or_conclusion_in_this_process_is_seen_by_the_next_call(service):
    await running(service)
    for _ in range(2):
        assert (await service.get_variant("cached", "returning")).in_experiment
    await service.stop_experiment("cached")
    out = await service.get_variant("cached", "returning")
    assert not out.in_experiment and out.variant_key is None and "stopped" in out.reason
    await service.stop_experiment("cached", winner="treatment")
    out = await service.get_variant("cached", "returning")
    assert (out.source, out.variant_key) == ("winner", "treatment")


async def test_after_a_weight_change_returning_users_keep_their_variant_and_new_users_follow_the_weights(service):
    await running(service)
    before = {u: (await service.get_variant("cached", u)).variant_key for u in (f"old{i}" for i in range(40))}
    assert set(before.values()) == {"control", "treatment"}
    await service.set_variant_weights("cached", {"control": 0.1, "treatment": 0.9})
    for user, variant in before.items():  # the first assignment wins
        assert (await service.get_variant("cached", user)).variant_key == variant
    spec = AssignmentSpec(seed="cached", weights=(0.1, 0.9))
    for user in (f"new{i}" for i in range(40)):
        expected = ("control", "treatment")[assign(spec, user).variation]
        assert (await service.get_variant("cached", user)).variant_key == expected


async def test_a_user_fetched_unexposed_is_exposed_once_when_shown(service):
    await running(service)
    fetched = await service.get_variant("cached", "later", exposed=False)
    assert fetched.newly_recorded and not fetched.newly_exposed
    assert (await service.get_variant("cached", "later", exposed=False)).newly_exposed is False
    assert await outbox_rows(service, "later") == 0
    shown = await service.get_variant("cached", "later")
    assert shown.newly_exposed and shown.variant_key == fetched.variant_key
    assert not (await service.get_variant("cached", "later")).newly_exposed
    assert await outbox_rows(service, "later") == 1


async def test_a_stop_by_another_process_reaches_the_cache(service, pg_dsn):
    await running(service)
    for _ in range(2):
        assert (await service.get_variant("cached", "returning")).in_experiment
    async with open_service(dsn=pg_dsn) as other:
        await other.stop_experiment("cached")

        async def stopped(_attempt: int) -> bool:
            return not (await service.get_variant("cached", "returning")).in_experiment

        await eventually(stopped, interval=0.01)


async def test_a_qa_override_set_by_another_process_replaces_the_remembered_variant(service, pg_dsn):
    await running(service)
    recorded = (await service.get_variant("cached", "qa-user")).variant_key
    forced_to = "control" if recorded == "treatment" else "treatment"
    async with open_service(dsn=pg_dsn) as other:
        await other.update_experiment("cached", {"forced_variations": {"qa-user": forced_to}})

        async def forced(_attempt: int) -> bool:
            out = await service.get_variant("cached", "qa-user")
            return (out.source, out.variant_key) == ("forced", forced_to)

        await eventually(forced, interval=0.01)


async def test_without_listen_every_call_checks_the_database(service, pg_dsn):
    await running(service)
    for _ in range(2):
        assert (await service.get_variant("cached", "returning")).in_experiment
    await service.store._listener.close()  # as when the LISTEN connection is lost
    assert not service.store.listening
    async with open_service(dsn=pg_dsn) as other:
        await other.stop_experiment("cached")
        out = await service.get_variant("cached", "returning")  # the very next call, no notification needed
    assert not out.in_experiment and "stopped" in out.reason


async def test_a_lost_listen_connection_is_opened_again_and_nothing_cached_before_is_trusted(service, pg_dsn):
    await running(service)
    for _ in range(2):
        assert (await service.get_variant("cached", "returning")).in_experiment
    lost = service.store._listener
    await service.store.pool.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'neonblue-postgres-listen'"
        " AND datname = current_database()")

    async def listening_again(_attempt: int) -> bool:
        return service.store.listening and service.store._listener is not lost

    await eventually(listening_again, interval=0.01)
    async with open_service(dsn=pg_dsn) as other:
        await other.stop_experiment("cached")

        async def stopped(_attempt: int) -> bool:
            return not (await service.get_variant("cached", "returning")).in_experiment

        await eventually(stopped, interval=0.01)
