"""plot_experiment's data behind the figure: a guardrail that decided the verdict gets its own panel, and
today's partial day is flagged in the daily panel and never feeds the forecast."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
from mcp import Client

from mcp_servers.clickhouse import forecast
from stream_processor.generator import ArmTruth

# Traffic up to now: the last day is today, still going on (partial).
NOW_START = (datetime.now(UTC) - timedelta(days=14)).replace(microsecond=0)
TODAY = datetime.now(UTC).date()


async def test_the_guardrail_that_decided_has_a_panel_and_today_is_left_out_of_the_forecast(
        intel_settings, open_stack, kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("plot-price", guardrails=[{"name": "revenue", "direction": "higher"}])
        # Same conversion, revenue per order -25%: the revenue guardrail rolls it back.
        await seed.traffic("plot-price", {"control": ArmTruth(0.30, 60.0), "treatment": ArmTruth(0.30, 45.0)},
                           users=12_000, start=NOW_START)
        await seed.experiment("plot-win")
        await seed.traffic("plot-win", kit.arms(0.10, 0.14), users=12_000, start=NOW_START)
        price = await client.call_tool("plot_experiment", {"experiment": "plot-price"})
        win = await client.call_tool("plot_experiment", {"experiment": "plot-win"})
        revenue = await client.call_tool("plot_experiment", {"experiment": "plot-price", "metric": "revenue"})

    assert not price.is_error and not win.is_error and not revenue.is_error
    s = price.structured_content
    # The guardrail decided the roll back: it has its own panel, between the primary lift and the daily panel.
    assert (s["verdict"], s["rule_id"], s["decided_by"]) == ("roll_back", "guardrail_failure", "revenue")
    assert s["panels"] == ["lift:conversion", "guardrail:revenue", "daily:conversion"]
    assert s["guardrail_metric"] == "revenue" and s["guardrail_margin"] == 0.05
    guard = s["guardrail_series"][0]
    assert guard["variant"] == "treatment" and guard["band_high"][-1] < -0.05 < 0  # beyond the margin
    assert -0.35 < guard["cumulative_lift"][-1] < -0.15
    assert "decided by guardrail revenue" in s["headline"] and s["headline"].startswith("Verdict: Roll back")
    # When the primary decided, no guardrail panel; asking for the guardrail itself puts it on top.
    w = win.structured_content
    assert w["verdict"] == "ship" and w["decided_by"] == "conversion"
    assert w["panels"] == ["lift:conversion", "daily:conversion"] and w["guardrail_series"] == []
    assert revenue.structured_content["panels"][0] == "lift:revenue"
    assert "guardrail:revenue" not in revenue.structured_content["panels"]

    # Today is partial: flagged in every variant's daily series, drawn apart, and not fitted.
    assert TODAY.isoformat() in s["partial_days"]
    for daily in s["daily"]:
        assert daily["days"][-1] == TODAY.isoformat() and daily["partial"][-1]
        complete = [(date.fromisoformat(d), v) for d, v, p in zip(daily["days"], daily["values"], daily["partial"],
                                                                   strict=True) if not p]
        assert len(complete) >= 12
        # The forecast starts with today (as a full day) and is the model of the complete days alone.
        assert daily["forecast_days"][0] == TODAY.isoformat() and len(daily["forecast_days"]) == 4
        model = forecast.fit([d for d, _ in complete], [v for _, v in complete])
        expected, _, _ = model.predict([date.fromisoformat(d) for d in daily["forecast_days"]])
        np.testing.assert_allclose(daily["forecast"], expected, rtol=1e-9)
        for value in daily["forecast"]:
            assert 0.2 < value < 0.4  # near the true 0.30, whatever today's partial value is
    assert "partial days (drawn hollow, not fitted)" in s["daily_source"]
