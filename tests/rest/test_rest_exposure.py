"""REST get-variant and record-result write the event outbox (issue 18): `exposed` on the single and
batch calls, a result's metric event, nothing for returning users; the OpenAPI document says so."""

from __future__ import annotations

BASE = "/api/v1/experiments"


async def outbox(api) -> list[tuple[str, str]]:
    rows = await api.service.store.pool.fetch("SELECT event_type, user_id FROM neonblue.event_outbox ORDER BY id")
    return [(r["event_type"], r["user_id"]) for r in rows]


async def test_get_variant_exposes_unless_told_not_to_and_record_result_writes_a_metric_event(rest_api) -> None:
    async with rest_api() as api:
        await api.create_running("rest-exposure")
        http = api.http
        hidden = (await http.post(f"{BASE}/get-variant", json={"experiment": "rest-exposure", "user_id": "u-1",
                                                               "exposed": False})).json()
        assert hidden["newly_recorded"] and not hidden["newly_exposed"]
        shown = (await http.post(f"{BASE}/get-variant", json={"experiment": "rest-exposure", "user_id": "u-1"})).json()
        assert shown["newly_exposed"] and shown["variant_key"] == hidden["variant_key"]
        again = (await http.post(f"{BASE}/get-variant", json={"experiment": "rest-exposure", "user_id": "u-1"})).json()
        assert not again["newly_exposed"]

        batch = await http.post(f"{BASE}/get-variant/batch", json={"experiment": "rest-exposure",
                                                                   "user_ids": ["u-1", "u-2", "u-3"], "exposed": False})
        assert batch.json()["newly_exposed"] == 0 and batch.json()["newly_recorded"] == 2
        batch = await http.post(f"{BASE}/get-variant/batch", json={"experiment": "rest-exposure",
                                                                   "user_ids": ["u-2", "u-4"]})
        assert batch.json()["newly_exposed"] == 2

        recorded = await http.post(f"{BASE}/record-result", json={"experiment": "rest-exposure", "user_id": "u-1",
                                                                  "metric": "conversion", "value": 1.0, "event_id": "e-1"})
        assert recorded.status_code == 201
        assert (await http.post(f"{BASE}/record-result", json={"experiment": "rest-exposure", "user_id": "u-1",
                                                               "metric": "conversion", "value": 1.0,
                                                               "event_id": "e-1"})).status_code == 200
        assert sorted(await outbox(api)) == [("exposure", "u-1"), ("exposure", "u-2"), ("exposure", "u-4"), ("metric", "u-1")]

        spec = (await http.get("/openapi.json")).json()["components"]["schemas"]
        for body in ("GetVariantRequest", "BatchGetVariantRequest"):
            assert spec[body]["properties"]["exposed"]["default"] is True, body
