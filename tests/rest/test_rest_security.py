"""Issue 16, item 4, on the REST API as served: no token on loopback must not mean that any web
page can create or start experiments (CSRF with a "simple" cross-site request), nor read the API
by rebinding its own name to 127.0.0.1."""

from __future__ import annotations

BASE = "/api/v1/experiments"
SPEC = {"key": "csrf", "name": "csrf", "type": "feature", "primary_metric": "conversion",
        "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}


def _json_text() -> bytes:
    import json

    return json.dumps(SPEC).encode()


async def test_a_cross_site_form_post_creates_and_starts_nothing(rest_api) -> None:
    async with rest_api(token=None) as api:
        evil = {"Origin": "http://evil.example.com", "Content-Type": "text/plain"}
        created = await api.http.post(f"{BASE}/", content=_json_text(), headers=evil)
        assert created.status_code == 403, created.text
        assert created.json()["error"] == "forbidden_origin"
        # Without an Origin (a non-browser client), a text/plain body is still refused: JSON only.
        plain = await api.http.post(f"{BASE}/", content=_json_text(), headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        assert plain.json() == {"error": "unsupported_media_type",
                                "detail": "request bodies must be Content-Type: application/json"}
        assert (await api.http.get(f"{BASE}/")).json()["total"] == 0

        assert (await api.http.post(f"{BASE}/", json=SPEC)).status_code == 201
        for headers in ({"Origin": "http://evil.example.com"}, {"Content-Type": "text/plain"},
                        {"Origin": "http://evil.example.com", "Content-Type": "application/x-www-form-urlencoded"}):
            refused = await api.http.post(f"{BASE}/csrf/start", headers=headers)
            assert refused.status_code in (403, 415), (headers, refused.text)
        assert (await api.http.get(f"{BASE}/csrf")).json()["status"] == "draft"

        same_origin = await api.http.post(f"{BASE}/csrf/start", headers={"Origin": api.url})
        assert same_origin.status_code == 200, same_origin.text  # a bodyless POST needs no Content-Type


async def test_a_rebound_host_reads_nothing(rest_api) -> None:
    async with rest_api(token=None) as api:
        assert (await api.http.post(f"{BASE}/", json=SPEC)).status_code == 201
        for path in (f"{BASE}/", f"{BASE}/csrf", "/openapi.json", "/metrics"):
            rebound = await api.http.get(path, headers={"Host": "evil.example.com"})
            assert rebound.status_code == 421, path
            assert set(rebound.json()) == {"error", "detail"}
            assert "csrf" not in rebound.text
        port = api.url.rsplit(":", 1)[1]
        assert (await api.http.get(f"{BASE}/", headers={"Host": f"localhost:{port}"})).status_code == 200


async def test_listed_hosts_and_origins_are_served(rest_api) -> None:
    async with rest_api(allowed_hosts=["neonblue.example.com"], allowed_origins=["https://app.example.com"]) as api:
        host = {"Host": "neonblue.example.com"}
        assert (await api.http.get(f"{BASE}/", headers=host)).status_code == 200
        created = await api.http.post(f"{BASE}/", json=SPEC, headers={**host, "Origin": "https://app.example.com"})
        assert created.status_code == 201, created.text
        other = await api.http.post(f"{BASE}/csrf/start", headers={**host, "Origin": "https://other.example.com"})
        assert other.status_code == 403
