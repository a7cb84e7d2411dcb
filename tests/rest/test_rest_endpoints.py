"""The seed's experiment endpoints through a real HTTP client against the running app:
lifecycle, assignment, results, analysis, and the status codes and JSON error bodies."""

from __future__ import annotations

import httpx

BASE = "/api/v1/experiments"


def experiment_spec(key: str, **fields) -> dict:
    return {"key": key, "name": "One-step checkout", "type": "ui", "primary_metric": "conversion",
            "secondary_metrics": [{"name": "revenue", "direction": "higher"}],
            "variants": [{"key": "control", "is_control": True, "weight": 0.5, "config": {"steps": 3}},
                         {"key": "one-step", "weight": 0.5, "config": {"steps": 1}}],
            "min_sample_size": 2, **fields}


async def test_the_seed_flow_create_start_assign_record_analyze_stop_archive(rest_api) -> None:
    async with rest_api() as api:
        http = api.http
        created = await http.post(f"{BASE}/", json=experiment_spec("checkout-1step"), params={"actor": "service:shop"})
        assert created.status_code == 201
        assert created.headers["location"] == f"{BASE}/checkout-1step"
        exp = created.json()
        assert exp["status"] == "draft" and exp["primary_metric"] == {"name": "conversion", "direction": "higher"}

        by_id = await http.get(f"{BASE}/{exp['id']}")  # {id} is the key or the numeric id
        assert by_id.status_code == 200 and by_id.json()["key"] == "checkout-1step"

        started = await http.post(f"{BASE}/checkout-1step/start", params={"reason": "launch"})
        assert started.status_code == 200 and started.json()["status"] == "running"

        first = (await http.post(f"{BASE}/get-variant", json={"experiment": "checkout-1step", "user_id": "u-1"})).json()
        again = (await http.post(f"{BASE}/get-variant", json={"experiment": exp["id"].__str__(), "user_id": "u-1"})).json()
        assert first["in_experiment"] and first["source"] == "hash" and first["newly_recorded"]
        assert again["variant_key"] == first["variant_key"] and again["source"] == "recorded"  # sticky
        assert first["config"] == {"control": {"steps": 3}, "one-step": {"steps": 1}}[first["variant_key"]]

        users = [f"u-{i}" for i in range(1, 41)]
        batch = await http.post(f"{BASE}/get-variant/batch", json={"experiment": "checkout-1step", "user_ids": users})
        assert batch.status_code == 200
        assigned = batch.json()["assigned"]
        assert assigned["u-1"] == first["variant_key"] and set(assigned.values()) == {"control", "one-step"}
        assert batch.json()["already_recorded"] == 1 and batch.json()["newly_recorded"] == 39

        for i, user in enumerate(users):
            converted = {"experiment": "checkout-1step", "user_id": user, "metric": "conversion",
                         "value": float(i % 3 == 0), "event_id": f"evt-{i}"}
            assert (await http.post(f"{BASE}/record-result", json=converted)).status_code == 201
        duplicate = await http.post(f"{BASE}/record-result", json={"experiment": "checkout-1step", "user_id": "u-1",
                                                                   "metric": "conversion", "value": 5.0, "event_id": "evt-0"})
        assert duplicate.status_code == 200 and duplicate.json()["duplicate"] is True
        assert duplicate.json()["value"] == 1.0  # the first record stands

        analysis = await http.get(f"{BASE}/checkout-1step/analyze",
                                  params={"source": "registry", "metrics": ["conversion"]})
        assert analysis.status_code == 200
        body = analysis.json()
        assert body["total_assigned"] == 40 and body["metrics"] == ["conversion"]
        assert sum(v["metrics"]["conversion"]["users"] for v in body["variants"]) == 40
        assert sum(v["metrics"]["conversion"]["sum"] for v in body["variants"]) == 14.0

        summary = await http.get(f"{BASE}/checkout-1step/summary")
        assert summary.status_code == 200 and "One-step checkout" in summary.json()["summary"]
        assert summary.json()["leader"] in {"control", "one-step"}

        running_archive = await http.delete(f"{BASE}/checkout-1step")
        assert running_archive.status_code == 409 and running_archive.json()["error"] == "conflict"

        stopped = await http.post(f"{BASE}/checkout-1step/stop", params={"winner": "one-step"})
        assert stopped.status_code == 200
        assert stopped.json()["status"] == "concluded" and stopped.json()["winner"] == "one-step"
        served = (await http.post(f"{BASE}/get-variant", json={"experiment": "checkout-1step", "user_id": "new"})).json()
        assert served["variant_key"] == "one-step" and served["source"] == "winner"

        archived = await http.delete(f"{BASE}/checkout-1step")
        assert archived.status_code == 200 and archived.json()["status"] == "archived"
        listed = (await http.get(f"{BASE}/")).json()
        assert listed["total"] == 0  # archived experiments are hidden unless asked for
        listed = (await http.get(BASE, params={"status": ["archived", "running"]})).json()
        assert [item["key"] for item in listed["items"]] == ["checkout-1step"]

        detail = (await http.get(f"{BASE}/checkout-1step", params={"include_change_log": "true"})).json()
        assert [c["change_type"] for c in detail["change_log"]] == ["archived", "concluded", "started", "created"]
        assert {c["actor"] for c in detail["change_log"]} == {"service:shop", "rest-api"}
        assert detail["assignments_by_variant"] == {"control": sum(v == "control" for v in assigned.values()),
                                                   "one-step": sum(v == "one-step" for v in assigned.values())}


