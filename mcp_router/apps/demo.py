"""`neonblue demo`: the main job, end to end, the way a new user first meets NeonBlue.

1. start the embedded stack (PostgreSQL, the Kafka broker, the router owning chDB + Chroma and
   running the stream processor);
2. create a portfolio of experiments with KNOWN true effects through the router's MCP tools;
3. stream their traffic through Kafka with the load generator and wait until the stream
   processor has ingested it;
4. seed ChromaDB with a history of past experiments;
5. ask the router — through a real MCP client over HTTP, as an agent would — to analyse,
   recommend, allocate, predict and search; print the answers as tables, write the plots;
6. check that each verdict matches the effect that was planted, and say how to connect
   Claude Desktop and `neonblue chat` to the same data.

Re-running is safe: experiments are reused, event ids are deterministic (the stores
deduplicate them), and memory documents are upserts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from mcp_router.runtime.serving import resolve_token
from mcp_router.runtime.stack import Stack
from mcp_servers.postgres.models import Experiment
from mcp_servers.postgres.service import assignment_spec
from schemas.settings import Settings
from stream_processor.generator import ArmTruth, MetricTruth, TrafficPlan, generate_events, produce

console = Console(stderr=False)

# "No effect" is not one verdict: an A/A test may say keep running or, once the MDE is out of
# reach, needs review (stop for futility); it must never say ship or roll back.
NO_EFFECT = "no effect"
NO_EFFECT_VERDICTS = frozenset({"keep_running", "needs_review"})


@dataclass(frozen=True)
class DemoExperiment:
    definition: dict[str, Any]
    truths: dict[str, ArmTruth]
    users: int
    expected: str  # the verdict the planted effect calls for
    story: str  # the true effect, in words
    seed: int = 0
    # A bandit is judged by where it sends traffic, not by a ship/roll-back verdict.
    bandit: bool = False
    # A personalised experiment (tag 'personalized'): per-device conversion rates of its arms, in variant
    # order; its traffic comes from context_events and it is judged by what each device is served.
    context_rates: dict[str, list[float]] | None = None

    @property
    def key(self) -> str:
        return self.definition["key"]


def portfolio(scale: float = 1.0) -> list[DemoExperiment]:
    """Six experiments whose true effects are set here, so the verdicts (and what the personalised one
    serves each device) can be checked."""

    def users(n: int) -> int:
        return max(2_000, int(n * scale))

    conversion = {"name": "conversion", "direction": "higher"}
    revenue = {"name": "revenue", "direction": "higher"}
    return [
        DemoExperiment(
            {"key": "checkout-1step", "name": "One-step checkout", "type": "ui",
             "description": "Collapse the two checkout steps (address, payment) into one page.",
             "hypothesis": "Fewer steps reduce drop-off on mobile and raise checkout conversion.",
             "primary_metric": conversion, "guardrail_metrics": [revenue], "tags": ["checkout", "demo"],
             "variants": [{"key": "two_step", "name": "Two steps", "is_control": True, "weight": 0.5},
                          {"key": "one_step", "name": "One step", "weight": 0.5}]},
            {"two_step": ArmTruth(0.20, 50.0), "one_step": ArmTruth(0.24, 50.0)},
            users(40_000), "ship", "conversion 20% → 24% (+4 points), revenue per order unchanged", seed=11),
        DemoExperiment(
            {"key": "homepage-aa", "name": "Homepage A/A check", "type": "feature",
             "description": "Two identical homepages: validates assignment and the analysis pipeline.",
             "hypothesis": "No difference: an A/A test must not find one.",
             "primary_metric": conversion, "tags": ["aa", "demo"],
             "variants": [{"key": "a", "is_control": True, "weight": 0.5}, {"key": "b", "weight": 0.5}]},
            {"a": ArmTruth(0.15), "b": ArmTruth(0.15)},
            users(20_000), NO_EFFECT, "identical arms: no effect", seed=12),
        DemoExperiment(
            {"key": "pricing-premium", "name": "Premium price point", "type": "feature",
             "description": "Show the premium plan at a higher price on the pricing page.",
             "hypothesis": "A higher price keeps conversion and raises revenue per order.",
             "primary_metric": conversion, "guardrail_metrics": [revenue], "tags": ["pricing", "demo"],
             "variants": [{"key": "standard", "is_control": True, "weight": 0.5}, {"key": "premium", "weight": 0.5}]},
            {"standard": ArmTruth(0.30, 60.0), "premium": ArmTruth(0.30, 45.0)},
            users(20_000), "roll_back", "same conversion (30%), revenue per order −25% (guardrail)", seed=13),
        DemoExperiment(
            {"key": "support-bot-prompt", "name": "Support bot system prompt", "type": "prompt",
             "description": "An LLM support bot: a step-by-step troubleshooting prompt against the current one.",
             "hypothesis": "Step-by-step guidance resolves more tickets without slower answers.",
             "primary_metric": {"name": "resolved", "direction": "higher"},
             "guardrail_metrics": [{"name": "latency_ms", "direction": "lower"}],
             "secondary_metrics": [{"name": "output_tokens", "direction": "lower"}], "tags": ["llm", "demo"],
             "variants": [
                 {"key": "current", "is_control": True, "weight": 0.5,
                  "config": {"model": "claude-sonnet-4-5", "system_prompt": "You are a helpful support agent."}},
                 {"key": "step_by_step", "weight": 0.5,
                  "config": {"model": "claude-sonnet-4-5",
                             "system_prompt": "You are a support agent. Diagnose step by step, confirm each fix."}}]},
            {"current": ArmTruth(0.0, metrics={"resolved": MetricTruth(0.62), "latency_ms": MetricTruth(900, 150),
                                               "output_tokens": MetricTruth(220, 40)}),
             "step_by_step": ArmTruth(0.0, metrics={"resolved": MetricTruth(0.70), "latency_ms": MetricTruth(905, 150),
                                                    "output_tokens": MetricTruth(260, 40)})},
            users(10_000), "ship", "resolution 62% → 70%, latency unchanged", seed=14),
        DemoExperiment(
            {"key": "onboarding-bandit", "name": "Mobile onboarding flow (3-arm bandit)", "type": "workflow",
             "description": "Three mobile onboarding flows; traffic moves to the best one as evidence accrues.",
             "hypothesis": "A shorter, personalised onboarding activates more new users.",
             "primary_metric": conversion, "tags": ["onboarding", "mobile", "bandit", "demo"],
             "variants": [{"key": "classic", "is_control": True, "weight": 1 / 3},
                          {"key": "short", "weight": 1 / 3}, {"key": "personalised", "weight": 1 / 3}]},
            {"classic": ArmTruth(0.10), "short": ArmTruth(0.13), "personalised": ArmTruth(0.18)},
            users(15_000), "traffic → personalised", "activation 10% / 13% / 18%: 'personalised' is best",
            seed=15, bandit=True),
        DemoExperiment(
            {"key": "paywall-personalised", "name": "Paywall layout, personalised by device", "type": "ui",
             "description": "Three paywall layouts; each user is served the layout the contextual bandit picks "
                            "for their device.",
             "hypothesis": "The best paywall depends on the device: compact on mobile, comparison table on desktop.",
             "primary_metric": conversion, "tags": ["paywall", "personalized", "personalize:device", "demo"],
             "variants": [{"key": "standard", "is_control": True, "weight": 1 / 3},
                          {"key": "compact", "weight": 1 / 3}, {"key": "table", "weight": 1 / 3}]},
            {}, users(40_000), PERSONALISED_EXPECTED,
            "conversion by device — mobile: 10% / 15% / 8%, desktop: 10% / 8% / 14%, tablet: 11% all",
            seed=16, context_rates=PERSONALISED_RATES),
    ]


PERSONALISED_RATES = {"mobile": [0.10, 0.15, 0.08], "desktop": [0.10, 0.08, 0.14], "tablet": [0.11, 0.11, 0.11]}
PERSONALISED_EXPECTED = "mobile → compact, desktop → table"
DEVICE_SHARES = {"mobile": 0.55, "desktop": 0.38, "tablet": 0.07}  # the load generator's device mix
PERSONALISED_DECISIONS = 25  # new users per device served through personalize_experiment_experience


def context_events(key: str, variants: list[str], rates: dict[str, list[float]], users: int, start: datetime, *,
                   days: int = 14, seed: int = 0) -> Iterator[tuple[str, bytes, bytes]]:
    """Exposures and conversions with a planted context effect: each user has a device and a uniformly drawn
    arm (the exploration history of a personalised experiment), and converts with the rate of that pair."""
    rng = np.random.default_rng(seed)
    devices = list(DEVICE_SHARES)
    device = rng.choice(len(devices), users, p=list(DEVICE_SHARES.values()))
    arm = rng.integers(len(variants), size=users)
    at = start.timestamp() + rng.uniform(0, days * 86400, users)
    converts = rng.uniform(size=users) < np.array([rates[devices[d]][a] for d, a in zip(device, arm, strict=True)])
    for i in range(users):
        user = f"{key}-u{i:07d}"
        ts = datetime.fromtimestamp(float(at[i]), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        base = {"user_id": user, "experiment_id": key, "variant": variants[arm[i]], "timestamp": ts,
                "segment": {"device": devices[device[i]]}}
        yield "experiments_events", user.encode(), orjson.dumps({"event_id": f"{key}:{user}:exp",
                                                                 "event_type": "exposure", **base})
        if converts[i]:
            yield "analytics_events", user.encode(), orjson.dumps({"event_id": f"{key}:{user}:conv",
                                                                   "event_type": "conversion", **base})


_TOPICS = ["checkout", "pricing page", "onboarding", "search ranking", "recommendations", "signup form",
           "support chatbot prompt", "email subject line", "push notification", "paywall"]
_CHANGES = ["fewer steps", "social proof", "a progress bar", "personalised copy", "a larger call to action",
            "free-shipping threshold", "a shorter prompt", "a cheaper model", "urgency messaging", "an annual plan default"]
_PLATFORMS = ["mobile", "desktop", "web", "api"]


def history(n: int = 60, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Past experiments for the memory: varied topics, changes and outcomes (a seeded, fixed history)."""
    rng = random.Random(seed)
    for i in range(n):
        topic, change, platform = rng.choice(_TOPICS), rng.choice(_CHANGES), rng.choice(_PLATFORMS)
        lift = round(rng.gauss(0.04 if "checkout" in topic or "steps" in change else 0.0, 0.05), 4)
        p_value = round(min(0.99, max(1e-4, abs(rng.gauss(0.02 if abs(lift) > 0.05 else 0.3, 0.05)))), 4)
        yield {
            "experiment": {
                "key": f"past-{i:03d}", "name": f"{topic.capitalize()}: {change}", "type": "ui",
                "description": f"Tested {change} on the {topic} for {platform} users.",
                "hypothesis": f"{change.capitalize()} on the {topic} improves conversion.",
                "status": "concluded", "platform": platform, "industry": "e-commerce",
                "primary_metric": "conversion", "lift": lift, "p_value": p_value,
                "sample_size": rng.randrange(5_000, 200_000, 1_000),
                "conversion_rate": round(rng.uniform(0.02, 0.3), 4),
                "winner": "treatment" if lift > 0 and p_value < 0.05 else None,
                "concluded_at": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=3 * i)).isoformat(),
            }
        }


