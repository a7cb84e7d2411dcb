"""The stream processor as a real process: SIGKILL mid-stream loses and doubles nothing; SIGTERM commits and exits."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import committed_total, make_experiment, open_world, plan_for, prefixed  # type: ignore[import-not-found]

from schemas.settings import Settings
from stream_processor.generator import generate_events, produce

COUNT_SCRIPT = """
import asyncio, sys
from schemas.settings import Settings
from mcp_servers.clickhouse import open_service
async def main():
    async with open_service(Settings()) as ch:
        t = await ch.store.query(f"SELECT count() AS n FROM {ch.db}.events FINAL", {})
        print(int(t.column("n")[0].as_py()))
asyncio.run(main())
"""


def _env(settings: Settings, home: Path) -> dict[str, str]:
    import json

    return {**os.environ, "NEONBLUE_HOME": str(home), "DATABASE_URL": settings.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.effective_kafka_bootstrap,
            "KAFKA_TOPICS": json.dumps(settings.kafka_topics), "KAFKA_GROUP_ID": settings.kafka_group_id,
            "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic, "LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}


def _start(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mcp_router", "stream"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _wait_committed(settings: Settings, at_least: int, proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done = await committed_total(settings)
        if done >= at_least:
            return done
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "processor exited"
        assert time.monotonic() < deadline, f"only {done} of {at_least} committed"
        await asyncio.sleep(0.05)


async def test_sigkill_mid_stream_then_restart_stores_every_event_once(stream_settings: Settings, tmp_path: Path) -> None:
    async with open_world(stream_settings) as world:
        experiment = await make_experiment(world.services["postgres"], "stream-crash")
    # Enough that the pipelined processor is still mid-stream at its first commit (it fetches 50k events at a
    # time, keeps up to 6 batches in flight and gathers up to 100k rows per ClickHouse insert).
    events = list(generate_events(plan_for(experiment, users=150_000, seed=3)))
    to = prefixed(stream_settings)
    sent = await produce(stream_settings.effective_kafka_bootstrap, ((to(t), k, v) for t, k, v in events),
                         progress=False)
    env = _env(stream_settings, tmp_path / "home")

    first = _start(env)
    try:
        partial = await _wait_committed(stream_settings, 1, first, timeout=180)
    finally:
        first.send_signal(signal.SIGKILL)  # no flush, no commit, no goodbye
        first.wait(30)
    assert partial < sent, "the processor finished before it could be killed; produce more events"

    second = _start(env)
    try:
        await _wait_committed(stream_settings, sent, second, timeout=240)
    finally:
        second.send_signal(signal.SIGTERM)  # graceful: finish the batch, commit, leave the group
        code = second.wait(60)
    assert code == 0, second.stderr.read().decode()[-2000:] if second.stderr else code

    counted = subprocess.run([sys.executable, "-c", COUNT_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
    assert int(counted.stdout.strip()) == sent
    assert await committed_total(stream_settings) == sent
