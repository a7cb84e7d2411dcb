"""GET /analyze: the Experiment Intelligence server's full analysis of the event store (ClickHouse)
by default — in-process, or behind the gateway as a remote server is — the registry's descriptive
statistics only on request, no audit-trail write on a GET, the REST status codes preserved across the
tool hop, and no data yet answered as the no_data verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mcp_servers.postgres.assignment import AssignmentSpec
from stream_processor.generator import ArmTruth, TrafficPlan, generate_events

BASE = "/api/v1/experiments"


async def load_traffic(api, key: str, users: int) -> None:
    """Events with a known effect (10% vs 14% conversion) straight into ClickHouse, as the stream processor writes them."""
    plan = TrafficPlan(experiment_key=key, variant_keys=["control", "treatment"], spec=AssignmentSpec(key, (0.5, 0.5)),
                       truths={"control": ArmTruth(0.10, 20.0), "treatment": ArmTruth(0.14, 20.0)}, users=users,
                       start=(datetime.now(UTC) - timedelta(days=15)).replace(hour=0, minute=0, second=0, microsecond=0),
                       days=14, seed=7, user_prefix=f"{key}-u")
    lines = [value for _, _, value in generate_events(plan)]
    await api.router.services["clickhouse"].ingest_json(b"\n".join(lines), f"{key}:rest-test")


async def test_analyze_serves_the_intelligence_analysis_without_writing_a_decision(rest_api) -> None:
    async with rest_api(intelligence=True) as api:
        await api.create_running("checkout-1step", type="ui")
        await load_traffic(api, "checkout-1step", users=6000)

        full = await api.http.get(f"{BASE}/checkout-1step/analyze", params={"alpha": 0.05, "sequential": "false"})
        assert full.status_code == 200, full.text
        body = full.json()
        assert body["experiment_key"] == "checkout-1step" and body["primary_metric"] == "conversion"
        assert body["options"]["sequential"] is False and body["options"]["record_decision"] is False
        assert {v["key"] for v in body["variants"]} == {"control", "treatment"}
        assert sum(v["users"] for v in body["variants"]) == 6000
        assert body["verdict"] and body["srm"]["flagged"] is False
        decisions = await api.service.list_decisions(experiment="checkout-1step")
        assert decisions.total == 0  # a GET is safe: the verdict is not written to the audit trail

        registry = await api.http.get(f"{BASE}/checkout-1step/analyze", params={"source": "registry"})
        assert registry.status_code == 200
        assert registry.json()["total_assigned"] == 0  # no record-result / get-variant here: PostgreSQL has none
        assert "verdict" not in registry.json()  # descriptive only

        # Each view refuses the other's parameters instead of ignoring them.
        mixed = await api.http.get(f"{BASE}/checkout-1step/analyze", params={"metrics": "conversion"})
        assert mixed.status_code == 422 and "only for source=registry" in mixed.json()["detail"]
        mixed = await api.http.get(f"{BASE}/checkout-1step/analyze", params={"source": "registry", "alpha": 0.01})
        assert mixed.status_code == 422 and "alpha: options of the statistics engine" in mixed.json()["detail"]
        gone = await api.http.get(f"{BASE}/checkout-1step/analyze", params={"source": "auto"})
        assert gone.status_code == 422 and gone.json()["errors"][0]["loc"] == ["query", "source"]

        missing = await api.http.get(f"{BASE}/nope/analyze")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        bad_option = await api.http.get(f"{BASE}/checkout-1step/analyze", params={"alpha": 0.9, "start_date": "soon"})
        assert bad_option.status_code == 422
        assert {tuple(e["loc"]) for e in bad_option.json()["errors"]} == {("query", "alpha"), ("query", "start_date")}


async def test_analyze_without_events_answers_the_no_data_verdict_not_an_error(rest_api) -> None:
    async with rest_api(intelligence=True) as api:
        await api.create_running("quiet")
        answer = await api.http.get(f"{BASE}/quiet/analyze")
        assert answer.status_code == 200, answer.text
        verdict = answer.json()["verdict"]
        assert verdict["rule_id"] == "no_data" and verdict["verdict"] == "needs_review"
        assert "no exposure events for 'quiet'" in verdict["rule"] and "\n" not in verdict["rule"]
        assert (await api.http.get(f"{BASE}/quiet/analyze", params={"source": "registry"})).status_code == 200


async def test_analyze_reaches_a_remote_intelligence_server_through_the_gateway(rest_api) -> None:
    async with rest_api(intelligence="backend") as api:
        assert "intelligence" not in api.router.services
        await api.create_running("remote")
        await load_traffic(api, "remote", users=3000)
        answer = await api.http.get(f"{BASE}/remote/analyze", params={"sequential": "false", "mde": 0.1})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert sum(v["users"] for v in body["variants"]) == 3000 and body["verdict"]["rule_id"]
        assert body["options"]["sequential"] is False and body["options"]["mde"] == 0.1
        assert body["options"]["record_decision"] is False


async def test_analyze_without_an_intelligence_server_says_so_and_points_to_the_registry_view(rest_api) -> None:
    async with rest_api() as api:
        await api.create_running("alone")
        answer = await api.http.get(f"{BASE}/alone/analyze")
        assert answer.status_code == 503 and answer.json()["error"] == "backend_unavailable"
        assert "source=registry" in answer.json()["detail"]
        assert (await api.http.get(f"{BASE}/alone/analyze", params={"source": "registry"})).status_code == 200
