"""generate_analytics_insights recovers planted effects and planted data problems."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mcp_servers.clickhouse import open_service
from mcp_servers.clickhouse.synthetic import SyntheticExperiment, generate
from schemas.errors import InvalidInput, NotFound
from schemas.event_rows import events_to_arrow
from schemas.events import Event
from schemas.settings import Settings

START = datetime(2025, 1, 6, tzinfo=UTC)
MISSING_DAY = date(2025, 1, 11)
LOW_DAY = date(2025, 1, 15)
SPEC = SyntheticExperiment(
    experiment_id="ins", users=4000, variants=("control", "treatment"), weights=(0.55, 0.45),
    conversion_rate={"control": 0.10, "treatment": 0.12},
    revenue_mean={"control": 20.0, "treatment": 20.0},
    segment_lift={("mobile", "treatment"): 1.5},  # +50% revenue, on mobile only
    devices={"mobile": 0.5, "desktop": 0.5}, purchases_per_user=1.0, days=14, start=START, seed=11,
)
WINDOW = {"start_date": date(2025, 1, 6), "end_date": date(2025, 1, 19)}


def planted_problems(table: pa.Table) -> pa.Table:
    day = pc.cast(table.column("timestamp"), pa.date32())
    keep = pc.not_equal(day, pa.scalar(MISSING_DAY))  # a day lost entirely
    rng = np.random.default_rng(0)
    low = pc.equal(day, pa.scalar(LOW_DAY)).to_numpy(zero_copy_only=False)
    keep = pc.and_(keep, pa.array(~low | (rng.random(table.num_rows) < 0.2)))  # 80% of a day lost
    odd = events_to_arrow([
        Event(event_id="mix-a", event_type="exposure", timestamp=START + timedelta(days=1), user_id="twice",
              experiment_id="ins", variant="control"),
        Event(event_id="mix-b", event_type="exposure", timestamp=START + timedelta(days=2), user_id="twice",
              experiment_id="ins", variant="treatment"),
        Event(event_id="orphan", event_type="revenue", timestamp=START + timedelta(days=3), user_id="nobody",
              experiment_id="ins", value=5.0),
        Event(event_id="future", event_type="click", timestamp=datetime.now(UTC) + timedelta(days=2),
              user_id="time-traveller", experiment_id="ins"),
    ])
    return pa.concat_tables([table.filter(keep), odd])


@pytest.fixture(scope="module")
async def ch(chdb_path):
    database = f"t_ins_{uuid.uuid4().hex[:8]}"
    async with open_service(Settings(), chdb_path=chdb_path, database=database, clickhouse_url="") as service:
        await service.store.execute(f"SYSTEM STOP MERGES {database}.events")
        events = planted_problems(generate(SPEC))
        await service.ingest_arrow(events, "all")
        await service.ingest_arrow(events.slice(0, 500), "replayed-part")  # duplicates awaiting merge
        yield service


@pytest.fixture(scope="module")
async def insights(ch):
    return await ch.generate_analytics_insights("ins", ["conversion", "revenue"], **WINDOW)


def flag(insights, code):
    found = [f for f in insights.data_quality if f.code == code]
    assert found, f"no {code} flag in {[f.code for f in insights.data_quality]}"
    return found[0]


async def test_the_metric_table_recovers_the_planted_lifts(insights):
    rows = {(r.metric, r.variant): r for r in insights.metric_table}
    assert insights.control_variant == "control"
    assert rows[("revenue", "control")].difference is None
    revenue = rows[("revenue", "treatment")]
    assert revenue.relative_lift == pytest.approx(0.25, abs=0.10)  # half the users get +50%
    assert revenue.p_value < 0.001 and revenue.ci95_low > 0
    conversion = rows[("conversion", "treatment")]
    assert conversion.relative_lift == pytest.approx(0.20, abs=0.15)
    assert conversion.ci95_low < conversion.difference < conversion.ci95_high


async def test_the_biggest_segment_difference_is_the_planted_one(insights):
    top = insights.segment_differences[0]
    assert (top.dimension, top.segment, top.metric, top.variant) == ("device", "mobile", "revenue", "treatment")
    assert top.relative_lift == pytest.approx(0.5, abs=0.15)
    desktop = [s for s in insights.segment_differences if s.segment == "desktop" and s.metric == "revenue"]
    assert not desktop or abs(desktop[0].z_score) < abs(top.z_score) / 2
    zs = [abs(s.z_score) for s in insights.segment_differences]
    assert zs == sorted(zs, reverse=True)


async def orphan_counts(ch) -> dict[str, int]:
    df = (await ch.store.query(f"SELECT user_id, event_type, metric, timestamp FROM {ch.db}.events FINAL "
                               "WHERE experiment_id = 'ins'")).to_pandas()
    exposed = set(df[df.event_type == "exposure"].user_id)
    in_window = (df.timestamp >= START) & (df.timestamp < START + timedelta(days=14))
    orphan = df[in_window & (df.metric != "") & ~df.user_id.isin(exposed)]
    return {"users": orphan.user_id.nunique(), "events": len(orphan)}


async def test_planted_data_problems_are_flagged(ch, insights):
    srm = flag(insights, "sample_ratio_mismatch")
    assert srm.severity == "critical" and srm.details["p_value"] < 0.001
    assert flag(insights, "missing_days").details["days"] == [MISSING_DAY.isoformat()]
    drop = flag(insights, "event_volume_drop")
    assert [d["date"] for d in drop.details["days"]] == [LOW_DAY.isoformat()]
    assert drop.details["days"][0]["ratio"] < 0.35
    assert flag(insights, "multiple_variant_users").details["users"] == 1
    # "nobody", plus users whose exposure fell on the lost days but whose later events arrived
    orphans = flag(insights, "metric_events_without_exposure").details
    assert orphans == await orphan_counts(ch)
    assert orphans["users"] >= 1
    assert flag(insights, "duplicates_pending_merge").details["rows"] == 500
    assert flag(insights, "future_timestamps").details["events"] == 1


async def test_no_srm_flag_when_the_intended_split_is_given(ch):
    result = await ch.generate_analytics_insights("ins", ["revenue"], expected_weights={"control": 0.55,
                                                                                      "treatment": 0.45}, **WINDOW)
    assert "sample_ratio_mismatch" not in {f.code for f in result.data_quality}


async def test_daily_volume_matches_the_events(ch, insights):
    per_day = {}
    for row in insights.daily_volume:
        per_day[row.date] = per_day.get(row.date, 0) + row.events
    assert MISSING_DAY not in per_day
    table = await ch.store.query(
        f"SELECT toDate(timestamp) AS d, count() AS n FROM {ch.db}.events FINAL "
        f"WHERE experiment_id = 'ins' AND user_id IN (SELECT user_id FROM {ch.db}.events WHERE experiment_id = 'ins' "
        "AND event_type = 'exposure' GROUP BY user_id HAVING min(variant) = max(variant)) GROUP BY d ORDER BY d")
    expected = {r["d"]: r["n"] for r in table.to_pylist() if r["d"] <= WINDOW["end_date"]}
    assert per_day == expected
    new_users = sum(r.new_users for r in insights.daily_volume)
    exposed = sum(r.users for r in insights.metric_table if r.metric == "revenue")
    assert new_users == exposed


async def test_every_summary_sentence_is_filled_from_the_numbers(insights):
    rows = {(r.metric, r.variant): r for r in insights.metric_table}
    text = "\n".join(insights.summary)
    revenue = rows[("revenue", "treatment")]
    assert f"treatment vs control on revenue: {revenue.mean:.4g}" in text
    assert f"({revenue.relative_lift:+.1%};" in text
    assert f"p = {revenue.p_value:.3g}" in text
    top = insights.segment_differences[0]
    assert "device=mobile, treatment vs control on revenue" in text and f"z = {top.z_score:.2f}" in text
    for f in insights.data_quality:
        assert f.message in insights.summary


async def test_errors_name_the_problem(ch):
    with pytest.raises(NotFound):
        await ch.generate_analytics_insights("no-such-experiment", ["revenue"])
    with pytest.raises(InvalidInput, match="control variant 'blue'"):
        await ch.generate_analytics_insights("ins", ["revenue"], control_variant="blue", **WINDOW)
