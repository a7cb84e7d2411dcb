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
NOW = datetime.now(UTC)
TODAY = NOW.date()
TODAY_HOURS = max((NOW - datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC)).total_seconds() / 3600 - 0.05,
                  0.01)  # today's events so far (none in the future)
ONGOING_DAYS = 21
ONGOING_FIRST = TODAY - timedelta(days=ONGOING_DAYS - 1)


def truth(variant: str, day: date) -> float:
    return LEVEL[variant] + SLOPE[variant] * (day - FIRST_DAY).days + WEEKDAY[day.weekday()]


def daily_events(days: int, experiment_id: str, seed: int = 3, *, first_day: date = FIRST_DAY, first_hour: float = 0.0,
                 last_hours: float = 24.0, last_day_extra: float = 0.0) -> pa.Table:
    """Each day, fresh users per variant, spread over the day: an exposure and one revenue event of
    truth + noise. `first_hour`: the first day starts then (an experiment started mid-day); `last_hours`:
    the last day stops after that many hours (a day still going on), its values raised by `last_day_extra`."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {name: [] for name in EVENT_SCHEMA.names}
    k = 0
    for d in range(days):
        day = first_day + timedelta(days=d)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(hours=first_hour if d == 0 else 0)
        hours = (last_hours if d == days - 1 else 24.0) - (first_hour if d == 0 else 0.0)
        for variant in LEVEL:
            values = truth(variant, day) + rng.normal(0, 2.0, USERS_PER_DAY)
            if d == days - 1:
                values = values + last_day_extra
            for i, value in enumerate(values):
                user = f"{variant}-{d}-{i}"
                at = start + timedelta(hours=hours * i / USERS_PER_DAY)
                for event_type, metric, val in (("exposure", "", None), ("revenue", "revenue", float(value))):
                    k += 1
                    row = {"event_id": f"e{k}", "event_type": event_type, "experiment_id": experiment_id,
                           "variant": variant if event_type == "exposure" else "", "user_id": user,
                           "metric": metric, "value": val, "timestamp": at,
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
        # Started at 15:00 on its first day; its last day is today, so far, with inflated values.
        await service.ingest_arrow(daily_events(ONGOING_DAYS, "ongoing", first_day=ONGOING_FIRST, first_hour=15,
                                                last_hours=TODAY_HOURS, last_day_extra=30.0), "ongoing")
        await service.ingest_arrow(daily_events(3, "young", first_day=TODAY - timedelta(days=2), first_hour=15,
                                                last_hours=TODAY_HOURS), "young")
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


async def test_partial_first_and_last_days_are_flagged_and_never_feed_the_forecast(ch):
    first, last = ONGOING_FIRST, TODAY
    result = await ch.predict_experiment_trends("ongoing", "revenue", days_ahead=3)
    assert result.partial_days == [first, last]
    assert "partial first or last day is not fitted" in result.model
    for variant in result.variants:
        history = variant.history
        assert [p.date for p in history if p.partial] == [first, last]  # shown, flagged
        assert history[-1].value > truth(variant.variant, last) + 20  # today's spike is there...
        complete = [p for p in history if not p.partial]
        model = forecast.fit([p.date for p in complete], [p.value for p in complete])
        # ...but the forecast is the model of the complete days alone, starting with today itself.
        assert [p.date for p in variant.forecast] == [last + timedelta(days=i) for i in range(4)]
        predicted, _, _ = model.predict([p.date for p in variant.forecast])
        np.testing.assert_allclose([p.predicted for p in variant.forecast], predicted)
        for point in variant.forecast:
            assert point.predicted == pytest.approx(truth(variant.variant, point.date), abs=1.5)
        assert variant.level == pytest.approx(float(model.predict([complete[-1].date])[0][0]))
    # Days that have ended, from midnight: nothing is partial.
    full = await ch.predict_experiment_trends("trend", "revenue", days_ahead=1)
    assert full.partial_days == [] and not any(p.partial for v in full.variants for p in v.history)


async def test_too_few_complete_days_are_refused_naming_the_partial_ones(ch):
    with pytest.raises(InvalidInput, match=r"1 complete observed days \(2 partial day\(s\) not used\)"):
        await ch.predict_experiment_trends("young", "revenue")
