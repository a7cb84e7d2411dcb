"""Relative periods are anchored to the events that exist, and the answer says so."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from mcp_calls import call  # type: ignore[import-not-found]
from nl_env import demo_router  # type: ignore[import-not-found]

from mcp_router.apps.demo import portfolio
from mcp_servers.postgres.models import Experiment
from mcp_servers.postgres.service import assignment_spec
from stream_processor.generator import TrafficPlan, generate_events


async def test_a_window_without_events_is_read_up_to_the_latest_event_and_said_so(nl_settings, chroma_path) -> None:
    settings = nl_settings()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=45)
    async with demo_router(settings, chroma_path) as client:
        exp = next(e for e in portfolio(scale=0.05) if e.key == "checkout-1step")
        record = Experiment.model_validate(await call(client, "get_experiment", {"experiment": exp.key}))
        spec = replace(assignment_spec(record), weights=(0.5, 0.5))
        plan = TrafficPlan(exp.key, ["two_step", "one_step"], spec, exp.truths, 2000, start, days=10, seed=3)
        events = [json.loads(value) for _, _, value in generate_events(plan)]
        await call(client, "ingest_events", {"events": events, "idempotency_token": "old-traffic"})
        old = await call(client, "route_query", {"query": "which segments responded best to the checkout test last week?"})
        recent = await call(client, "route_query", {"query": "which segments responded best to the checkout test "
                                                              "in the last 60 days?"})

    latest = max(date.fromisoformat(e["timestamp"][:10]) for e in events)
    [insights] = old["calls"]
    # The last 7 days hold no event: the week is read up to the latest event instead, and the plan says so.
    assert insights["arguments"]["end_date"] == latest.isoformat()
    assert insights["arguments"]["start_date"] == (latest - timedelta(days=6)).isoformat()
    assert any("no events between" in a and f"latest event ({latest})" in a for a in old["assumptions"])
    # A window that holds events is kept as asked, ending today.
    [kept] = recent["calls"]
    assert kept["arguments"]["end_date"] == datetime.now(UTC).date().isoformat()
    assert not any("no events between" in a for a in recent["assumptions"])
