"""The stream processor on the real tansu broker, chDB and PostgreSQL: no loss, no duplicates, dead letters."""

from __future__ import annotations

import asyncio
import time

import orjson
from conftest import (  # type: ignore[import-not-found]
    committed_total,
    make_experiment,
    open_world,
    plan_for,
    prefixed,
    read_dlq,
)
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka_topics import create_topics  # type: ignore[import-not-found]

from schemas.settings import Settings
from stream_processor.generator import generate_events, produce
from stream_processor.runner import build_processor


async def run_until(processor, done, timeout: float = 240) -> None:
    """Run a processor until `done()` holds, then stop it cleanly (finish batch, commit, leave)."""
    task = asyncio.create_task(processor.run())
    try:
        deadline = time.monotonic() + timeout
        while not await done():
            if task.done():
                task.result()  # surface a crash
            assert time.monotonic() < deadline, f"timed out; stats {processor.stats.snapshot()}"
            await asyncio.sleep(0.2)
    finally:
        processor.stop()
        await asyncio.wait_for(task, 30)


async def test_every_event_stored_exactly_once_and_a_full_replay_adds_nothing(stream_settings: Settings) -> None:
    async with open_world(stream_settings) as world:
        experiment = await make_experiment(world.services["postgres"], "stream-exact")
        events = list(generate_events(plan_for(experiment, users=42_000)))
        assert len(events) >= 100_000
        to = prefixed(stream_settings)
        sent = await produce(stream_settings.effective_kafka_bootstrap,
                             ((to(t), k, v) for t, k, v in events), progress=False)

        processor = build_processor(stream_settings, world.services)

        async def all_committed() -> bool:
            return processor.stats.consumed >= sent

        await run_until(processor, all_committed)
        assert processor.stats.dead_lettered == 0
        assert await world.count_events() == sent
        assert await committed_total(stream_settings) == sent

        exposures = sum(1 for t, _, _ in events if t == "experiments_events")
        summary = await world.services["postgres"].analyze_experiment_data("stream-exact")
        assert sum(v.assigned_users for v in summary.variants) == exposures  # the registry saw every exposure

        # Replay the whole topic with a fresh consumer group: the stores must not change.
        replay_settings = stream_settings.model_copy(update={"kafka_group_id": stream_settings.kafka_group_id + "-replay"})
        replay = build_processor(replay_settings, world.services)

        async def replayed() -> bool:
            return replay.stats.consumed >= sent

        await run_until(replay, replayed)
        assert await world.count_events() == sent
        summary = await world.services["postgres"].analyze_experiment_data("stream-exact")
        assert sum(v.assigned_users for v in summary.variants) == exposures


async def test_two_members_of_one_group_split_partitions_and_store_everything_once(stream_settings: Settings) -> None:
    await create_topics(stream_settings.effective_kafka_bootstrap, stream_settings.kafka_topics, partitions=4)
    async with open_world(stream_settings) as world:
        experiment = await make_experiment(world.services["postgres"], "stream-two")
        events = list(generate_events(plan_for(experiment, users=8_000, seed=2)))
        to = prefixed(stream_settings)
        sent = await produce(stream_settings.effective_kafka_bootstrap,
                             ((to(t), k, v) for t, k, v in events), progress=False)
        first = build_processor(stream_settings, world.services, max_batch=2_000)
        second = build_processor(stream_settings, world.services, max_batch=2_000)

        async def together() -> bool:
            return first.stats.consumed + second.stats.consumed >= sent

        task = asyncio.create_task(second.run())
        try:
            await run_until(first, together)
        finally:
            second.stop()
            await asyncio.wait_for(task, 30)
        assert first.stats.consumed > 0 and second.stats.consumed > 0  # both members did work
        assert first.stats.consumed + second.stats.consumed >= sent
        assert await world.count_events() == sent
        assert await committed_total(stream_settings) == sent


def _good(i: int) -> dict:
    return {"event_id": f"good-{i}", "event_type": "conversion", "timestamp": "2026-11-01T10:00:00Z",
            "user_id": f"u{i}", "experiment_id": "stream-fuzz", "variant": "control"}


malformed = st.one_of(
    st.binary(min_size=1, max_size=64).filter(lambda b: not b.strip().startswith(b"{")),  # not JSON at all
    st.builds(lambda i, v: orjson.dumps({**_good(i), "value": v}), st.integers(0, 10**6),
              st.text(min_size=1, max_size=5)),  # wrong type
    st.builds(lambda i, k: orjson.dumps({k: v for k, v in _good(i).items() if k != k or k not in ("user_id",)}),
              st.integers(0, 10**6), st.just("x")),  # missing user_id
    st.builds(lambda i, t: orjson.dumps({**_good(i), "event_type": t}), st.integers(0, 10**6),
              st.text(alphabet="qwxyz", min_size=3, max_size=8)),  # unknown event type
    st.builds(lambda i, e: orjson.dumps({**_good(i), "experiment_id": e}), st.integers(0, 10**6),
              st.from_regex(r"ghost-[a-z]{4}", fullmatch=True)),  # unknown experiment
    st.builds(lambda i: orjson.dumps({**_good(i), "timestamp": "2026-11-01T10:00:00"}), st.integers(0, 10**6)),
    st.builds(lambda i: orjson.dumps({**_good(i), "properties": {"blob": "x" * 70_000}}), st.integers(0, 10**6)),
)


