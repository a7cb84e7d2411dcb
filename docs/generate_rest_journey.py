"""Write the REST journey into README.md (between the rest-journey markers) from a running stack:
the seed's flow — create, start, get-variant, record-result, analyze, summary, stop — with a
planted effect (20,000 users, conversion 20% in control, 24% with the one-step checkout, a seeded
RNG). Every answer shown is a real call's (clipped); nothing is typed by hand. Rerun after
changing an endpoint.

    neonblue up                              # a stack: PostgreSQL, broker, router + stream + relay
    python docs/generate_rest_journey.py     # → README.md, section "REST API for applications"
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from mcp_router.runtime.serving import resolve_token
from mcp_router.runtime.stack import Stack
from schemas.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- rest-journey:start -->", "<!-- rest-journey:end -->"
SHOWN = "http://127.0.0.1:8765"  # the default address, shown in the commands whatever the stack's port
KEY = f"checkout-1step-{datetime.now(UTC):%Y%m%d%H%M}"  # keys are permanent: one per generation
USERS, BATCH, SEED = 20_000, 1000, 18
RATES = {"control": 0.20, "one-step": 0.24}
CREATE = {
    "key": KEY, "name": "One-step checkout", "type": "ui",
    "hypothesis": "A one-step checkout converts more visitors than the three-step one.",
    "primary_metric": "conversion", "min_sample_size": 1000,
    "variants": [{"key": "control", "is_control": True, "config": {"steps": 3}},
                 {"key": "one-step", "config": {"steps": 1}}],
}
# What README shows of /analyze (the full answer also has every metric's p-values, CUPED, power, notes...).
ANALYSIS_JQ = ("{verdict: .verdict | {verdict, rule_id, rule, confidence}, variants: [.variants[] | {key, users}], "
               "primary: .metrics[0] | {mean, control_mean, relative_lift, relative_ci, relative_ci_sequential, "
               "p_value_sequential, chance_to_win}, srm: .srm | {p_value, flagged}}")


def analysis_view(a: dict[str, Any]) -> dict[str, Any]:
    """Python's reading of ANALYSIS_JQ."""
    view: dict[str, Any] = {
        "verdict": {k: a["verdict"][k] for k in ("verdict", "rule_id", "rule", "confidence")},
        "variants": [{k: v[k] for k in ("key", "users")} for v in a["variants"]],
    }
    if a["metrics"]:
        view["primary"] = {k: a["metrics"][0][k] for k in ("mean", "control_mean", "relative_lift", "relative_ci",
                                                          "relative_ci_sequential", "p_value_sequential",
                                                          "chance_to_win")}
    view["srm"] = {k: a["srm"][k] for k in ("p_value", "flagged")}
    return view


