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
- KNOWN SERVICE BUGS are kept out of the requests (test_rest_service_bugs.py pins each with
  a strict xfail; when one is fixed, drop its avoidance here): 1 NUL characters in strings,
  4 integers beyond 64 bits inside free-form JSON. (2, non-ASCII digit refs, and 3, values whose
  square overflows, are fixed: schemathesis sends those freely.) A before_call hook edits every
  phase's requests.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import schemathesis
from schemathesis.engine import Status, events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

EXAMPLES_PER_OPERATION = 15
INT64_MAX = 2**63 - 1


def run_schemathesis(url: str, token: str) -> tuple[list[str], dict[str, int]]:
    """Run the engine; return readable failures and how many scenarios ran per phase."""
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {token}"},
        "seed": int(os.environ.get("REST_SCHEMATHESIS_SEED", "20261121")),  # another seed explores more
        "generation": {"max-examples": EXAMPLES_PER_OPERATION, "allow-x00": False},  # known bug 1
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

    def before_call(context: Any, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
        """Keep the known service bugs out of every phase's requests (map_* hooks miss some phases)."""
        if isinstance(case.body, dict):
            case.body = _bounded(case.body)

    schemathesis.hook(before_call)  # a global-scope hook: unregistered below
    try:
        return _execute(schema)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)


def _bounded(node: Any) -> Any:
    """Known bug 4: integers beyond 64 bits inside free-form JSON (config, metadata, targeting)."""
    if isinstance(node, dict):
        return {k: _bounded(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_bounded(v) for v in node]
    if isinstance(node, int) and not isinstance(node, bool) and abs(node) > INT64_MAX:
        return INT64_MAX if node > 0 else -INT64_MAX
    return node


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
    async with rest_api() as api:
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
