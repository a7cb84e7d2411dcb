"""A traffic split changed mid-window: the SRM check expects each period's split (through ClickHouse's typed
get_exposures_by_period tool), so a legitimate reallocation raises no false alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from mcp import Client

from schemas.events import Event

LATE_USERS = 400


async def test_expected_counts_follow_the_weights_in_force_when_each_user_arrived(intel_settings, open_stack,
                                                                                   kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as client:
        seed = kit.Seeder(router, client)
        await seed.experiment("reweighted")
        await seed.traffic("reweighted", kit.arms(0.10, 0.10), users=3_000)
        await kit.call(client, "set_variant_weights", {"experiment": "reweighted",
                                                       "weights": {"control": 0.2, "treatment": 0.8},
                                                       "confirm": True, "reason": "favour the treatment"})
        after_change = datetime.now(UTC) + timedelta(seconds=1)
        late = [Event(event_id=f"late-{i}", event_type="exposure", timestamp=after_change + timedelta(milliseconds=i),
                      user_id=f"late-{i}", experiment_id="reweighted", variant="control" if i % 5 == 0 else "treatment")
                for i in range(LATE_USERS)]
        await router.services["clickhouse"].ingest_events(late, "late-exposures")
        analysis = await kit.call(client, "analyze_experiment_performance", {"experiment": "reweighted"})

    srm = analysis["srm"]
    early = sum(srm["observed"]) - LATE_USERS
    assert srm["weights_changed"] and any("weights changed" in note for note in analysis["notes"])
    assert srm["expected"] == pytest.approx([early * 0.5 + LATE_USERS * 0.2, early * 0.5 + LATE_USERS * 0.8])
    assert not srm["flagged"]
