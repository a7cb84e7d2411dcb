"""The event outbox (issue 18): every exposure get_variant serves and every result record_result stores
is written to `event_outbox` by the statement that writes the assignment or the result — both or
neither — once per fact, with a deterministic event id; users not shown their variant, QA-forced users,
returning users and SDK-reported exposures write nothing."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import pytest
from mcp import Client
from mcp_calls import call  # type: ignore[import-not-found]

from mcp_servers.postgres import build_server, open_service

KEY = "outbox-test"


def md5_uuid(name: str) -> str:
    """The documented event id derivation (neonblue.event_uuid), computed outside the database."""
    return str(uuid.UUID(hashlib.md5(name.encode()).hexdigest()))


@pytest.fixture
async def service(pg_dsn):
    async with open_service(dsn=pg_dsn) as svc:
        await svc.create_experiment({
            "key": KEY, "name": "Outbox", "type": "ui", "primary_metric": "conversion",
            "secondary_metrics": ["revenue"], "forced_variations": {"qa-user": "treatment"},
            "variants": [{"key": "control", "is_control": True, "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
        })
        await svc.start_experiment(KEY)
        yield svc


async def outbox(service, event_type: str | None = None) -> list[dict]:
    rows = await service.store.pool.fetch(
        "SELECT event_id, event_type, experiment_key, variant_key, user_id, metric, value, occurred_at, sent_at"
        " FROM neonblue.event_outbox WHERE $1::text IS NULL OR event_type = $1 ORDER BY id", event_type)
    return [dict(r) for r in rows]


async def assignment(service, user_id: str) -> asyncpg.Record | None:
    return await service.store.pool.fetchrow(
        "SELECT a.xmin::text AS version, a.exposed_at, a.source, v.key AS variant FROM neonblue.assignments a"
        " JOIN neonblue.variants v ON v.id = a.variant_id WHERE a.user_id = $1", user_id)


# ---------------------------------------------------------------- exposures from get_variant


async def test_a_served_assignment_writes_one_exposure_and_a_returning_user_writes_nothing(service, pg_dsn):
    served = await service.get_variant(KEY, "u1")  # fresh path: the definition is not cached yet
    assert served.newly_recorded and served.newly_exposed
    [row] = await outbox(service)
    recorded = await assignment(service, "u1")
    assert row == {**row, "event_id": md5_uuid(f"exposure:{KEY}:u1"), "event_type": "exposure", "experiment_key": KEY,
                   "variant_key": served.variant_key, "user_id": "u1", "metric": None, "value": None, "sent_at": None}
    assert row["occurred_at"] == recorded["exposed_at"]

    second = await service.get_variant(KEY, "u2")  # cached path: one statement
    assert second.newly_exposed
    for _ in range(3):
        for user in ("u1", "u2"):
            again = await service.get_variant(KEY, user)
            assert (again.source, again.newly_recorded, again.newly_exposed) == ("recorded", False, False)
    async with open_service(dsn=pg_dsn) as other:  # another process, its cache empty: the fresh path
        assert not (await other.get_variant(KEY, "u1")).newly_exposed
    assert [r["user_id"] for r in await outbox(service)] == ["u1", "u2"]
    assert (await assignment(service, "u1"))["version"] == recorded["version"]  # the row was never rewritten


async def test_exposed_false_records_the_assignment_and_a_later_exposed_call_writes_the_exposure(service, pg_dsn):
    hidden = await service.get_variant(KEY, "u1", exposed=False)
    assert hidden.newly_recorded and not hidden.newly_exposed
    assert await outbox(service) == [] and (await assignment(service, "u1"))["exposed_at"] is None
    assert not (await service.get_variant(KEY, "u1", exposed=False)).newly_exposed
    shown = await service.get_variant(KEY, "u1")  # cached path
    assert shown.newly_exposed and shown.variant_key == hidden.variant_key and not shown.newly_recorded
    assert not (await service.get_variant(KEY, "u1")).newly_exposed

    await service.get_variant(KEY, "u2", exposed=False)
    async with open_service(dsn=pg_dsn) as other:  # fresh path
        assert (await other.get_variant(KEY, "u2")).newly_exposed
        assert not (await other.get_variant(KEY, "u2")).newly_exposed
    rows = await outbox(service)
    assert [r["user_id"] for r in rows] == ["u1", "u2"]
    assert rows[0]["occurred_at"] == (await assignment(service, "u1"))["exposed_at"]


async def test_forced_users_users_outside_and_concluded_experiments_are_never_exposures(service):
    forced = await service.get_variant(KEY, "qa-user")
    assert forced.source == "forced" and not forced.newly_exposed
    await service.get_variant(KEY, "qa-user")
    await service.create_experiment({
        "key": "targeted", "name": "Targeted", "type": "ui", "primary_metric": "conversion",
        "targeting": {"country": "US"},
        "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}],
    })
    await service.start_experiment("targeted")
    outside = await service.get_variant("targeted", "u-fr", {"country": "FR"})
    assert not outside.in_experiment and not outside.newly_exposed
    await service.stop_experiment(KEY, winner="treatment")
    winner = await service.get_variant(KEY, "late-user")
    assert winner.source == "winner" and not winner.newly_exposed
    assert await outbox(service) == []


async def test_sdk_exposures_from_the_stream_are_not_written_to_the_outbox_again(service):
    outcome = await service.record_exposure_rows([(KEY, "sdk-user", "treatment", None)])
    assert outcome.recorded == 1
    assert (await assignment(service, "sdk-user"))["exposed_at"] is not None
    served = await service.get_variant(KEY, "sdk-user")
    assert (served.source, served.variant_key, served.newly_exposed) == ("recorded", "treatment", False)
    await service.assign_many(KEY, ["sdk-user"])
    assert await outbox(service) == []


async def test_concurrent_first_calls_write_one_exposure(service, pg_dsn):
    async with open_service(dsn=pg_dsn) as other:
        await service.get_variant(KEY, "warm")  # cache the definition in both services
        await other.get_variant(KEY, "warm")
        answers = await asyncio.gather(*(svc.get_variant(KEY, f"racer-{i % 5}", exposed=bool(j % 2))
                                         for j in range(8) for i, svc in enumerate((service, other) * 5)))
    assert len({(a.user_id, a.variant_key) for a in answers}) == 5
    rows = await outbox(service)
    assert sorted(r["user_id"] for r in rows) == ["racer-0", "racer-1", "racer-2", "racer-3", "racer-4", "warm"]
    assert sum(a.newly_exposed for a in answers) == 5


# ---------------------------------------------------------------- exposures from assign_many


async def test_batch_assignment_writes_exposures_and_exposed_false_defers_them(service):
    batch = await service.assign_many(KEY, ["b1", "b2", "b3", "qa-user"], exposed=False)
    assert (batch.newly_recorded, batch.newly_exposed) == (4, 0)
    assert await outbox(service) == []
    predicted = await service.assign_many(KEY, ["b1", "b4"], record=False)  # a prediction writes nothing
    assert predicted.newly_exposed == 0 and await assignment(service, "b4") is None

    batch = await service.assign_many(KEY, ["b1", "b2", "b4", "qa-user"])  # b1, b2 shown now; b4 new; qa never
    assert (batch.newly_recorded, batch.already_recorded, batch.newly_exposed) == (1, 3, 3)
    rows = await outbox(service)
    assert sorted(r["user_id"] for r in rows) == ["b1", "b2", "b4"]
    assert all(r["variant_key"] == batch.assigned[r["user_id"]] for r in rows)
    assert (await service.assign_many(KEY, ["b1", "b2", "b4", "b5"])).newly_exposed == 1  # only b5 is new
    assert not (await service.get_variant(KEY, "b3")).newly_recorded
    assert len(await outbox(service)) == 5  # b3's exposure came with its first exposed call


# ---------------------------------------------------------------- results


async def test_a_result_writes_one_metric_event_and_a_repeated_event_id_writes_nothing(service):
    served = await service.get_variant(KEY, "u1")
    first = await service.record_result(KEY, "u1", "revenue", 12.5, event_id="order-17")
    again = await service.record_result(KEY, "u1", "revenue", 12.5, event_id="order-17")
    assert again.duplicate and again.id == first.id
    no_id = await service.record_result(KEY, "u1", "conversion", 1.0)
    long_id = "x" * 150  # the event schema's ids stop at 128 characters: derived from the caller's id
    await service.record_result(KEY, "u1", "conversion", 1.0, event_id=long_id)
    rows = await outbox(service, "metric")
    assert [(r["event_id"], r["metric"], r["value"], r["variant_key"], r["user_id"]) for r in rows] == [
        ("order-17", "revenue", 12.5, served.variant_key, "u1"),
        (rows[1]["event_id"], "conversion", 1.0, served.variant_key, "u1"),
        (md5_uuid(f"result:{KEY}:{long_id}"), "conversion", 1.0, served.variant_key, "u1"),
    ]
    assert rows[0]["occurred_at"] == first.recorded_at and rows[1]["occurred_at"] == no_id.recorded_at
    uuid.UUID(rows[1]["event_id"])  # derived from the result row


async def test_a_result_of_a_user_not_exposed_is_still_a_metric_event(service):
    await service.get_variant(KEY, "u1", exposed=False)
    await service.record_result(KEY, "u1", "conversion", 1.0, event_id="c-1")
    assert [r["event_type"] for r in await outbox(service)] == ["metric"]  # the analysis counts exposed users only


# ---------------------------------------------------------------- one transaction


async def test_a_failing_outbox_write_leaves_neither_the_assignment_nor_the_result(service, pg_dsn, caplog):
    """A real constraint refuses some outbox rows: the statement that writes the assignment or the
    result fails as a whole, so the registry never holds a fact the event store will not get. Recording
    before the answer, the caller gets the error; recording behind it (the default), the answer has gone,
    the write is retried, then given up and logged, and nothing is written either."""
    behind = service
    async with open_service(dsn=pg_dsn, assignment_writes="before_answer") as service:
        await service.get_variant(KEY, "warm")  # cached definition: the one-statement path
        await service.get_variant(KEY, "doomed-later", exposed=False)
        await service.store.pool.execute(
            "ALTER TABLE neonblue.event_outbox ADD CONSTRAINT refuse_doomed"
            " CHECK (user_id NOT LIKE 'doomed%' AND metric IS DISTINCT FROM 'revenue')")
        before = len(await outbox(service))

        with pytest.raises(asyncpg.CheckViolationError):
            await service.get_variant(KEY, "doomed-1")  # cached path
        async with open_service(dsn=pg_dsn, assignment_writes="before_answer") as other:
            with pytest.raises(asyncpg.CheckViolationError):
                await other.get_variant(KEY, "doomed-2")  # fresh path
            with pytest.raises(asyncpg.CheckViolationError):
                await other.get_variant(KEY, "doomed-later")  # marking a recorded assignment exposed
        with pytest.raises(asyncpg.CheckViolationError):
            await service.get_variant(KEY, "doomed-later")
        with pytest.raises(asyncpg.CheckViolationError):
            await service.assign_many(KEY, ["fine-1", "doomed-3"])
        with pytest.raises(asyncpg.CheckViolationError):
            await service.record_result(KEY, "warm", "revenue", 5.0, event_id="refused")

        for user in ("doomed-1", "doomed-2", "doomed-3", "fine-1"):
            assert await assignment(service, user) is None, user
        assert (await assignment(service, "doomed-later"))["exposed_at"] is None
        assert await service.store.pool.fetchval("SELECT count(*) FROM neonblue.results") == 0
        assert len(await outbox(service)) == before

        # Without exposure nothing goes to the outbox, so nothing is refused.
        assert (await service.get_variant(KEY, "doomed-4", exposed=False)).newly_recorded

    # The definition cached now (the first call may not have cached it: the fixture's change notifications
    # can arrive while it reads), so a new user is answered from the hash and recorded behind the answer.
    await behind.get_variant(KEY, "warm")
    assert behind.store.listening
    answer = await behind.get_variant(KEY, "doomed-5")  # answered from the hash ...
    assert answer.in_experiment and answer.newly_exposed
    await behind.store.settle()  # ... and its write refused by the constraint, three times
    assert await assignment(behind, "doomed-5") is None
    assert "gave up recording 1 assignment(s)" in caplog.text


# ---------------------------------------------------------------- the MCP tool


async def test_the_get_variant_tool_takes_exposed(service):
    async with Client(build_server(service)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        exposed = tools["get_variant"].input_schema["properties"]["exposed"]
        assert exposed["type"] == "boolean" and exposed["default"] is True
        hidden = await call(client, "get_variant", {"experiment": KEY, "user_id": "m1", "exposed": False})
        assert hidden["newly_recorded"] and not hidden["newly_exposed"]
        shown = await call(client, "get_variant", {"experiment": KEY, "user_id": "m1"})
        assert shown["newly_exposed"]
        await call(client, "record_result", {"experiment": KEY, "user_id": "m1", "metric": "conversion", "value": 1})
    assert [r["event_type"] for r in await outbox(service)] == ["exposure", "metric"]
