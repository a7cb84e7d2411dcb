"""Schemathesis (PyPI) against the live API: the same engine the `st run` CLI drives (examples,
coverage, fuzzing and stateful phases, every default check), loaded from the served
/openapi.json with the bearer token, on loopback, with a bounded number of examples.

The engine is synchronous (requests), so it runs in a worker thread while uvicorn serves
from the test's event loop. Any failed check - a 5xx, a response that violates its schema,
an undocumented status code, a wrong content type, invalid data accepted, a wrong Allow
header - fails the test with the engine's own description and a curl line.

Deliberate settings, each with its reason:
- positive_data_acceptance also expects 422: the service refuses schema-valid input that
  breaks rules a JSON Schema cannot state (weights summing to 1, a metric declared on the
  experiment, a winner that is one of its variants, forced users on existing variants).
- use_after_free is off: DELETE archives (the registry keeps every experiment for the audit
  trail), so GET /{id} still answers 200 with status "archived", as documented.
- Nothing is kept out of the requests: the four service bugs schemathesis once found (NUL
  characters, non-ASCII digit refs, values whose square overflows, integers beyond 64 bits in
  free-form JSON) are fixed and pinned by test_rest_service_bugs.py; NULs and huge integers are
  sent freely.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import schemathesis
from schemathesis.engine import Status, events

EXAMPLES_PER_OPERATION = 15


def run_schemathesis(url: str, token: str) -> tuple[list[str], dict[str, int]]:
    """Run the engine; return readable failures and how many scenarios ran per phase."""
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {token}"},
        "seed": int(os.environ.get("REST_SCHEMATHESIS_SEED", "20261121")),  # another seed explores more
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "allow-x00": True},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 404, 409, 422, 429, "5xx"]},
            "use_after_free": {"enabled": False},  # DELETE archives: GET keeps answering, with status "archived"
        },
        "phases": {"stateful": {"max-steps": 8}},
        "max-time": 45,  # a ceiling for loaded machines (the engine stops cleanly); an idle run needs ~25 s
        "request-timeout": 30,
        "max-failures": 50,
    })
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config,
                                           headers={"Authorization": f"Bearer {token}"})
    return _execute(schema)


def _execute(schema: Any) -> tuple[list[str], dict[str, int]]:
    failures: list[str] = []
    scenarios: dict[str, int] = {}
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            phase = str(getattr(event, "phase", "fuzzing"))
            scenarios[phase] = scenarios.get(phase, 0) + 1
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(f"[{check.name}] {failure.operation or event.recorder.label}: {failure.title}\n"
                                        f"  {failure.message}\n  {check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError):
            failures.append(f"[error] {event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            failures.append(f"[fatal] {event.exception!r}")
    return list(dict.fromkeys(failures)), scenarios


async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(rest_api) -> None:
    async with rest_api(intelligence=True) as api:  # /analyze answers the statistics engine's analysis
        # Give the documented examples something real to hit: the example experiment runs,
        # the example user is assigned, and the example metric is declared.
        await api.create_running("checkout-1step", secondary_metrics=["revenue"])
        assigned = await api.http.post("/api/v1/experiments/get-variant",
                                       json={"experiment": "checkout-1step", "user_id": "u-123"})
        assert assigned.status_code == 200

        failures, scenarios = await anyio.to_thread.run_sync(run_schemathesis, api.url, api.token)

        after = await api.http.get("/api/v1/experiments/checkout-1step")  # still serving, data intact
    assert sum(scenarios.values()) >= 11, scenarios  # every operation was exercised
    assert not failures, f"{len(failures)} failures in {scenarios}:\n\n" + "\n\n".join(failures)
    assert after.status_code == 200
