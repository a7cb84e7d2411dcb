"""Offline mode (no ANTHROPIC_API_KEY): the seed questions of the AI Analytics Engine answered
by the router's route_query plans, with the real servers and generated data.

- "Show me experiments similar to our checkout optimization that increased conversion by
  more than 20%" → semantic_experiment_search, filtered on lift ≥ 0.20 (Chroma);
- "What user segments responded best to pricing experiments in the last quarter?" →
  generate_analytics_insights per pricing experiment, last quarter's dates (ClickHouse);
- "Recommend optimization strategies for our mobile onboarding experiment" →
  recommend_experiment_optimization (Experiment Intelligence), or search_optimization_patterns
  when the intelligence server is not there.

Each test skips, with the reason, while a server it needs has not landed in the router.
The Chroma backend is the real server on this test's own directory (`chroma_path`), passed
to the router as its chromadb backend, so documents of other tests do not leak in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from mcp import Client
from mcp_calls import call  # type: ignore[import-not-found]

from mcp_router.apps.chat.session import ChatOptions, ChatSession
from mcp_router.runtime.serving import open_router
from mcp_servers.registry import SERVERS

CHECKOUT_QUESTION = ("Show me experiments similar to our checkout optimization that increased conversion "
                     "by more than 20%")
SEGMENTS_QUESTION = "What user segments responded best to pricing experiments in the last quarter?"
RECOMMEND_QUESTION = "Recommend optimization strategies for our mobile onboarding experiment"

# Past experiments in the semantic memory: (key, name, description, primary metric, lift, p-value).
PAST_EXPERIMENTS = [
    ("checkout-1step", "One-step checkout", "Collapse shipping, billing and payment into a single checkout page",
     "checkout_conversion", 0.24, 0.001),
    ("checkout-guest", "Guest checkout", "Let shoppers complete checkout without creating an account",
     "checkout_conversion", 0.31, 0.0004),
    ("checkout-trust-badges", "Checkout trust badges", "Show security badges on the checkout payment step",
     "checkout_conversion", 0.06, 0.03),
    ("checkout-express-pay", "Express pay at checkout", "Wallet buttons (Apple Pay, Google Pay) at checkout",
     "checkout_conversion", 0.12, 0.01),
    ("pricing-annual-discount", "Annual plan discount", "Highlight a 20% discount for annual billing on the "
     "pricing page", "plan_upgrade", 0.22, 0.002),
    ("search-autocomplete", "Search autocomplete", "Suggest queries while typing in the product search box",
     "search_click_through", 0.27, 0.0001),
    ("onboarding-mobile-checklist", "Mobile onboarding checklist", "A three-step checklist guiding new mobile "
     "app users through setup", "activation", 0.18, 0.004),
    ("newsletter-subject-lines", "Newsletter subject lines", "Personalised subject lines in the weekly "
     "newsletter", "email_open_rate", 0.21, 0.02),
]

PATTERNS = [
    {"pattern_id": "onboarding-short-mobile", "optimization_type": "onboarding", "outcome": "success",
     "description": "Shortened mobile onboarding from six screens to three with a skip option",
     "improvement": 0.18, "metric": "activation", "applied_to_segments": ["mobile"],
     "implementation_effort": "low"},
    {"pattern_id": "onboarding-progress", "optimization_type": "onboarding", "outcome": "success",
     "description": "Progress checklist during onboarding so new users see what is left",
     "improvement": 0.12, "metric": "activation", "applied_to_segments": ["mobile", "desktop"]},
    {"pattern_id": "checkout-fewer-steps", "optimization_type": "checkout_flow", "outcome": "success",
     "description": "Reduced checkout steps from four to two with autofill", "improvement": 0.35,
     "metric": "conversion"},
    {"pattern_id": "pricing-anchor", "optimization_type": "pricing", "outcome": "neutral",
     "description": "Anchor pricing with an expensive premium tier", "improvement": 0.02, "metric": "revenue"},
]


def require(*servers: str) -> None:
    """Skip while a server the question needs has not landed in mcp_servers/ (checked before any
    router opens: a skip raised inside its task groups would lose its reason)."""
    missing = [name for name in servers if not SERVERS[name].available()]
    if missing:
        pytest.skip(f"server(s) {', '.join(missing)} not in mcp_servers/ yet: the router has no "
                    f"{'/'.join(missing)} tools to answer with")


@asynccontextmanager
async def offline_router(settings, chroma_path, **targets: Any) -> AsyncIterator[Client]:
    """The real router; chromadb is the real server on this test's own directory."""
    async with AsyncExitStack() as stack:
        if SERVERS["chromadb"].available():
            memory = await stack.enter_async_context(SERVERS["chromadb"].open_service(settings, path=chroma_path))
            targets.setdefault("chromadb", SERVERS["chromadb"].build_server(memory))
        router = await stack.enter_async_context(open_router(settings, targets=targets))
        client = await stack.enter_async_context(Client(router.server))
        yield client



