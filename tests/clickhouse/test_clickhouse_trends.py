"""predict_experiment_trends: the stated model recovers a planted trend and weekly pattern."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from mcp_servers.clickhouse import forecast, open_service
from schemas.errors import InvalidInput, NotFound
from schemas.event_rows import EVENT_SCHEMA
from schemas.settings import Settings

FIRST_DAY = date(2025, 1, 6)  # a Monday
DAYS = 42
USERS_PER_DAY = 60
LEVEL = {"control": 10.0, "treatment": 12.0}
SLOPE = {"control": 0.10, "treatment": 0.25}
WEEKDAY = np.array([0.0, 0.5, 1.0, 1.5, 2.0, -3.0, -4.0])  # Mon..Sun


def truth(variant: str, day: date) -> float:
    return LEVEL[variant] + SLOPE[variant] * (day - FIRST_DAY).days + WEEKDAY[day.weekday()]


def daily_events(days: int, experiment_id: str, seed: int = 3) -> pa.Table:
    """Each day, fresh users per variant: an exposure and one revenue event of truth + noise."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {name: [] for name in EVENT_SCHEMA.names}
    k = 0
    for d in range(days):
        day = FIRST_DAY + timedelta(days=d)
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        for variant in LEVEL:
            values = truth(variant, day) + rng.normal(0, 2.0, USERS_PER_DAY)
            for i, value in enumerate(values):
                user = f"{variant}-{d}-{i}"
                for event_type, metric, val in (("exposure", "", None), ("revenue", "revenue", float(value))):
                    k += 1
                    row = {"event_id": f"e{k}", "event_type": event_type, "experiment_id": experiment_id,
                           "variant": variant if event_type == "exposure" else "", "user_id": user,
                           "metric": metric, "value": val, "timestamp": noon + timedelta(minutes=i),
                           "session_id": "", "device": "", "country": "", "source": "", "plan": "", "raw": ""}
                    for name, v in row.items():
                        cols[name].append(v)
    return pa.table(cols, schema=EVENT_SCHEMA)


@pytest.fixture(scope="module")
async def ch(chdb_path):
    database = f"t_trend_{uuid.uuid4().hex[:8]}"
    async with open_service(Settings(), chdb_path=chdb_path, database=database, clickhouse_url="") as service:
        await service.ingest_arrow(daily_events(DAYS, "trend"), "six-weeks")
        await service.ingest_arrow(daily_events(5, "short"), "five-days")
        await service.ingest_arrow(daily_events(2, "tiny"), "two-days")
        yield service


async def test_the_forecast_recovers_trend_weekday_pattern_and_covers_the_truth(ch):
    result = await ch.predict_experiment_trends("trend", "revenue", days_ahead=14)
    assert "OLS linear trend + day-of-week effects" in result.model
    assert result.history_days == 90 and result.days_ahead == 14
    covered = total = 0
    for variant in result.variants:
        assert len(variant.history) == DAYS
        assert variant.history[0].date == FIRST_DAY and variant.history[0].active_users == USERS_PER_DAY
        assert variant.slope_per_day == pytest.approx(SLOPE[variant.variant], abs=0.02)
        effects = np.array(list(variant.day_of_week_effects.values()))
        np.testing.assert_allclose(effects, WEEKDAY - WEEKDAY[0], atol=0.35)
        assert variant.residual_std == pytest.approx(2.0 / np.sqrt(USERS_PER_DAY), rel=0.35)
        assert [p.date for p in variant.forecast] == [FIRST_DAY + timedelta(days=DAYS + i) for i in range(14)]
        for point in variant.forecast:
            assert point.lower < point.predicted < point.upper
            assert point.predicted == pytest.approx(truth(variant.variant, point.date), abs=0.6)
            covered += point.lower <= truth(variant.variant, point.date) <= point.upper
            total += 1
        bt = variant.backtest
        assert bt.origins == 14 and bt.horizon_days == 7
        assert bt.mae < bt.naive_mae / 2  # the model beats "repeat yesterday" on a weekly pattern
        assert bt.mape is not None and bt.mape < 0.05
    assert covered / total >= 0.85


async def test_history_is_capped_and_statistics_can_be_chosen(ch):
    result = await ch.predict_experiment_trends("trend", "revenue", days_ahead=3, history_days=10,
                                                statistic="share_of_active_users")
    for variant in result.variants:
        assert [p.date for p in variant.history] == [FIRST_DAY + timedelta(days=DAYS - 10 + i) for i in range(10)]
        assert all(p.value == 1.0 for p in variant.history)  # every active user had revenue
    totals = await ch.predict_experiment_trends("trend", "revenue", days_ahead=1, statistic="total")
    control = next(v for v in totals.variants if v.variant == "control")
    assert control.history[0].value == pytest.approx(USERS_PER_DAY * truth("control", FIRST_DAY), rel=0.05)


async def test_short_histories_fall_back_to_the_linear_trend(ch):
    result = await ch.predict_experiment_trends("short", "revenue", days_ahead=2)
    assert "day-of-week" not in result.model
    for variant in result.variants:
        assert variant.day_of_week_effects is None
        assert len(variant.history) == 5


async def test_too_little_data_and_bad_arguments_are_refused(ch):
    with pytest.raises(InvalidInput, match="needs at least 3"):
        await ch.predict_experiment_trends("tiny", "revenue")
    with pytest.raises(NotFound, match="no 'latency' events"):
        await ch.predict_experiment_trends("trend", "latency")
    with pytest.raises(InvalidInput, match="days_ahead"):
        await ch.predict_experiment_trends("trend", "revenue", days_ahead=0)


def test_ols_fit_is_exact_on_noiseless_data():
    days = [FIRST_DAY + timedelta(days=d) for d in range(30) if d != 9]  # one day missing
    fit = forecast.fit(days, [truth("treatment", d) for d in days])
    assert fit.weekly and fit.slope == pytest.approx(0.25)
    mean, lower, upper = fit.predict([FIRST_DAY + timedelta(days=40)])
    assert mean[0] == pytest.approx(truth("treatment", FIRST_DAY + timedelta(days=40)))
    assert upper[0] - lower[0] == pytest.approx(0.0, abs=1e-6)


def test_prediction_intervals_have_their_nominal_coverage():
    rng = np.random.default_rng(5)
    days = [FIRST_DAY + timedelta(days=d) for d in range(21)]
    future = forecast.future_days(days[-1], 3)
    hits = 0
    trials = 400
    for _ in range(trials):
        y = np.array([truth("control", d) for d in days]) + rng.normal(0, 1.0, len(days))
        _, lo, hi = forecast.fit(days, y).predict(future, level=0.9)
        actual = np.array([truth("control", d) for d in future]) + rng.normal(0, 1.0, 3)
        hits += int(np.sum((lo <= actual) & (actual <= hi)))
    assert hits / (3 * trials) == pytest.approx(0.9, abs=0.03)
