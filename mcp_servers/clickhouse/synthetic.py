"""Synthetic experiment traffic with known effects, as canonical Arrow event batches.

Used by the tests (do the statistics recover the effects we planted?), the
benchmark (10M events in seconds) and demos. Vectorised: a million users take
about a second. Each user: one exposure (a variant by weight, a device), a
conversion with the variant's probability, Poisson purchases ("revenue") whose
rate scales with a per-user propensity, and pre-period purchases (no experiment
tag) driven by the same propensity — so the pre-period covariate is correlated
with the outcome, as CUPED needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.event_rows import EVENT_SCHEMA

DAY_MS = 86_400_000


@dataclass(frozen=True)
class SyntheticExperiment:
    experiment_id: str = "exp"
    users: int = 10_000
    variants: tuple[str, ...] = ("control", "treatment")
    weights: tuple[float, ...] | None = None  # default: equal split
    start: datetime = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
    days: int = 14
    conversion_rate: Mapping[str, float] = field(default_factory=lambda: {"control": 0.10, "treatment": 0.12})
    revenue_mean: Mapping[str, float] = field(default_factory=lambda: {"control": 20.0, "treatment": 22.0})
    purchases_per_user: float = 1.0
    pre_period_days: int = 14
    pre_purchases_per_user: float = 1.0
    devices: Mapping[str, float] = field(default_factory=lambda: {"mobile": 0.5, "desktop": 0.4, "tablet": 0.1})
    # (device, variant) -> multiplier of that variant's revenue_mean for users on that device
    segment_lift: Mapping[tuple[str, str], float] = field(default_factory=dict)
    user_prefix: str = "u"
    seed: int = 0


def _ids(prefix: str, start: int, count: int) -> pa.Array:
    numbers = pa.array(np.arange(start, start + count, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), numbers, "")


def _strings(values: np.ndarray, labels: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(values, pa.int32()), pa.array(labels)).cast(pa.string())


def generate(spec: SyntheticExperiment) -> pa.Table:
    """All events of the experiment (and the users' pre-period), sorted by nothing in particular."""
    rng = np.random.default_rng(spec.seed)
    n = spec.users
    variants = list(spec.variants)
    weights = np.array(spec.weights or [1.0] * len(variants), dtype=float)
    variant = rng.choice(len(variants), size=n, p=weights / weights.sum())
    device_names = list(spec.devices)
    device_p = np.array([spec.devices[d] for d in device_names], dtype=float)
    device = rng.choice(len(device_names), size=n, p=device_p / device_p.sum())
    start_ms = int(spec.start.timestamp() * 1000)
    end_ms = start_ms + spec.days * DAY_MS
    exposed_at = start_ms + rng.integers(0, spec.days * DAY_MS, size=n)
    propensity = rng.gamma(2.0, 0.5, size=n)  # mean 1: heavy and light buyers

    conv_p = np.array([spec.conversion_rate.get(v, 0.0) for v in variants])[variant]
    converted = np.flatnonzero(rng.random(n) < conv_p)
    revenue_mu = np.array([spec.revenue_mean.get(v, 0.0) for v in variants])[variant]
    for (dev, var), lift in spec.segment_lift.items():
        mask = (device == device_names.index(dev)) & (variant == variants.index(var))
        revenue_mu = np.where(mask, revenue_mu * lift, revenue_mu)
    purchases = rng.poisson(spec.purchases_per_user * propensity)
    buyer = np.repeat(np.arange(n), purchases)
    pre = rng.poisson(spec.pre_purchases_per_user * propensity)
    pre_buyer = np.repeat(np.arange(n), pre)

    def span(users: np.ndarray, lo: np.ndarray | int, hi: np.ndarray | int) -> np.ndarray:
        return (lo + rng.random(len(users)) * (np.asarray(hi) - np.asarray(lo))).astype(np.int64)

    parts = {
        "exposure": np.arange(n),
        "conversion": converted,
        "revenue": buyer,
        "pre": pre_buyer,
    }
    times = {
        "exposure": exposed_at,
        "conversion": span(converted, exposed_at[converted], end_ms),
        "revenue": span(buyer, exposed_at[buyer], end_ms),
        "pre": span(pre_buyer, start_ms - spec.pre_period_days * DAY_MS, start_ms),
    }
    values = {
        "exposure": np.full(n, np.nan),
        "conversion": np.ones(len(converted)),
        "revenue": rng.gamma(2.0, revenue_mu[buyer] / 2.0),
        "pre": rng.gamma(2.0, 10.0, size=len(pre_buyer)),
    }
    users = np.concatenate(list(parts.values()))
    total = len(users)
    kind_code = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts.values())])
    # exposure, conversion, revenue, revenue (pre-period, no experiment tag)
    event_type = _strings(kind_code, ["exposure", "conversion", "revenue", "revenue"])
    metric = _strings(kind_code, ["", "conversion", "revenue", "revenue"])
    tagged = kind_code < 3
    value = np.concatenate(list(values.values()))
    columns = {
        "event_id": _ids(f"{spec.experiment_id}-{spec.seed}-", 0, total),
        "event_type": event_type,
        "experiment_id": _strings(np.where(tagged, 0, 1), [spec.experiment_id, ""]),
        "variant": _strings(np.where(kind_code == 0, variant[users], len(variants)), [*variants, ""]),
        "user_id": pc.take(_ids(spec.user_prefix, 0, n), pa.array(users)),
        "metric": metric,
        "value": pa.array(value, mask=np.isnan(value)),
        "timestamp": pa.array(np.concatenate(list(times.values())), pa.timestamp("ms", tz="UTC")),
        "session_id": pa.nulls(total, pa.string()).fill_null(""),
        "device": _strings(device[users], device_names),
        "country": pa.nulls(total, pa.string()).fill_null(""),
        "source": pa.nulls(total, pa.string()).fill_null(""),
        "plan": pa.nulls(total, pa.string()).fill_null(""),
        "raw": pa.nulls(total, pa.string()).fill_null(""),
    }
    return pa.table(columns, schema=EVENT_SCHEMA)
