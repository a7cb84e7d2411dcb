"""`neonblue generate`: realistic synthetic traffic with KNOWN true effects.

Users are assigned with the registry's own GrowthBook-compatible hashing, so
the variant in every event is the one `get_variant` would give. Each arm has a
true conversion rate, revenue per converter and optional extra metrics (e.g.
LLM latency, tokens, resolution). Users also get pre-period activity correlated
with their in-experiment behaviour, so CUPED has a real covariate to use.
Events are keyed by user id and spread over the topics as the design says:
exposures → experiments_events, page views → user_events, conversions and
revenue → analytics_events, other metrics → experiment_metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson

from mcp_servers.postgres.assignment import AssignmentSpec, assign_batch

DEVICES = ("mobile", "desktop", "tablet")
DEVICE_P = (0.55, 0.38, 0.07)
COUNTRIES = ("US", "GB", "DE", "IN", "BR")
COUNTRY_P = (0.45, 0.15, 0.15, 0.15, 0.10)
SOURCES = ("organic", "paid", "email", "referral")
SOURCE_P = (0.4, 0.3, 0.2, 0.1)


@dataclass(frozen=True)
class MetricTruth:
    """A per-user metric: normal(mean, sd) clipped at 0, or Bernoulli(mean) when sd is None."""

    mean: float
    sd: float | None = None


@dataclass(frozen=True)
class ArmTruth:
    conversion_rate: float
    revenue_per_conversion: float = 0.0  # mean order value (lognormal, sigma 0.5) among converters
    metrics: dict[str, MetricTruth] = field(default_factory=dict)


@dataclass(frozen=True)
class TrafficPlan:
    experiment_key: str
    variant_keys: Sequence[str]
    spec: AssignmentSpec
    truths: dict[str, ArmTruth]
    users: int
    start: datetime
    days: int = 14
    seed: int = 0
    user_prefix: str = "u"
    pre_period_days: int = 14
    pre_period_correlation: float = 0.7  # share of users whose pre-period intent equals their in-experiment intent
    # Simulate a broken assignment (SRM): the share of each variant's users that actually get exposed.
    exposure_keep: dict[str, float] = field(default_factory=dict)


def _iso(ts: np.ndarray) -> list[str]:
    return [datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in ts]


def generate_events(plan: TrafficPlan) -> Iterator[tuple[str, bytes, bytes]]:
    """Yield (topic, key, value) for every event of the plan, in user order."""
    rng = np.random.default_rng(plan.seed)
    user_ids = [f"{plan.user_prefix}{i:07d}" for i in range(plan.users)]
    variations, _ = assign_batch(plan.spec, user_ids)
    n = plan.users
    start = plan.start.timestamp()
    exposed_at = start + rng.uniform(0, plan.days * 86400, n)
    converted_after = rng.exponential(3600 * 6, n)
    intent = rng.uniform(size=n)
    pre_intent = np.where(rng.uniform(size=n) < plan.pre_period_correlation, intent, rng.uniform(size=n))
    pre_at = start - rng.uniform(3600, plan.pre_period_days * 86400, n)
    device = rng.choice(len(DEVICES), n, p=DEVICE_P)
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_P)
    source = rng.choice(len(SOURCES), n, p=SOURCE_P)
    keep = rng.uniform(size=n)
    control = plan.truths[plan.variant_keys[0]]
    exposed_iso = _iso(exposed_at)
    # Conversions follow exposure by hours, but never land after the simulated window (no future events).
    conv_iso = _iso(np.minimum(exposed_at + converted_after, start + plan.days * 86400 - 1))
    pre_iso = _iso(pre_at)
    key = plan.experiment_key
    for i, user in enumerate(user_ids):
        v = int(variations[i])
        if v < 0:
            continue
        variant = plan.variant_keys[v]
        if keep[i] >= plan.exposure_keep.get(variant, 1.0):
            continue
        truth = plan.truths[variant]
        ukey = user.encode()
        segment = {"device": DEVICES[device[i]], "country": COUNTRIES[country[i]], "source": SOURCES[source[i]]}
        base = {"user_id": user, "experiment_id": key, "variant": variant, "segment": segment}
        yield "experiments_events", ukey, orjson.dumps(
            {"event_id": f"{key}:{user}:exp", "event_type": "exposure", "timestamp": exposed_iso[i], **base})
        yield "user_events", ukey, orjson.dumps(
            {"event_id": f"{key}:{user}:pv", "event_type": "page_view", "timestamp": exposed_iso[i],
             "user_id": user, "segment": segment})
        # Pre-period behaviour (before the experiment, same experiment key so ClickHouse can find the covariate).
        if pre_intent[i] < control.conversion_rate:
            yield "analytics_events", ukey, orjson.dumps(
                {"event_id": f"{key}:{user}:pre-conv", "event_type": "conversion", "timestamp": pre_iso[i],
                 **base, "variant": None})
            if control.revenue_per_conversion > 0:
                value = float(control.revenue_per_conversion * rng.lognormal(-0.125, 0.5))
                yield "analytics_events", ukey, orjson.dumps(
                    {"event_id": f"{key}:{user}:pre-rev", "event_type": "revenue", "timestamp": pre_iso[i],
                     **base, "variant": None, "value": round(value, 2)})
        if intent[i] < truth.conversion_rate:
            yield "analytics_events", ukey, orjson.dumps(
                {"event_id": f"{key}:{user}:conv", "event_type": "conversion", "timestamp": conv_iso[i], **base})
            if truth.revenue_per_conversion > 0:
                value = float(truth.revenue_per_conversion * rng.lognormal(-0.125, 0.5))
                yield "analytics_events", ukey, orjson.dumps(
                    {"event_id": f"{key}:{user}:rev", "event_type": "revenue", "timestamp": conv_iso[i],
                     **base, "value": round(value, 2)})
        for name, m in truth.metrics.items():
            value = float(rng.uniform() < m.mean) if m.sd is None else max(0.0, float(rng.normal(m.mean, m.sd)))
            yield "experiment_metrics", ukey, orjson.dumps(
                {"event_id": f"{key}:{user}:{name}", "event_type": "metric", "timestamp": conv_iso[i], **base,
                 "metric": name, "value": round(value, 4)})


class ProduceFailed(RuntimeError):
    """The broker stopped acknowledging: how many events it had acknowledged, and why it stopped."""

    def __init__(self, bootstrap: str, acknowledged: int, attempted: int, cause: BaseException) -> None:
        reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"Kafka at {bootstrap} stopped acknowledging: {acknowledged:,} of {attempted:,} events "
                         f"sent were acknowledged ({reason})")
        self.acknowledged = acknowledged
        self.attempted = attempted


async def produce(bootstrap: str, events: Iterator[tuple[str, bytes, bytes]], *, rate: float | None = None,
                  total: int | None = None, progress: bool = True, topic_prefix: str = "",
                  request_timeout_ms: int = 30_000) -> int:
    """Send events to Kafka at up to `rate` events/s; return how many were acknowledged.

    If the broker goes away, raise ProduceFailed with the exact count it acknowledged (each send's
    future is counted as it resolves), once every send in flight has resolved or failed; a send is
    given up after `request_timeout_ms`.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20,
                                max_request_size=8 << 20, request_timeout_ms=request_timeout_ms)
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise ProduceFailed(bootstrap, 0, 0, exc) from None
    sent = acknowledged = 0
    failure: BaseException | None = None
    pending: list[asyncio.Future] = []

    async def settle() -> None:
        """Wait for the sends in flight and count them (retrieving each error keeps asyncio quiet)."""
        nonlocal acknowledged, failure
        if pending:
            await asyncio.wait(pending)
        for future in pending:
            if (exc := future.exception()) is None:
                acknowledged += 1
            elif failure is None:
                failure = exc
        pending.clear()

    started = time.monotonic()
    bar = Progress(TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress, transient=False)
    try:
        with bar:
            task = bar.add_task("events", total=total)
            for topic, key, value in events:
                pending.append(await producer.send(f"{topic_prefix}{topic}", value=value, key=key))
                sent += 1
                if len(pending) >= 5000:
                    await settle()
                    if failure is not None:
                        raise failure
                    bar.update(task, completed=acknowledged)
                    if rate:
                        ahead = sent / rate - (time.monotonic() - started)
                        if ahead > 0:
                            await asyncio.sleep(ahead)
            await settle()
            if failure is not None:
                raise failure
            bar.update(task, completed=acknowledged)
    except KafkaError as exc:
        await settle()  # every send in flight resolves (acknowledged or expired) before the count is final
        await producer.stop()
        raise ProduceFailed(bootstrap, acknowledged, sent, exc) from None
    await producer.stop()
    return acknowledged