async def test_rest_and_mcp_tools_are_the_same_service(rest_api) -> None:
    async with rest_api() as api:
        await api.create_running("prompt-v2")
        rest = (await api.http.post(f"{BASE}/get-variant", json={"experiment": "prompt-v2", "user_id": "alice"})).json()
        tool = await api.router.call_tool("get_variant", {"experiment": "prompt-v2", "user_id": "alice"})
        direct = await api.service.get_variant("prompt-v2", "alice")
        assert tool.structured_content["variant_key"] == direct.variant_key == rest["variant_key"]
        assert tool.structured_content["source"] == direct.source == "recorded"  # REST recorded it first


async def test_list_filters_and_pages(rest_api) -> None:
    async with rest_api() as api:
        for i in range(5):
            spec = experiment_spec(f"exp-{i}", type="prompt" if i % 2 else "ui", tags=["checkout"] if i < 2 else [])
            assert (await api.http.post(BASE, json=spec)).status_code == 201  # no trailing slash works too
        page = (await api.http.get(f"{BASE}/", params={"limit": 2})).json()
        assert len(page["items"]) == 2 and page["total"] == 5 and page["next_offset"] == 2
        last = (await api.http.get(f"{BASE}/", params={"limit": 2, "offset": 4})).json()
        assert len(last["items"]) == 1 and last["next_offset"] is None
        prompts = (await api.http.get(f"{BASE}/", params={"type": "prompt"})).json()
        assert {i["key"] for i in prompts["items"]} == {"exp-1", "exp-3"}
        tagged = (await api.http.get(f"{BASE}/", params={"tag": "checkout"})).json()
        assert {i["key"] for i in tagged["items"]} == {"exp-0", "exp-1"}


async def test_auth_is_the_same_bearer_token_as_mcp(rest_api) -> None:
    async with rest_api(token="s3cret") as api, httpx.AsyncClient(base_url=api.url) as anonymous:
        for method, path in [("GET", f"{BASE}/"), ("POST", f"{BASE}/get-variant"), ("GET", "/openapi.json"),
                             ("DELETE", f"{BASE}/x")]:
            denied = await anonymous.request(method, path)
            assert denied.status_code == 401, path
            assert denied.json() == {"error": "unauthorized", "detail": "missing or wrong bearer token"}
            assert denied.headers["www-authenticate"] == "Bearer"
        wrong = await anonymous.get(f"{BASE}/", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await api.http.get(f"{BASE}/")).status_code == 200