def rounded(x: Any) -> Any:
    """Floats to 4 significant digits (a p-value of 1e-08 stays 1e-08)."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def pretty(x: Any) -> str:
    return json.dumps(rounded(x), indent=2, ensure_ascii=False)


class Journey:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.out: list[str] = []

    def text(self, *lines: str) -> None:
        self.out += [*lines, ""]

    def show(self, command: str, answer: Any = None, lang: str = "json") -> None:
        self.out += ["```bash", command, "```"]
        if answer is not None:
            self.out += [f"```{lang}", answer if isinstance(answer, str) else pretty(answer), "```"]
        self.out.append("")

    async def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        answer = await self.http.request(method, f"/api/v1/experiments{path}", **kwargs)
        if answer.status_code != status:
            sys.exit(f"{method} {path}: HTTP {answer.status_code} {answer.text[:500]}")
        return answer.json()


def curl(method: str, path: str, body: Any = None, jq: str | None = None, raw: bool = False) -> str:
    parts = ["curl -s"] + ([f"-X {method}"] if method != "GET" else []) + [f'"$API{path}"', '-H "$AUTH"']
    if body is not None:
        parts += ['-H "Content-Type: application/json"', f"-d '{json.dumps(body)}'"]
    line = " ".join(parts)
    return line + (f" | jq {'-r ' if raw else ''}'{jq}'" if jq else "")


async def walk(j: Journey) -> None:
    j.text(f"Captured from a running stack (`neonblue up`) by `docs/generate_rest_journey.py` on "
           f"{datetime.now(UTC):%Y-%m-%d}: {USERS:,} users, conversion {RATES['control']:.0%} in control and "
           f"{RATES['one-step']:.0%} with the one-step checkout (a +20% relative lift, drawn with a seeded RNG). "
           "Answers are real, clipped to the fields that matter.")
    j.show(f"API={SHOWN}/api/v1/experiments\n"
           "AUTH=\"Authorization: Bearer $(cat ~/.neonblue/run/http_token)\"   # the token `neonblue up` generated")

    j.text("**1. Create** the experiment (a draft) and **start** it:")
    created = await j.call("POST", "/", 201, json=CREATE)
    j.show(curl("POST", "/", CREATE, "{id, key, status, variants: [.variants[] | {key, is_control, weight}]}"),
           {"id": created["id"], "key": created["key"], "status": created["status"],
            "variants": [{k: v[k] for k in ("key", "is_control", "weight")} for v in created["variants"]]})
    started = await j.call("POST", f"/{KEY}/start")
    j.show(curl("POST", f"/{KEY}/start", jq="{status, started_at}"),
           {"status": started["status"], "started_at": started["started_at"]})

    j.text("**2. Analyze before anyone was exposed**: not an error, the `no_data` verdict with its reason:")
    empty = await j.call("GET", f"/{KEY}/analyze")
    j.show(curl("GET", f"/{KEY}/analyze", jq=".verdict | {verdict, rule_id, rule}"),
           {k: empty["verdict"][k] for k in ("verdict", "rule_id", "rule")})

    j.text("**3. Get a variant** for each user (sticky; the first call records the user's exposure, which the "
           "outbox relay sends through Kafka to the event store the analysis reads). One user, then the batch "
           f"endpoint ({BATCH:,} users a call):")
    users = [f"user-{i}" for i in range(USERS)]
    one = await j.call("POST", "/get-variant", json={"experiment": KEY, "user_id": users[0]})
    j.show(curl("POST", "/get-variant", {"experiment": KEY, "user_id": users[0]}),
           {k: one[k] for k in ("variant_key", "config", "in_experiment", "source", "newly_exposed")})
    assigned: dict[str, str] = {}
    lines = []
    for i in range(0, USERS, BATCH):
        batch = await j.call("POST", "/get-variant/batch", json={"experiment": KEY, "user_ids": users[i:i + BATCH]})
        assigned.update(batch["assigned"])
        lines.append(json.dumps({k: batch[k] for k in ("newly_recorded", "already_recorded", "newly_exposed")},
                                separators=(",", ":")))
    counts = {v: sum(1 for x in assigned.values() if x == v) for v in RATES}
    body = (f'{{experiment: "{KEY}", user_ids: [range($b*{BATCH}; ($b+1)*{BATCH}) | "user-\\(.)"]}}')
    j.show(f"for b in $(seq 0 {USERS // BATCH - 1}); do\n"
           f'  curl -s -X POST "$API/get-variant/batch" -H "$AUTH" -H "Content-Type: application/json" \\\n'
           f"    -d \"$(jq -nc --argjson b $b '{body}')\" | jq -c '{{newly_recorded, already_recorded, newly_exposed}}'\n"
           "done",
           "\n".join([*lines[:2], f"... ({len(lines) - 3} more like it)", lines[-1],
                      f"# {len(assigned):,} users: {counts['control']:,} control, {counts['one-step']:,} one-step"]),
           "text")

    j.text("**4. Record a result** for each user who converted:")
    rng = random.Random(SEED)
    converters = [u for u in users if rng.random() < RATES[assigned[u]]]
    gate = asyncio.Semaphore(16)

    async def record(user: str) -> Any:
        async with gate:
            return await j.call("POST", "/record-result", 201, json={
                "experiment": KEY, "user_id": user, "metric": "conversion", "value": 1, "event_id": f"conv-{user}"})

    results = await asyncio.gather(*(record(u) for u in converters))
    first = results[0]
    j.show(curl("POST", "/record-result", {"experiment": KEY, "user_id": converters[0], "metric": "conversion",
                                           "value": 1, "event_id": f"conv-{converters[0]}"}),
           {k: first[k] for k in ("experiment_key", "user_id", "variant_key", "metric", "value", "duplicate")})
    by_arm = {v: sum(1 for u in converters if assigned[u] == v) for v in RATES}
    j.text(f"({len(converters):,} conversions recorded: {by_arm['control']:,} in control, "
           f"{by_arm['one-step']:,} with the one-step checkout.)")

    # The relay and the stream processor deliver within seconds; the sequential test is safe to read
    # at any time, so read until the analysis counts every exposure and conversion.
    started_wait = time.monotonic()
    while True:
        analysis = await j.call("GET", f"/{KEY}/analyze")
        users_in = sum(v["users"] for v in analysis["variants"])
        primary = analysis["metrics"][0] if analysis["metrics"] else None
        converted = round(primary["mean"] * primary["n"] + primary["control_mean"] * primary["control_n"]) \
            if primary else 0
        if users_in == USERS and converted == len(converters):
            break
        if time.monotonic() - started_wait > 300:
            sys.exit(f"the analysis counts {users_in} users and {converted} conversions after 300 s: is the stream up?")
        await asyncio.sleep(1)
    waited = time.monotonic() - started_wait

    j.text(f"**5. Analyze**: the statistics engine's verdict — the same analysis as the MCP tool "
           f"`analyze_experiment_performance` (sequential decision, CUPED when a pre-period covariate exists, "
           f"SRM, multiple testing, guardrails). The events had reached it {waited:.0f} s after the last "
           f"record-result.")
    j.show(curl("GET", f"/{KEY}/analyze", jq=ANALYSIS_JQ), analysis_view(analysis))

    j.text("**6. Summary**: a markdown report from the registry; its sample-size sentence states the plan and the "
           "numbers:")
    summary = await j.call("GET", f"/{KEY}/summary")
    j.show(curl("GET", f"/{KEY}/summary", jq=".summary", raw=True), summary["summary"], "markdown")

    j.text("`GET $API/{id}/analyze?source=registry` is the secondary, descriptive view: per-variant counts and "
           "means of the results recorded in PostgreSQL, no test, no interval, no verdict.")
    j.text("**7. Stop and declare the winner**: from now on get-variant serves its config to everyone:")
    stopped = await j.call("POST", f"/{KEY}/stop", params={"winner": "one-step"})
    j.show(curl("POST", f"/{KEY}/stop?winner=one-step", jq="{status, winner}"),
           {"status": stopped["status"], "winner": stopped["winner"]})


async def main() -> None:
    settings = Settings()
    stack = Stack(settings)
    token = resolve_token(settings, create=False)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=stack.owner_url, headers=headers, timeout=120) as http:
        if (await http.get("/health")).status_code != 200:
            sys.exit(f"no healthy stack at {stack.owner_url}: run `neonblue up` first")
        journey = Journey(http)
        await walk(journey)
    readme = README.read_text()
    if START not in readme or END not in readme:
        sys.exit(f"README.md has no {START} ... {END} section")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + START + "\n" + "\n".join(journey.out) + END + tail)
    print(f"README.md: REST journey of {KEY} written", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