def fuzzed(strategy, n: int) -> list[bytes]:
    """n inputs drawn by hypothesis (derandomised, so CI sees the same corpus every run)."""
    drawn: list[bytes] = []

    @hsettings(max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: bytes) -> None:
        drawn.append(value)

    collect()
    return drawn


async def test_malformed_events_go_to_the_dead_letter_topic_and_good_ones_are_stored(stream_settings: Settings) -> None:
    bad = fuzzed(malformed, 1200)
    assert len(bad) >= 1000
    async with open_world(stream_settings) as world:
        await make_experiment(world.services["postgres"], "stream-fuzz")
        good = [orjson.dumps(_good(i)) for i in range(500)]
        topic = prefixed(stream_settings)("analytics_events")
        values = [v for i, b in enumerate(bad) for v in ([b, good[i]] if i < len(good) else [b])]
        mixed = [(topic, b"k", v) for v in values]
        sent = await produce(stream_settings.effective_kafka_bootstrap, iter(mixed), progress=False)
        processor = build_processor(stream_settings, world.services)

        async def drained() -> bool:
            return processor.stats.consumed >= sent

        await run_until(processor, drained)
        dead = await read_dlq(stream_settings, expected=len(bad))
        assert len(dead) == len(bad), f"{len(dead)} dead letters for {len(bad)} bad inputs; {processor.stats.snapshot()}"
        reasons = [dict((k, v.decode()) for k, v in r.headers)["reason"] for r in dead]
        assert all(reasons)
        assert any(r.startswith("bad JSON") for r in reasons)
        assert any(r.startswith("unknown experiment") for r in reasons)
        assert any(r.startswith("oversized") for r in reasons)
        assert {r.value for r in dead} == set(bad)  # the original bytes, untouched
        headers = dict((k, v.decode()) for k, v in dead[0].headers)
        assert {"source_topic", "source_partition", "source_offset"} <= set(headers)
        assert await world.count_events() == len(good)


async def test_a_sink_that_is_down_is_retried_without_commit_then_resumes(stream_settings: Settings, pg_server) -> None:
    import asyncpg

    database = stream_settings.database_url.rsplit("/", 1)[1]
    async with open_world(stream_settings) as world:
        experiment = await make_experiment(world.services["postgres"], "stream-down")
        events = list(generate_events(plan_for(experiment, users=3_000, seed=4)))
        to = prefixed(stream_settings)
        admin = await asyncpg.connect(pg_server.dsn)
        try:
            # Take the registry's database away for real: refuse and cut every connection.
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database)
            sent = await produce(stream_settings.effective_kafka_bootstrap, ((to(t), k, v) for t, k, v in events),
                                 progress=False)
            processor = build_processor(stream_settings, world.services, known_experiments=None)
            task = asyncio.create_task(processor.run())
            deadline = time.monotonic() + 120
            while processor.stats.retries < 2:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, processor.stats.snapshot()
                await asyncio.sleep(0.2)
            assert await committed_total(stream_settings) == 0  # nothing committed while a sink is down
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            while processor.stats.consumed < sent:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline + 120, processor.stats.snapshot()
                await asyncio.sleep(0.2)
            processor.stop()
            await asyncio.wait_for(task, 30)
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await admin.close()
        assert await world.count_events() == sent
        assert await committed_total(stream_settings) == sent
        exposures = sum(1 for t, _, _ in events if t == "experiments_events")
        summary = await world.services["postgres"].analyze_experiment_data("stream-down")
        assert sum(v.assigned_users for v in summary.variants) == exposures


async def test_the_optimization_loop_evaluates_the_experiments_a_batch_brought_metrics_for() -> None:
    from stream_processor.optimization import OptimizationLoop

    evaluated: list[str] = []

    async def autopilot(key: str) -> dict:
        evaluated.append(key)
        return {"action": "keep_running", "applied": False}

    loop = OptimizationLoop(autopilot, min_interval=60)
    # (topic, experiment key) pairs of a batch's valid events: only metric topics trigger, once per experiment
    await loop.on_batch({("p.experiment_metrics", "exp-b"), ("p.experiment_metrics", "exp-a"),
                         ("p.experiments_events", "exp-c"), ("experiment_metrics", "exp-a")})
    assert evaluated == ["exp-a", "exp-b"]
    await loop.on_batch({("p.experiment_metrics", "exp-a")})  # within min_interval: not again
    assert evaluated == ["exp-a", "exp-b"]