async def remember_past_experiments(client: Client) -> None:
    for key, name, description, metric, lift, p in PAST_EXPERIMENTS:
        await call(client, "store_experiment_context", {
            "experiment": {"key": key, "name": name, "description": description, "type": "ui",
                           "primary_metric": metric, "status": "concluded",
                           "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]},
            "analysis": {"winner": "treatment", "lift": lift, "p_value": p, "sample_size": 20_000}})


async def ask_offline(client: Client, settings, question: str):
    session = ChatSession(client, settings, ChatOptions())
    await session.start()
    assert session.mode == "offline"
    return await session.ask(question)


async def test_similar_checkout_experiments_with_more_than_20_percent_lift(chat_settings, chroma_path) -> None:
    settings = chat_settings()  # no API key: offline
    require("chromadb")
    async with offline_router(settings, chroma_path) as client:
        await remember_past_experiments(client)
        turn = await ask_offline(client, settings, CHECKOUT_QUESTION)
        unplanned = await ask_offline(client, settings, "good morning, nice weather today")

    # A question it cannot place is declined, not guessed at, and counts as not answered.
    assert unplanned.stop == "no_plan" and [c.tool for c in unplanned.tool_calls] == ["route_query"]
    assert "I can't answer that offline" in unplanned.answer and unplanned.error
    assert "What I can answer offline, closest first:" in unplanned.answer
    assert turn.mode == "offline" and turn.error is None
    assert turn.answer.startswith("offline mode (no ANTHROPIC_API_KEY): answered by route_query")
    assert [c.tool for c in turn.tool_calls] == ["route_query", "semantic_experiment_search"]
    search = turn.tool_calls[1]
    assert search.arguments["where"] == {"lift": {"$gte": 0.2}}
    assert "checkout" in search.arguments["query"]
    hits = search.structured["hits"]
    keys = [h["metadata"]["experiment_key"] for h in hits]
    # Only experiments above +20% come back; the similar but weaker checkout tests are filtered out.
    assert set(keys) == {"checkout-1step", "checkout-guest", "pricing-annual-discount", "search-autocomplete",
                         "newsletter-subject-lines"}
    assert all(h["metadata"]["lift"] >= 0.2 for h in hits)
    assert set(keys[:2]) == {"checkout-1step", "checkout-guest"}  # the checkout ones are the most similar
    # Results are named, with the numbers behind them.
    assert "checkout-guest: Guest checkout (lift +31.0%" in turn.answer
    assert "checkout-1step: One-step checkout (lift +24.0%" in turn.answer
    assert "checkout-trust-badges" not in turn.answer


async def test_recommendations_fall_back_to_optimization_patterns_without_the_intelligence_server(
        chat_settings, chroma_path) -> None:
    require("chromadb")
    settings = chat_settings()
    # The intelligence backend is unreachable here, so its tools are not in the catalogue.
    async with offline_router(settings, chroma_path, intelligence="http://127.0.0.1:9/mcp") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert "recommend_experiment_optimization" not in tools
        for pattern in PATTERNS:
            await call(client, "store_optimization_pattern", {"pattern": pattern})
        turn = await ask_offline(client, settings, RECOMMEND_QUESTION)

    assert [c.tool for c in turn.tool_calls] == ["route_query", "search_optimization_patterns"]
    search = turn.tool_calls[1]
    assert search.arguments["query"] == "mobile onboarding experiment" or "onboarding" in search.arguments["query"]
    hits = search.structured["hits"]
    assert [h["id"] for h in hits[:2]] == ["onboarding-short-mobile", "onboarding-progress"]
    assert "improvement +18%" in turn.answer
    assert "Understood: recommend (confidence" in turn.answer


async def test_recommendations_come_from_the_intelligence_server_when_it_is_there(
        chat_settings, chroma_path) -> None:
    import random
    from datetime import UTC, datetime, timedelta

    require("chromadb", "intelligence", "clickhouse", "postgres")
    settings = chat_settings()
    key = "onboarding-mobile-checklist"
    rng = random.Random(7)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14)
    events = []
    for i in range(6000):  # activation 20% → 26% with the checklist: a clear, significant win
        variant = ("control", "checklist")[i % 2]
        at = start + timedelta(minutes=3 * i)
        events.append({"event_id": f"x{i}", "event_type": "exposure", "user_id": f"m{i}", "experiment_id": key,
                       "variant": variant, "timestamp": at.isoformat(), "segment": {"device": "mobile"}})
        if rng.random() < (0.20 if variant == "control" else 0.26):
            events.append({"event_id": f"a{i}", "event_type": "conversion", "metric": "activation", "value": 1,
                           "user_id": f"m{i}", "experiment_id": key, "variant": variant,
                           "timestamp": (at + timedelta(minutes=30)).isoformat()})
    async with offline_router(settings, chroma_path) as client:
        await remember_past_experiments(client)
        for pattern in PATTERNS:
            await call(client, "store_optimization_pattern", {"pattern": pattern})
        await call(client, "create_experiment", {"experiment": {
            "key": key, "name": "Mobile onboarding checklist", "type": "ui", "primary_metric": "activation",
            "hypothesis": "A setup checklist raises activation of new mobile users",
            "variants": [{"key": "control", "is_control": True}, {"key": "checklist"}]}})
        await call(client, "start_experiment", {"experiment": key})
        for n in range(0, len(events), 5000):
            await call(client, "ingest_events", {"events": events[n:n + 5000], "idempotency_token": f"onb-{n}"})
        turn = await ask_offline(client, settings, RECOMMEND_QUESTION)

    assert turn.error is None, turn.answer
    # "our mobile onboarding experiment" is found in the registry by its name, then recommended on.
    assert [c.tool for c in turn.tool_calls] == ["route_query", "recommend_experiment_optimization"]
    recommend = turn.tool_calls[1]
    assert recommend.arguments == {"experiment": key}
    assert not recommend.is_error, recommend.text
    first = recommend.structured["actions"][0]
    assert (first["action"], first["variant"]) == ("ship", "checklist")
    assert "onboarding-short-mobile" in [p["id"] for p in first["supporting_patterns"]]
    assert f"Experiments: {key} (Mobile onboarding checklist: matched" in turn.answer
    assert "1. ship checklist" in turn.answer


