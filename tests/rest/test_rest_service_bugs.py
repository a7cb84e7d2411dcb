"""Server errors schemathesis once found whose root cause was in the postgres service (not the
REST layer), kept as regression tests through the API: NUL characters, non-ASCII digit refs,
values whose square overflows, integers beyond 64 bits in free-form JSON. Schemathesis now
sends all of them freely."""

from __future__ import annotations

BASE = "/api/v1/experiments"


async def test_nul_characters_are_refused_as_invalid_input(rest_api) -> None:
    async with rest_api() as api:
        await api.create_running("live")
        answers = [
            await api.http.post(f"{BASE}/get-variant", json={"experiment": "live", "user_id": "u\u00001"}),
            await api.http.post(f"{BASE}/get-variant", json={"experiment": "li\u0000ve", "user_id": "u1"}),
            await api.http.get(f"{BASE}/", params={"search": "a\u0000"}),
        ]
        assert [a.status_code for a in answers] == [422, 422, 422]


async def test_a_non_ascii_digit_id_is_an_unknown_experiment(rest_api) -> None:
    async with rest_api() as api:
        answer = await api.http.get(f"{BASE}/\u00b2")
        assert answer.status_code == 404


async def test_a_value_too_large_for_the_analysis_is_refused_and_analysis_keeps_working(rest_api) -> None:
    # Once a 500 (Σx² overflowed double precision in analyze and summary); now refused at record time.
    async with rest_api() as api:
        await api.create_running("live")
        await api.http.post(f"{BASE}/get-variant", json={"experiment": "live", "user_id": "u1"})
        recorded = await api.http.post(f"{BASE}/record-result", json={"experiment": "live", "user_id": "u1",
                                                                      "metric": "conversion", "value": 1e200})
        assert recorded.status_code == 422
        assert "within" in recorded.json()["detail"]
        assert (await api.http.get(f"{BASE}/live/summary")).status_code == 200


async def test_an_integer_beyond_64_bits_in_free_form_json_is_refused_as_invalid_input(rest_api) -> None:
    async with rest_api() as api:
        created = await api.http.post(f"{BASE}/", json={
            "key": "big", "name": "big", "type": "ui", "primary_metric": "conversion",
            "variants": [{"key": "control", "is_control": True, "config": {"n": 2**64}}, {"key": "treatment"}]})
        assert created.status_code == 422
        assert "64 bits" in created.json()["detail"]
