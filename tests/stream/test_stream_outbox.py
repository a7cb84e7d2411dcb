"""The outbox relay on the real tansu broker, PostgreSQL and chDB (issue 18): the registry's exposures and
results reach the event store once each — after a re-send, after a relay dies between producing and
marking sent, and after the broker was down while they were recorded — and a user exposed both by
get_variant and by an SDK over Kafka counts once in get_variant_statistics."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from conftest import make_experiment, open_world, prefixed  # type: ignore[import-not-found]
from kafka_topics import create_topics  # type: ignore[import-not-found]

from schemas.events import Event
from schemas.settings import Settings
from stream_processor.generator import produce
from stream_processor.outbox import OutboxRelay, outbox_event
from stream_processor.runner import StreamWorker, build_outbox_relay, build_processor, outbox_topics

FAST = {"lease_seconds": 2.0, "poll_interval": 0.05, "min_backoff": 0.1, "max_backoff": 1.0, "send_timeout": 5.0}


def worker(settings: Settings, services: dict[str, Any], **relay: Any) -> StreamWorker:
    return StreamWorker(build_processor(settings, services, max_batch=2_000),
                        build_outbox_relay(settings, services, **{**FAST, **relay}))


async def event_counts(world, key: str) -> dict[str, int]:
    """Events of the experiment in ClickHouse by type, read with FINAL as every analysis reads them."""
    table = await world.clickhouse.store.query(
        f"SELECT event_type, count() AS n FROM {world.clickhouse.db}.events FINAL"
        " WHERE experiment_id = {exp:String} GROUP BY event_type", {"exp": key})
    return {row["event_type"]: row["n"] for row in table.to_pylist()}


async def wait_for(condition, what: str, timeout: float = 120, task: asyncio.Task | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if task is not None and task.done():
            task.result()  # surface a crash
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def until_counts(world, key: str, expected: dict[str, int], task: asyncio.Task, timeout: float = 120) -> None:
    async def reached() -> bool:
        return await event_counts(world, key) == expected

    try:
        await wait_for(reached, f"{expected}", timeout, task)
    except AssertionError:
        raise AssertionError(f"ClickHouse has {await event_counts(world, key)}, expected {expected}") from None


async def until_stored(running: StreamWorker, events: int, task: asyncio.Task, timeout: float = 120) -> None:
    """Until the stream processor has stored `events` events in all (copies included: the event store
    collapses copies of an event, in background merges and with FINAL, so its rows cannot tell)."""
    async def reached() -> bool:
        return running.stats.stored >= events

    await wait_for(reached, f"{events} events through the processor ({running.stats.snapshot()})", timeout, task)


async def unsent(world) -> int:
    return await world.services["postgres"].store.pool.fetchval(
        "SELECT count(*) FROM neonblue.event_outbox WHERE sent_at IS NULL")


async def record_traffic(postgres, key: str, users: list[str]) -> dict[str, int]:
    """Serve every user, record a conversion for every other one (with an event id) and revenue for every
    third (without); returns the events expected in ClickHouse by type."""
    conversions = revenues = 0
    for i, user in enumerate(users):
        await postgres.get_variant(key, user)
        if i % 2 == 0:
            await postgres.record_result(key, user, "conversion", 1.0, event_id=f"conv-{key}-{user}")
            conversions += 1
        if i % 3 == 0:
            await postgres.record_result(key, user, "revenue", 10.0 + i % 7)
            revenues += 1
    return {"exposure": len(users), "metric": conversions + revenues}


async def stopped(running: StreamWorker, task: asyncio.Task) -> None:
    running.stop()
    await asyncio.wait_for(task, 60)


def test_an_outbox_row_is_a_valid_event_on_the_right_topic(stream_settings: Settings) -> None:
    row = {"id": 1, "event_id": "e-1", "event_type": "metric", "experiment_key": "k", "variant_key": "control",
           "user_id": "u1", "metric": "revenue", "value": 12.5, "occurred_at": datetime(2026, 11, 1, 10, tzinfo=UTC)}
    event = Event.model_validate_json(orjson.dumps(outbox_event(row), option=orjson.OPT_UTC_Z))
    assert (event.event_id, event.metric_name, event.metric_value, event.variant) == ("e-1", "revenue", 12.5, "control")
    assert event.routing_metadata.source == "neonblue.outbox"
    exposure = Event.model_validate(outbox_event({**row, "event_type": "exposure", "metric": None, "value": None}))
    assert exposure.metric is None and exposure.value is None
    to = prefixed(stream_settings)
    assert outbox_topics(stream_settings) == {"exposure": to("experiments_events"), "metric": to("experiment_metrics")}


async def test_relayed_exposures_and_results_are_stored_once_even_when_sent_again(stream_settings: Settings) -> None:
    await create_topics(stream_settings.effective_kafka_bootstrap, stream_settings.kafka_topics, partitions=2)
    async with open_world(stream_settings) as world:
        postgres = world.services["postgres"]
        await make_experiment(postgres, "outbox-once")
        expected = await record_traffic(postgres, "outbox-once", [f"u{i}" for i in range(300)])
        for i in range(20):  # assigned, never shown: their results are metric events, they are no exposure
            await postgres.get_variant("outbox-once", f"hidden-{i}", exposed=False)
            await postgres.record_result("outbox-once", f"hidden-{i}", "conversion", 1.0)
        expected["metric"] += 20

        running = worker(stream_settings, world.services)
        task = asyncio.create_task(running.run())
        try:
            await until_counts(world, "outbox-once", expected, task)
            assert await unsent(world) == 0
            assert running.relay.stats.relayed == expected["exposure"] + expected["metric"]

            # Every row sent again (as if each mark-sent had been lost): the processor stores the copies,
            # and the event store still counts each event once.
            await postgres.store.pool.execute("UPDATE neonblue.event_outbox SET sent_at = NULL")
            total = expected["exposure"] + expected["metric"]
            await until_stored(running, 2 * total, task)
            assert running.relay.stats.relayed == 2 * total
            assert await event_counts(world, "outbox-once") == expected
            assert await unsent(world) == 0
        finally:
            await stopped(running, task)

        stats = await world.clickhouse.get_variant_statistics("outbox-once", metrics=["conversion", "revenue"])
        assert sum(v.users for v in stats.variants) == 300  # the hidden users are not exposures
        assert sum(s.sum for s in stats.statistics if s.metric == "conversion") == 150


async def test_stopping_right_after_the_relay_sent_leaves_nothing_unconsumed(stream_settings: Settings) -> None:
    """The embedded broker keeps its log in memory: what the relay sent must be stored before the worker
    stops (the relay stops first, then the processor catches up)."""
    await create_topics(stream_settings.effective_kafka_bootstrap, stream_settings.kafka_topics, partitions=1)
    async with open_world(stream_settings) as world:
        postgres = world.services["postgres"]
        await make_experiment(postgres, "outbox-stop")
        expected = await record_traffic(postgres, "outbox-stop", [f"u{i}" for i in range(200)])
        running = worker(stream_settings, world.services, batch_size=50)
        task = asyncio.create_task(running.run())

        async def relayed() -> bool:
            return running.relay.stats.relayed == expected["exposure"] + expected["metric"]

        try:
            await wait_for(relayed, "the relay to send everything", 60, task)
        finally:
            await stopped(running, task)
        assert await event_counts(world, "outbox-stop") == expected
        assert running.snapshot()["outbox_relay"]["relayed"] == expected["exposure"] + expected["metric"]


async def test_a_relay_that_dies_between_producing_and_marking_sent_loses_and_doubles_nothing(
        stream_settings: Settings) -> None:
    await create_topics(stream_settings.effective_kafka_bootstrap, stream_settings.kafka_topics, partitions=1)
    async with open_world(stream_settings) as world:
        postgres = world.services["postgres"]
        await make_experiment(postgres, "outbox-crash")
        expected = await record_traffic(postgres, "outbox-crash", [f"u{i}" for i in range(120)])
        total = expected["exposure"] + expected["metric"]

        # The dying relay: claims every row and produces it (the broker acknowledges), then dies before
        # marking anything sent. The rows stay leased, so the live relay must wait for the lease to end.
        dying = OutboxRelay(postgres.store, stream_settings.effective_kafka_bootstrap,
                            outbox_topics(stream_settings), lease_seconds=3.0)
        producer = await dying._ensure_producer()  # noqa: SLF001 - the steps of relay_once, cut short
        claimed = await postgres.store.claim_outbox(10_000, dying.lease_seconds)
        acked, failed, _ = await dying._produce(producer, claimed)  # noqa: SLF001
        await dying._close_producer()  # noqa: SLF001
        assert (len(acked), failed) == (total, [])
        assert await unsent(world) == total

        running = worker(stream_settings, world.services)
        task = asyncio.create_task(running.run())
        try:
            await until_stored(running, 2 * total, task)  # the dying relay's copies, then the live relay's
            assert running.relay.stats.relayed == total
            assert await event_counts(world, "outbox-crash") == expected
            assert await unsent(world) == 0
            attempts = await postgres.store.pool.fetch("SELECT DISTINCT attempts FROM neonblue.event_outbox")
            assert [r["attempts"] for r in attempts] == [2]
        finally:
            await stopped(running, task)


async def test_an_exposure_from_get_variant_and_from_an_sdk_counts_once(stream_settings: Settings) -> None:
    await create_topics(stream_settings.effective_kafka_bootstrap, stream_settings.kafka_topics, partitions=2)
    key = "outbox-both"
    async with open_world(stream_settings) as world:
        postgres = world.services["postgres"]
        await make_experiment(postgres, key)
        served = {f"u{i}": (await postgres.get_variant(key, f"u{i}")).variant_key for i in range(200)}
        converted = [f"u{i}" for i in range(0, 200, 3)]
        for user in converted:
            await postgres.record_result(key, user, "conversion", 1.0, event_id=f"conv-{user}")
        # An SDK (GrowthBook-compatible hashing, so the same variants) reports its own exposures over Kafka:
        # for half the users get_variant served, and for 50 users NeonBlue never served.
        sdk_only = {f"sdk-{i}": (await postgres.predict_user_assignment(key, f"sdk-{i}")).variant_key
                    for i in range(50)}
        now = datetime.now(UTC).isoformat()
        sdk = [(prefixed(stream_settings)("experiments_events"), user.encode(), orjson.dumps({
            "event_id": f"sdk-exposure-{user}", "event_type": "exposure", "timestamp": now, "user_id": user,
            "experiment_id": key, "variant": variant}))
            for user, variant in [*list(served.items())[::2], *sdk_only.items()]]
        await produce(stream_settings.effective_kafka_bootstrap, iter(sdk), progress=False)

        running = worker(stream_settings, world.services)
        task = asyncio.create_task(running.run())
        try:
            expected = {"exposure": 200 + 100 + 50, "metric": len(converted)}
            await until_counts(world, key, expected, task)
        finally:
            await stopped(running, task)

        rows = await postgres.store.pool.fetch("SELECT event_type, count(*) AS n FROM neonblue.event_outbox GROUP BY 1")
        assert {r["event_type"]: r["n"] for r in rows} == {"exposure": 200, "metric": len(converted)}  # SDK's not relayed
        for use_rollup in (True, False):
            stats = await world.clickhouse.get_variant_statistics(key, metrics=["conversion"], use_rollup=use_rollup)
            users = {v.variant: v.users for v in stats.variants}
            expected_users = {variant: sum(1 for v in [*served.values(), *sdk_only.values()] if v == variant)
                              for variant in ("control", "treatment")}
            assert users == expected_users and sum(users.values()) == 250, use_rollup
            assert all(v.excluded_multiple_variants == 0 for v in stats.variants)
            conversions = {s.variant: s.sum for s in stats.statistics}
            assert conversions == {variant: sum(1 for u in converted if served[u] == variant)
                                   for variant in ("control", "treatment")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_with_the_broker_down_the_outbox_holds_and_drains_exactly_once_on_recovery(
        stream_settings: Settings, kafka_broker, tmp_path: Path) -> None:
    # A broker of this test's own (the session's is shared), stopped and started again on the same port.
    # It keeps its log in memory, so a restart starts every topic over at offset 0 and forgets the group's
    # offsets: a consumer still holding the old positions would skip the new log's first messages (a real
    # Kafka keeps both). So the relay runs through the outage, and the stream processor is a new member
    # after it, as after any restart of that broker.
    broker = type(kafka_broker)(port=_free_port(), run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    broker.start()
    settings = stream_settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
    key = "outbox-outage"
    try:
        await create_topics(broker.bootstrap, settings.kafka_topics, partitions=1)
        async with open_world(settings) as world:
            postgres = world.services["postgres"]
            await make_experiment(postgres, key)
            relay = build_outbox_relay(settings, world.services, **FAST)
            relaying = asyncio.create_task(relay.run())
            try:
                first = StreamWorker(build_processor(settings, world.services), None)
                processing = asyncio.create_task(first.run())
                try:
                    before = await record_traffic(postgres, key, [f"u{i}" for i in range(100)])
                    await until_counts(world, key, before, processing)
                finally:
                    await stopped(first, processing)

                broker.stop()
                during = await record_traffic(postgres, key, [f"late-{i}" for i in range(150)])
                waiting = during["exposure"] + during["metric"]

                async def relay_is_retrying() -> bool:
                    return relay.stats.retries >= 2

                await wait_for(relay_is_retrying, "the relay to fail and retry", 60, relaying)
                assert await unsent(world) == waiting  # every fact waits in the outbox
                backlog = await relay.backlog()
                assert backlog["unsent"] == waiting and backlog["oldest_age_s"] > 0 and backlog["last_error"]
                assert await event_counts(world, key) == before

                broker.start()
                await create_topics(broker.bootstrap, settings.kafka_topics, partitions=1)

                async def drained() -> bool:
                    return await unsent(world) == 0

                await wait_for(drained, "the outbox to drain", 120, relaying)
                after = StreamWorker(build_processor(settings, world.services), None)
                processing = asyncio.create_task(after.run())
                try:
                    await until_counts(world, key, {k: before[k] + during[k] for k in before}, processing)
                finally:
                    await stopped(after, processing)
            finally:
                relay.stop()
                await asyncio.wait_for(relaying, 60)

            stats = await world.clickhouse.get_variant_statistics(key, metrics=["conversion", "revenue"])
            assert sum(v.users for v in stats.variants) == 250
            assert sum(s.sum for s in stats.statistics if s.metric == "conversion") == 50 + 75
    finally:
        broker.stop()


async def test_neonblue_stream_relays_the_outbox_and_status_reports_the_backlog(stream_settings: Settings,
                                                                               tmp_path: Path) -> None:
    """The entry point, as a real process: `neonblue stream` runs the relay beside the processor."""
    import signal
    import subprocess
    import sys

    from test_stream_crash import COUNT_SCRIPT, _env, _start  # type: ignore[import-not-found]

    from mcp_router.apps.cli import _outbox_line
    from mcp_router.runtime.stack import Stack
    from mcp_servers.postgres import open_service

    await create_topics(stream_settings.effective_kafka_bootstrap, stream_settings.kafka_topics, partitions=1)
    async with open_service(stream_settings) as postgres:
        await make_experiment(postgres, "outbox-entry")
        expected = await record_traffic(postgres, "outbox-entry", [f"u{i}" for i in range(60)])
        total = expected["exposure"] + expected["metric"]
        await postgres.store.settle()  # new users are recorded just after their answer (assignment_writes=behind)
        stack = Stack(stream_settings)
        backlog = await asyncio.to_thread(stack.outbox_backlog)
        assert backlog["unsent"] == total and backlog["oldest_age_s"] >= 0
        assert _outbox_line(backlog, None).startswith(f"outbox: {total} waiting (oldest ")

        env = _env(stream_settings, tmp_path / "home")
        proc = _start(env)
        try:
            async def relayed_and_consumed() -> bool:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "exited"
                return await postgres.store.pool.fetchval(
                    "SELECT count(*) FROM neonblue.event_outbox WHERE sent_at IS NULL") == 0

            await wait_for(relayed_and_consumed, "`neonblue stream` to relay the outbox", 180)
        finally:
            proc.send_signal(signal.SIGTERM)  # the relay stops, the processor catches up, commits, leaves
            code = proc.wait(60)
        assert code == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else code
        backlog = await asyncio.to_thread(stack.outbox_backlog)
        assert (backlog["unsent"], backlog["oldest_age_s"]) == (0, None)
        assert _outbox_line(backlog, {"relayed": total, "retries": 0}) == f"outbox: 0 waiting; relay: {total} sent, 0 retries"

    counted = subprocess.run([sys.executable, "-c", COUNT_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
    assert int(counted.stdout.strip()) == total