# Generated traffic for the segments question: (experiment, metric, variants, true rates by device, by email
# source), with the effect planted in ONE segment per pricing experiment, and a non-pricing experiment with a
# bigger effect that must not be reported.
TRAFFIC = {
    "pricing-annual-discount": ("plan_upgrade", ("control", "annual-discount"),
                                {"mobile": (0.10, 0.22), "desktop": (0.10, 0.105), "tablet": (0.10, 0.10)}),
    "pricing-tier-layout": ("plan_upgrade", ("control", "three-tiers"),
                            {"mobile": (0.08, 0.08), "desktop": (0.08, 0.16), "tablet": (0.08, 0.08)}),
    "checkout-guest": ("checkout_conversion", ("control", "guest"),
                       {"mobile": (0.20, 0.45), "desktop": (0.20, 0.45), "tablet": (0.20, 0.45)}),
}


def generated_events(key: str, day_from, days: int, users: int, seed: int, *, invert: bool = False) -> list[dict]:
    """Exposures with a device, conversions at the arm's true rate for that device (deterministic)."""
    import random
    from datetime import UTC, datetime, time, timedelta

    metric, variants, rates = TRAFFIC[key]
    rng = random.Random(seed)
    events = []
    for i in range(users):
        user = f"{key}-{seed}-{i}"
        variant = variants[i % 2]
        device = ("mobile", "desktop", "tablet")[i // 2 % 3]
        at = datetime.combine(day_from + timedelta(days=rng.randrange(days)), time(12), UTC)
        events.append({"event_id": f"x-{user}", "event_type": "exposure", "timestamp": at.isoformat(),
                       "user_id": user, "experiment_id": key, "variant": variant,
                       "segment": {"device": device, "country": rng.choice(["US", "DE"])}})
        control_rate, treatment_rate = rates[device]
        rate = treatment_rate if variant != "control" else control_rate
        if invert:  # outside the window the story is reversed: mobile gets worse
            rate = control_rate - (rate - control_rate) if device == "mobile" else rate
        if rng.random() < rate:
            events.append({"event_id": f"c-{user}", "event_type": "conversion", "metric": metric, "value": 1,
                           "timestamp": (at + timedelta(hours=1)).isoformat(), "user_id": user,
                           "experiment_id": key, "variant": variant})
    return events


async def test_segments_that_responded_best_to_pricing_experiments_last_quarter(chat_settings, chroma_path) -> None:
    from datetime import UTC, datetime, timedelta

    from mcp_router.gateway.nl.entities import resolve_period

    require("clickhouse", "postgres")
    settings = chat_settings()
    # "the last quarter": the 92 days up to today (the data reaches today, so no re-anchoring).
    window = resolve_period("last quarter", datetime.now(UTC).date())
    q_start = window.start
    quarter = {"date_from": window.start.isoformat(), "date_to": window.end.isoformat()}
    async with offline_router(settings, chroma_path) as client:
        for key, (metric, variants, _) in TRAFFIC.items():
            await call(client, "create_experiment", {"experiment": {
                "key": key, "name": key.replace("-", " ").title(), "type": "ui", "primary_metric": metric,
                "variants": [{"key": v, "is_control": v == "control"} for v in variants]}})
            inside = generated_events(key, q_start + timedelta(days=5), 60, 3600, seed=1)
            before = generated_events(key, q_start - timedelta(days=40), 20, 1800, seed=2, invert=True)
            for n, chunk in enumerate((inside, before)):
                await call(client, "ingest_events", {"events": chunk, "idempotency_token": f"{key}-{n}"})
        turn = await ask_offline(client, settings, SEGMENTS_QUESTION)

    assert turn.error is None, turn.answer
    tools = [c.tool for c in turn.tool_calls]
    assert tools[0] == "route_query"
    insights = [c for c in turn.tool_calls if c.tool == "generate_analytics_insights"]
    # Both pricing experiments, and only those, were analysed over last quarter's dates.
    assert sorted(c.arguments["experiment"] for c in insights) == ["pricing-annual-discount", "pricing-tier-layout"]
    for c in insights:
        assert not c.is_error, c.text
        assert (c.arguments["start_date"], c.arguments["end_date"]) == (quarter["date_from"], quarter["date_to"])
        assert c.arguments["metrics"] == ["plan_upgrade"]  # the registry's primary metric
    assert set(tools) <= {"route_query", "list_experiments", "get_experiment", "generate_analytics_insights"}
    # The planted effects come out on top: mobile on the annual discount, desktop on the tier layout.
    best = turn.answer.split("Segments that responded best")[1].splitlines()[1:3]
    assert {line.split(": ")[0] for line in best} == {"  - device=mobile in pricing-annual-discount",
                                                      "  - device=desktop in pricing-tier-layout"}
    cells = {(c.arguments["experiment"], d["dimension"], d["segment"]): d
             for c in insights for d in c.structured["segment_differences"]}
    mobile = cells[("pricing-annual-discount", "device", "mobile")]
    assert mobile["control_users"] == mobile["variant_users"] == 600  # only last quarter's users
    assert 0.07 < mobile["control_mean"] < 0.13 and 0.18 < mobile["variant_mean"] < 0.27
    assert "checkout-guest" not in turn.answer
