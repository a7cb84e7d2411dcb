"""A user's whole journey through the REST API only (issue 18), as the seed walks it, with a planted
effect: create, start, get-variant for 20,000 users (the batch endpoint), record-result for the
converters, analyze — while the outbox relay and the stream processor carry every exposure and result
through the real broker into ClickHouse. Before any user, analyze answers no_data with its reason."""

from __future__ import annotations

from typing import Any

import httpx
from journey import (  # type: ignore[import-not-found]
    USERS,
    journey_settings,
    limited,
    open_journey,
    planted,
    serve_rest,
)

BASE = "/api/v1/experiments"
BATCH = 1000  # the batch endpoint's limit


async def ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, (answer.request.url, answer.status_code, answer.text)
    return answer.json()


async def rest_journey(http: httpx.AsyncClient, journey: Any, key: str, rates: dict[str, float],
                       seed: int) -> dict[str, Any]:
    await ok(await http.post(f"{BASE}/", json={
        "key": key, "name": f"Journey {key}", "type": "ui", "hypothesis": "A one-step checkout converts more.",
        "primary_metric": "conversion", "min_sample_size": 1000,
        "variants": [{"key": "control", "is_control": True, "config": {"steps": 3}},
                     {"key": "treatment", "config": {"steps": 1}}]}), 201)
    await ok(await http.post(f"{BASE}/{key}/start"))
    before = await ok(await http.get(f"{BASE}/{key}/analyze"))
    assert before["verdict"]["rule_id"] == "no_data" and before["verdict"]["verdict"] == "needs_review"
    assert before["verdict"]["rule"] == (f"Nothing to analyse yet: no exposure events for '{key}' in the event "
                                         "store yet; each user get_variant assigns records one.")

    users = [f"{key}-user-{i}" for i in range(USERS)]
    assigned: dict[str, str] = {}
    for i in range(0, USERS, BATCH):
        batch = await ok(await http.post(f"{BASE}/get-variant/batch", json={"experiment": key,
                                                                             "user_ids": users[i:i + BATCH]}))
        assert batch["newly_exposed"] == BATCH
        assigned.update(batch["assigned"])
    converters = planted(((u, assigned[u]) for u in users), rates, seed)
    await limited([lambda u=u: http.post(f"{BASE}/record-result", json={
        "experiment": key, "user_id": u, "metric": "conversion", "value": 1, "event_id": f"{key}-conv-{u}"})
        for u in converters], in_flight=16)
    await journey.settle(USERS + len(converters))
    return await ok(await http.get(f"{BASE}/{key}/analyze"))


def primary(analysis: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in analysis["metrics"] if m["role"] == "primary")


async def test_rest_journey_ships_a_planted_win(neonblue_home, pg_dsn, ch_database, chdb_path, kafka_broker,
                                                kafka_topic, chroma_path) -> None:
    settings = journey_settings(neonblue_home=chdb_path.parent, pg_dsn=pg_dsn, ch_database=ch_database,
                                kafka_broker=kafka_broker, kafka_topic=kafka_topic)
    async with open_journey(settings, chroma_path) as journey, serve_rest(journey.router, settings) as http:
        analysis = await rest_journey(http, journey, "rest-win", {"control": 0.20, "treatment": 0.24}, seed=18)
        summary = await ok(await http.get(f"{BASE}/rest-win/summary"))

    assert sum(v["users"] for v in analysis["variants"]) == USERS and not analysis["srm"]["flagged"]
    verdict = analysis["verdict"]
    assert (verdict["verdict"], verdict["rule_id"], verdict["variant"]) == ("ship", "primary_win", "treatment"), verdict
    low, high = primary(analysis)["relative_ci_sequential"]  # the interval the verdict decides on (always-valid)
    assert low < 0.20 < high, (low, high)
    assert f"interval {low * 100:+.1f}% to {high * 100:+.1f}%" in verdict["rule"]
    assert analysis["options"]["sequential"] and analysis["decision_id"] is None  # a GET writes no audit row
    # The registry's summary: every sentence computed, the sample size stated with its numbers.
    assert summary["sample_size_reached"] and summary["leader"] == "treatment"
    assert "at least the 1,000 per arm (the experiment's min_sample_size)." in summary["summary"]


async def test_rest_journey_of_an_a_a_test_neither_ships_nor_rolls_back(
        neonblue_home, pg_dsn, ch_database, chdb_path, kafka_broker, kafka_topic, chroma_path) -> None:
    settings = journey_settings(neonblue_home=chdb_path.parent, pg_dsn=pg_dsn, ch_database=ch_database,
                                kafka_broker=kafka_broker, kafka_topic=kafka_topic)
    async with open_journey(settings, chroma_path) as journey, serve_rest(journey.router, settings) as http:
        analysis = await rest_journey(http, journey, "rest-aa", {"control": 0.20, "treatment": 0.20}, seed=19)

    assert sum(v["users"] for v in analysis["variants"]) == USERS and not analysis["srm"]["flagged"]
    assert analysis["verdict"]["verdict"] not in ("ship", "roll_back"), analysis["verdict"]
    low, high = primary(analysis)["relative_ci_sequential"]
    assert low < 0.0 < high