async def test_rate_limit_applies_to_the_api(rest_api) -> None:
    async with rest_api(api_rate_limit_per_minute=3) as api:
        codes = [(await api.http.get(f"{BASE}/")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


async def test_status_codes_and_error_bodies(rest_api) -> None:
    async with rest_api() as api:
        http = api.http
        await api.create_running("live")

        malformed = await http.post(f"{BASE}/get-variant", content=b'{"experiment": "live",',
                                    headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_json"
        empty = await http.post(f"{BASE}/record-result")
        assert empty.status_code == 400 and empty.json()["error"] == "invalid_json"

        bad_fields = await http.post(f"{BASE}/", json=experiment_spec("Bad Key!", coverage=2,
                                                                      variants=[{"key": "-x"}], surprise=1))
        assert bad_fields.status_code == 422
        body = bad_fields.json()
        assert body["error"] == "invalid_input"
        assert {tuple(e["loc"]) for e in body["errors"]} == {
            ("body", "key"), ("body", "coverage"), ("body", "variants", 0, "key"), ("body", "surprise")}
        assert "body.variants.0.key" in body["detail"]

        as_string = await http.post(f"{BASE}/", json=experiment_spec("typed", min_sample_size="5"))
        assert as_string.status_code == 422 and as_string.json()["errors"][0]["loc"] == ["body", "min_sample_size"]
        integral_float = await http.post(f"{BASE}/", json=experiment_spec("typed", min_sample_size=5.0))
        assert integral_float.status_code == 201  # JSON Schema's integer includes 5.0

        rule = await http.post(f"{BASE}/", json=experiment_spec("weights", variants=[
            {"key": "a", "is_control": True, "weight": 0.5}, {"key": "b", "weight": 0.6}]))
        assert rule.status_code == 422 and "must sum to 1" in rule.json()["detail"] and "errors" not in rule.json()

        taken = await http.post(f"{BASE}/", json=experiment_spec("live"))
        assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
        assert (await http.post(f"{BASE}/live/start")).status_code == 409
        assert (await http.post(f"{BASE}/typed/stop")).status_code == 409  # a draft never started

        missing = await http.get(f"{BASE}/nope")
        assert missing.status_code == 404
        assert missing.json() == {"error": "not_found",
                                  "detail": "no experiment with key or id 'nope' (list_experiments shows what exists)"}
        for method, path, body in [("POST", f"{BASE}/nope/start", None), ("GET", f"{BASE}/nope/analyze", None),
                                   ("GET", f"{BASE}/nope/summary", None), ("DELETE", f"{BASE}/nope", None),
                                   ("POST", f"{BASE}/get-variant", {"experiment": "nope", "user_id": "u"}),
                                   ("POST", f"{BASE}/get-variant/batch", {"experiment": "nope", "user_ids": ["u"]})]:
            answer = await http.request(method, path, json=body)
            assert answer.status_code == 404 and answer.json()["error"] == "not_found", (method, path)

        unassigned = await http.post(f"{BASE}/record-result", json={"experiment": "live", "user_id": "ghost",
                                                                    "metric": "conversion", "value": 1})
        assert unassigned.status_code == 409 and "get_variant" in unassigned.json()["detail"]
        undeclared = await http.get(f"{BASE}/live/analyze", params={"source": "registry", "metrics": "latency"})
        assert undeclared.status_code == 422 and "not declared" in undeclared.json()["detail"]
        # An undeclared metric's result: the answer says what a REST caller can do (no REST route updates).
        unknown = await http.post(f"{BASE}/record-result", json={"experiment": "live", "user_id": "ghost",
                                                                 "metric": "latency", "value": 1})
        assert unknown.status_code == 422 and "/mcp" in unknown.json()["detail"]
        bad_winner = await http.post(f"{BASE}/live/stop", params={"winner": "nobody"})
        assert bad_winner.status_code == 422 and "not a variant" in bad_winner.json()["detail"]

        bad_query = await http.get(f"{BASE}/", params={"limit": 0, "status": ["running", "paused"]})
        assert bad_query.status_code == 422
        assert {tuple(e["loc"]) for e in bad_query.json()["errors"]} == {("query", "limit"), ("query", "status", 1)}
        long_ref = await http.get(f"{BASE}/{'x' * 101}")
        assert long_ref.status_code == 422 and long_ref.json()["errors"][0]["loc"] == ["path", "id"]
        too_many = await http.post(f"{BASE}/get-variant/batch", json={"experiment": "live",
                                                                      "user_ids": [f"u{i}" for i in range(1001)]})
        assert too_many.status_code == 422 and too_many.json()["errors"][0]["loc"] == ["body", "user_ids"]
        huge = await http.post(f"{BASE}/get-variant", content=b" " * 1_100_000,
                                headers={"Content-Type": "application/json"})
        assert huge.status_code == 413 and huge.json()["error"] == "payload_too_large"

        not_allowed = await http.put(f"{BASE}/get-variant")
        assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "POST"
        assert not_allowed.json()["error"] == "method_not_allowed"
        assert (await http.patch(f"{BASE}/live")).headers["allow"] == "DELETE, GET, HEAD"
        unknown = await http.get("/api/v2/whatever")
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"


async def test_without_the_postgres_server_in_process_the_api_says_503(rest_api) -> None:
    async with rest_api(postgres_in_process=False) as api:
        answer = await api.http.get(f"{BASE}/")
        assert answer.status_code == 503 and answer.json()["error"] == "backend_unavailable"