@dataclass
class DemoReport:
    verdicts: dict[str, str] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    produced: int = 0
    plots: list[str] = field(default_factory=list)

    @property
    def matches(self) -> dict[str, bool]:
        return {k: verdict_matches(self.verdicts.get(k), v) for k, v in self.expected.items()}


def verdict_matches(verdict: str | None, expected: str) -> bool:
    if expected == NO_EFFECT:
        return verdict in NO_EFFECT_VERDICTS
    return verdict == expected


class Agent:
    """A thin MCP client helper: call a tool, fail loudly on isError, return structured content."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def call(self, tool: str, arguments: dict[str, Any], *, allow_error: bool = False) -> Any:
        result = await self.client.call_tool(tool, arguments)
        if result.is_error:
            text = " ".join(getattr(c, "text", "") for c in result.content)
            if allow_error:
                return None
            raise RuntimeError(f"{tool} failed: {text}")
        return result if tool == "plot_experiment" else result.structured_content


async def ensure_experiment(agent: Agent, exp: DemoExperiment) -> Experiment:
    found = await agent.call("get_experiment", {"experiment": exp.key}, allow_error=True)
    if found is None:
        await agent.call("create_experiment", {"experiment": exp.definition})
        found = await agent.call("start_experiment", {"experiment": exp.key})
    elif found["status"] == "draft":
        found = await agent.call("start_experiment", {"experiment": exp.key})
    return Experiment.model_validate(found)


async def wait_for_ingestion(agent: Agent, target: int, limit_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        stream = (await agent.call("router_status", {}))["stream"] or {}
        if stream.get("consumed", 0) >= target and not any(stream.get("lag", {}).values()):
            return stream
        if time.monotonic() > deadline:
            raise RuntimeError(f"the stream processor ingested {stream.get('consumed')} of {target} events in time")
        await asyncio.sleep(0.5)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f}%"


STATISTICS_NOTE = (
    "These are the numbers each verdict used. lift: relative to the control, with its always-valid "
    "(sequential) 95% interval, valid however often the results are read. p: always-valid, Holm-adjusted "
    "across treatment arms, one-sided (harm) for a guardrail. The analysis also reports a fixed-horizon "
    "interval (relative_ci): narrower, it can exclude 0 while the decision waits, because it is valid only "
    "for one look at a sample size planned in advance."
)


def decision_cells(analysis: dict[str, Any]) -> tuple[str, str, str, str]:
    """The metric that decided the verdict and the statistics the decision read: (decided by, lift with the
    always-valid interval, decision p, chance to win). A guardrail decides a guardrail_failure roll-back."""
    verdict, options = analysis["verdict"], analysis["options"]
    arm = verdict.get("variant")
    metrics = [m for m in analysis["metrics"] if not m.get("error") and m["variant"] == (arm or m["variant"])]
    failing = [m for m in metrics if m["role"] == "guardrail" and (m.get("guardrail") or {}).get("status") == "fail"]
    if verdict["rule_id"] == "guardrail_failure" and failing:
        m = min(failing, key=lambda g: g["guardrail"]["p_harm"])
        p = f"{m['guardrail']['p_harm']:.2g}\n(one-sided)"
        role = "guardrail"
    else:
        primary = [m for m in metrics if m["role"] == "primary"]
        if not primary:
            return "—", "—", "—", "—"
        m, role = primary[0], "primary"
        treatments = len({x["variant"] for x in analysis["metrics"] if x["role"] == "primary"})
        corrected = options["multiple_testing"] != "none" and treatments > 1
        decision_p = m["p_value_adjusted"] if m["p_value_adjusted"] is not None else m["p_value_sequential"]
        adjusted = {"holm": "Holm", "benjamini-hochberg": "BH"}.get(options["multiple_testing"], "")
        p = f"{decision_p:.2g}" + (f"\n({adjusted})" if corrected else "")
    sequential = options["sequential"]
    ci = m["relative_ci_sequential"] if sequential else m["relative_ci"]
    lift = f"{_pct(m['relative_lift'])}\n({_pct(ci[0])} to {_pct(ci[1])})"
    if not sequential:
        lift += "\nfixed-horizon"
    chance = f"{m['chance_to_win']:.0%}" if role == "primary" else "—"
    return f"{m['metric']} ({role})\n{m['variant']} vs {m['control']}", lift, p, chance


async def run(settings: Settings, scale: float, output: Path) -> DemoReport:
    report = DemoReport()
    stack = Stack(settings)
    token = resolve_token(settings, create=False)
    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=300)
    async with Client(streamable_http_client(f"{stack.owner_url}/mcp", http_client=http)) as client:
        agent = Agent(client)
        tools = (await client.list_tools()).tools
        console.print(f"Connected to the router over MCP (streamable HTTP): [bold]{len(tools)} tools[/bold].")

        # 2. the portfolio
        experiments = portfolio(scale)
        table = Table("experiment", "type", "arms", "users", "true effect", title="Portfolio (true effects planted)")
        created: dict[str, Experiment] = {}
        for exp in experiments:
            created[exp.key] = await ensure_experiment(agent, exp)
            report.expected[exp.key] = exp.expected
            table.add_row(exp.key, exp.definition["type"], str(len(exp.definition["variants"])), f"{exp.users:,}",
                          exp.story)
        console.print(table)

        # 3. traffic through Kafka
        before = ((await agent.call("router_status", {}))["stream"] or {}).get("consumed", 0)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14)

        def all_events() -> Iterator[tuple[str, bytes, bytes]]:
            for exp in experiments:
                record = created[exp.key]
                if exp.context_rates:
                    yield from context_events(exp.key, [v.key for v in record.variants], exp.context_rates,
                                              exp.users, start, seed=exp.seed)
                    continue
                # Hash with the registry's seed but the weights the experiment started with: a re-run
                # after the bandit moved traffic must replay the same traffic, not reassign users.
                spec = replace(assignment_spec(record),
                               weights=tuple(v["weight"] for v in exp.definition["variants"]))
                plan = TrafficPlan(exp.key, [v.key for v in record.variants], spec, exp.truths,
                                   exp.users, start, days=14, seed=exp.seed)
                yield from generate_events(plan)

        events = list(all_events())
        console.print(f"Streaming {len(events):,} events through Kafka "
                      f"({settings.effective_kafka_bootstrap}) with the load generator…")
        report.produced = await produce(settings.effective_kafka_bootstrap, iter(events), total=len(events))
        stream = await wait_for_ingestion(agent, before + report.produced, limit_s=900)
        console.print(f"The stream processor ingested them: {stream['consumed']:,} consumed, "
                      f"{stream['dead_lettered']} dead-lettered, batch p50 {stream['batch_ms_p50']} ms.")

        # 4. memory of past experiments
        for item in history():
            await agent.call("store_experiment_context", item)
        stats = await agent.call("collection_stats", {})
        console.print(f"Semantic memory: {json.dumps({c['name']: c['count'] for c in stats['collections']})}")

        # 5. ask, as an agent would
        # Narrow enough for 80 columns; a value that does not fit folds onto the next line, never "…".
        verdicts = Table(title="analyze_experiment_performance", box=box.SIMPLE_HEAD)
        for header, width in (("experiment, verdict", 18), ("decided by", 12), ("lift, always-valid 95% CI", 12),
                              ("always-valid p", 12), ("chance to win", 6)):
            verdicts.add_column(header, min_width=width, overflow="fold")
        rules: list[tuple[str, str]] = []
        for exp in experiments:
            analysis = await agent.call("analyze_experiment_performance", {"experiment": exp.key})
            verdict = analysis["verdict"]
            judged_by_traffic = exp.bandit or exp.context_rates is not None
            if not judged_by_traffic:
                report.verdicts[exp.key] = verdict["verdict"]
            ok = "" if judged_by_traffic else ("✓ " if verdict_matches(verdict["verdict"], exp.expected) else "✗ ")
            expected = (f"({'bandit' if exp.bandit else 'personalised'}: see allocation)" if judged_by_traffic
                        else f"(expected {exp.expected})")
            verdicts.add_row(f"[bold]{exp.key}[/bold]\n{ok}{verdict['verdict']}\n{expected}", *decision_cells(analysis))
            rules.append((exp.key, f"{verdict['rule_id']}: {verdict['rule']}"))
        console.print(verdicts)
        console.print("The rule behind each verdict:")
        for key, rule in rules:
            console.print(Padding(Text.assemble((key, "bold"), " ", rule), (0, 0, 0, 2)))
        console.print(Padding(Text(STATISTICS_NOTE, style="dim"), (1, 0, 0, 0)))

        recs = await agent.call("recommend_experiment_optimization", {"experiment": "onboarding-bandit"})
        rec_table = Table("#", "action", "why", title="recommend_experiment_optimization: onboarding-bandit")
        for action in recs["actions"][:5]:
            rec_table.add_row(str(action["rank"]), action["action"], action["reasoning"])
        console.print(rec_table)

        allocation = await agent.call("allocate_traffic", {
            "experiment": "onboarding-bandit", "dry_run": False, "confirm": True,
            "reason": "demo: apply the Thompson-sampling allocation"})
        weights = allocation["proposed_weights"]
        report.verdicts["onboarding-bandit"] = f"traffic → {max(weights, key=weights.get)}"
        console.print("allocate_traffic (Thompson sampling): "
                      + ", ".join(f"{k} {v:.0%}" for k, v in allocation["proposed_weights"].items())
                      + f" — applied: {allocation['applied']} ({allocation['why']})")

        output.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, tiny
        await personalisation(agent, report, output)

        prediction = await agent.call("predict_experiment_outcome", {"experiment_config": {
            "name": "Single-page checkout on mobile", "type": "ui",
            "description": "Merge shipping and payment into one mobile checkout page.",
            "hypothesis": "Fewer checkout steps raise mobile conversion.",
            "primary_metric": {"name": "conversion", "direction": "higher"},
            "baseline": {"mean": 0.2}, "traffic_per_day": 3000}})
        console.print(f"predict_experiment_outcome: {prediction['message']}")

        search = await agent.call("semantic_experiment_search", {"query": "reduce checkout steps on mobile",
                                                                 "limit": 5})
        hits = Table("similarity", "experiment", "lift", "outcome", title="semantic_experiment_search: "
                     "'reduce checkout steps on mobile'")
        for hit in search["hits"]:
            md = hit["metadata"]
            hits.add_row(f"{hit['similarity']:.2f}", md.get("name", hit["id"]), _pct(md.get("lift")),
                         str(md.get("outcome", "")))
        console.print(hits)

        for key in ("checkout-1step", "pricing-premium"):
            result = await agent.call("plot_experiment", {"experiment": key})
            image = next(c for c in result.content if getattr(c, "type", "") == "image")
            path = output / f"{key}.png"
            path.write_bytes(base64.b64decode(image.data))  # noqa: ASYNC240 - a small PNG
            report.plots.append(str(path))
        console.print(f"Plots written: {', '.join(report.plots)}")
    await http.aclose()
    return report


async def personalisation(agent: Agent, report: DemoReport, output: Path) -> None:
    """Serve new users of the personalised experiment through personalize_experiment_experience, show what each
    device got and why, its segment effects, and the offline regret of the policy; write both plots."""
    from mcp_servers.intelligence.personalization_charts import regret_chart, segment_chart
    from mcp_servers.stats.contextual_bandit import replay

    key = "paywall-personalised"
    served: dict[str, dict[str, int]] = {}
    last: dict[str, dict[str, Any]] = {}
    for i in range(PERSONALISED_DECISIONS):
        for device in ("mobile", "desktop"):
            d = await agent.call("personalize_experiment_experience", {
                "experiment": key, "user_id": f"{key}-new-{device}-{i}", "context": {"device": device}})
            counts = served.setdefault(device, {})
            counts[d["variant"]] = counts.get(d["variant"], 0) + 1
            last[device] = d
    table = Table("device", "served (new users)", "posterior mean conversion", "P(best)",
                  title=f"personalize_experiment_experience: {key} ({PERSONALISED_DECISIONS} new users per device)")
    for device, counts in served.items():
        d = last[device]
        table.add_row(device, ", ".join(f"{v} {n}" for v, n in sorted(counts.items(), key=lambda x: -x[1])),
                      ", ".join(f"{v} {m:.1%}" for v, m in d["posterior_means"].items()),
                      ", ".join(f"{v} {p:.0%}" for v, p in d["best_arm_probabilities"].items()))
    console.print(table)
    console.print(f"  why (last mobile decision): {last['mobile']['why']}")
    top = {device: max(counts, key=counts.get) for device, counts in served.items()}
    report.verdicts[key] = f"mobile → {top['mobile']}, desktop → {top['desktop']}"

    effects = await agent.call("analyze_segment_effects", {"experiment": key})
    for sentence in effects["narrative"]:
        console.print(f"  {sentence}")
    replays = {
        "context effect (compact best on mobile, table on desktop)": replay(
            PERSONALISED_RATES, DEVICE_SHARES, users=10_000, replications=10, exploration_rate=0.05, seed=16),
        "no context effect (compact best everywhere)": replay(
            {d: [0.10, 0.13, 0.11] for d in DEVICE_SHARES}, DEVICE_SHARES, users=10_000, replications=10,
            exploration_rate=0.05, seed=16),
    }
    regret = Table("world", *replays[next(iter(replays))].policies, title="Offline replay: cumulative regret "
                   "(conversions lost to the planted optimum over 10,000 users, mean ± SE of 10 replays)")
    for title, r in replays.items():
        regret.add_row(title, *(f"{g:.0f} ± {se:.0f}" for g, se in zip(r.regret, r.regret_se, strict=True)))
    console.print(regret)
    for name, png in (("personalization-regret.png", regret_chart(replays)),
                      (f"{key}-segments.png", segment_chart(effects))):
        path = output / name
        path.write_bytes(png)  # noqa: ASYNC240 - a small PNG
        report.plots.append(str(path))


def run_demo(settings: Settings, scale: float = 1.0, output: Path | None = None) -> DemoReport:
    console.rule("[bold]NeonBlue demo")
    console.print("Starting the embedded stack (PostgreSQL, Kafka broker, router owning chDB + Chroma)…")
    for part in Stack(settings).up():
        console.print(f"  {part.name:<14} {'up' if part.running else 'DOWN'}  {part.address}")
    report = asyncio.run(run(settings, scale, output or Path("demo-output")))
    matched = report.matches
    console.rule("[bold]Result")
    for key, ok in matched.items():
        console.print(f"  {'✓' if ok else '✗'} {key}: verdict {report.verdicts.get(key)} "
                      f"(the planted effect calls for {report.expected[key]})")
    nb, on_path = neonblue_command()
    where = ("" if on_path else
             f"\n  ([bold]neonblue[/bold] is {nb}, not on your PATH: type it so, or run "
             f"[bold]source {Path(nb).parent / 'activate'}[/bold] once per shell to type plain neonblue.)")
    console.print(
        "\nNext:" + where + "\n"
        f"  • Claude Desktop: add the entry printed by [bold]{nb} claude-config[/bold] to "
        "claude_desktop_config.json; it attaches to this running stack.\n"
        f"  • Agent chat: [bold]{nb} chat[/bold] (set ANTHROPIC_API_KEY; without it, offline mode), "
        f"or [bold]{nb} ask \"Show me experiments similar to our checkout optimization\"[/bold].\n"
        f"  • The stack: [bold]{nb} status[/bold]; stop it with [bold]{nb} down[/bold].",
        highlight=False,
    )
    return report


def neonblue_command() -> tuple[str, bool]:
    """How to type the `neonblue` command of this install, and whether plain `neonblue` reaches it: the
    venv's script, relative to the working directory when it lies under it (`.venv/bin/neonblue`)."""
    script = Path(sys.executable).parent / "neonblue"
    if not script.exists():
        return f"{sys.executable} -m mcp_router", False
    found = shutil.which("neonblue")
    if found and Path(found).resolve() == script.resolve():
        return "neonblue", True
    try:
        return str(script.relative_to(Path.cwd())), False
    except ValueError:
        return str(script), False
