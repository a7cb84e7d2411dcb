"""A user's whole journey through the MCP tools only (issue 18), with a planted effect: create, start,
get_variant for 20,000 users, record_result for the converters, analyze_experiment_performance —
through one `mcp.Client` against the router, while the outbox relay and the stream processor carry
every exposure and result through the real broker into ClickHouse. Before any user: no_data."""

from __future__ import annotations

from typing import Any

from journey import USERS, journey_settings, limited, open_journey, planted  # type: ignore[import-not-found]
from mcp import Client
from mcp_calls import call  # type: ignore[import-not-found]


async def mcp_journey(client: Client, journey: Any, key: str, rates: dict[str, float], seed: int) -> dict[str, Any]:
    await call(client, "create_experiment", {"experiment": {
        "key": key, "name": f"Journey {key}", "type": "ui", "hypothesis": "A one-step checkout converts more.",
        "primary_metric": {"name": "conversion", "direction": "higher"}, "min_sample_size": 1000,
        "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}})
    await call(client, "start_experiment", {"experiment": key})
    before = await call(client, "analyze_experiment_performance", {"experiment": key})
    assert before["verdict"]["rule_id"] == "no_data", before["verdict"]
    assert before["verdict"]["rule"].startswith(f"Nothing to analyse yet: no exposure events for '{key}'")

    users = [f"{key}-user-{i}" for i in range(USERS)]
    served = await limited([lambda u=u: call(client, "get_variant", {"experiment": key, "user_id": u})
                            for u in users])
    assert all(s["in_experiment"] and s["newly_exposed"] for s in served)
    converters = planted(zip(users, [s["variant_key"] for s in served], strict=True), rates, seed)
    await limited([lambda u=u: call(client, "record_result", {"experiment": key, "user_id": u,
                                                              "metric": "conversion", "value": 1})
                   for u in converters])
    await journey.settle(USERS + len(converters))
    return await call(client, "analyze_experiment_performance", {"experiment": key})


def primary(analysis: dict[str, Any]) -> dict[str, Any]:
    return next(m for m in analysis["metrics"] if m["role"] == "primary")


async def test_mcp_journey_ships_a_planted_win(neonblue_home, pg_dsn, ch_database, chdb_path, kafka_broker,
                                               kafka_topic, chroma_path) -> None:
    settings = journey_settings(neonblue_home=chdb_path.parent, pg_dsn=pg_dsn, ch_database=ch_database,
                                kafka_broker=kafka_broker, kafka_topic=kafka_topic)
    async with open_journey(settings, chroma_path) as journey, Client(journey.router.server) as client:
        analysis = await mcp_journey(client, journey, "mcp-win", {"control": 0.20, "treatment": 0.24}, seed=18)

    assert sum(v["users"] for v in analysis["variants"]) == USERS and not analysis["srm"]["flagged"]
    verdict = analysis["verdict"]
    assert (verdict["verdict"], verdict["rule_id"], verdict["variant"]) == ("ship", "primary_win", "treatment"), verdict
    metric = primary(analysis)
    low, high = metric["relative_ci_sequential"]  # the interval the verdict decides on (always-valid)
    assert low < 0.20 < high, (low, high)
    assert f"interval {low * 100:+.1f}% to {high * 100:+.1f}%" in verdict["rule"]
    assert analysis["options"]["sequential"] and analysis["decision_id"]


async def test_mcp_journey_of_an_a_a_test_neither_ships_nor_rolls_back(
        neonblue_home, pg_dsn, ch_database, chdb_path, kafka_broker, kafka_topic, chroma_path) -> None:
    settings = journey_settings(neonblue_home=chdb_path.parent, pg_dsn=pg_dsn, ch_database=ch_database,
                                kafka_broker=kafka_broker, kafka_topic=kafka_topic)
    async with open_journey(settings, chroma_path) as journey, Client(journey.router.server) as client:
        analysis = await mcp_journey(client, journey, "mcp-aa", {"control": 0.20, "treatment": 0.20}, seed=19)

    assert sum(v["users"] for v in analysis["variants"]) == USERS and not analysis["srm"]["flagged"]
    assert analysis["verdict"]["verdict"] not in ("ship", "roll_back"), analysis["verdict"]
    low, high = primary(analysis)["relative_ci_sequential"]
    assert low < 0.0 < high
