"""The seeds' example questions, the README's and the issue's, asked offline on the demo's data.

The demo's experiments (their definitions, traffic with the planted effects, at a small scale) go
in through the real tools: registry, ClickHouse ingest, the semantic memory's history. Each
question is asked as `neonblue ask` asks it (ChatSession offline, no API key), and the answer is
checked for the right tool, the right arguments, and key data that names what it found.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from mcp_calls import call  # type: ignore[import-not-found]
from nl_env import demo_router  # type: ignore[import-not-found]

from mcp_router.apps.chat.session import ChatOptions, ChatSession
from mcp_router.apps.demo import history, portfolio
from mcp_servers.postgres.models import Experiment
from mcp_servers.postgres.service import assignment_spec
from stream_processor.generator import TrafficPlan, generate_events

WITH_TRAFFIC = ("checkout-1step", "pricing-premium", "onboarding-bandit")


async def load_demo_data(client) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14)
    for exp in portfolio(scale=0.05):
        if exp.key not in WITH_TRAFFIC:
            continue
        record = Experiment.model_validate(await call(client, "get_experiment", {"experiment": exp.key}))
        spec = replace(assignment_spec(record), weights=tuple(v["weight"] for v in exp.definition["variants"]))
        plan = TrafficPlan(exp.key, [v.key for v in record.variants], spec, exp.truths, exp.users, start,
                           days=14, seed=exp.seed)
        events = [json.loads(value) for _, _, value in generate_events(plan)]
        for n in range(0, len(events), 5000):
            await call(client, "ingest_events", {"events": events[n:n + 5000], "idempotency_token": f"{exp.key}-{n}"})
    for item in history():
        await call(client, "store_experiment_context", item)


async def ask(client, settings, question: str):
    session = ChatSession(client, settings, ChatOptions())
    await session.start()
    assert session.mode == "offline"
    return await session.ask(question)


def tools_of(turn) -> list[str]:
    return [c.tool for c in turn.tool_calls]


async def test_the_seed_readme_and_issue_questions_are_answered_on_the_demo_data(nl_settings, chroma_path) -> None:
    settings = nl_settings()
    async with demo_router(settings, chroma_path) as client:
        await load_demo_data(client)
        turns = {q: await ask(client, settings, q) for q in (
            # The seeds' three examples (the second is also the README's `neonblue ask` example).
            "Show me experiments similar to our checkout optimization that increased conversion by more than 20%",
            "What user segments responded best to pricing experiments in the last quarter?",
            "Recommend optimization strategies for our mobile onboarding experiment",
            # What the issue tried as a new user.
            "is the checkout experiment significant?",
            "how many users saw the premium price?",
            "plan a test to detect a 2% lift on a 10% conversion rate",
            "find past experiments about onboarding emails",
            "what's the capital of france?",
        )}

    similar = turns["Show me experiments similar to our checkout optimization that increased conversion by more "
                    "than 20%"]
    assert similar.error is None, similar.answer
    assert tools_of(similar) == ["route_query", "semantic_experiment_search"]
    search = similar.tool_calls[1]
    assert search.arguments["query"] == "checkout optimization" and search.arguments["where"] == {"lift": {"$gte": 0.2}}
    assert all(hit["lift"] >= 0.2 for hit in similar.data[0]["hits"])  # the demo history has a few

    segments = turns["What user segments responded best to pricing experiments in the last quarter?"]
    assert segments.error is None, segments.answer
    insights = [c for c in segments.tool_calls if c.tool == "generate_analytics_insights"]
    assert [c.arguments["experiment"] for c in insights] == ["pricing-premium"]  # the demo's pricing experiment
    assert insights[0].arguments["metrics"] == ["conversion"] and not insights[0].is_error, insights[0].text
    # "the last quarter" holds the demo's 14 days of events: a window that has data, said so.
    today = datetime.now(UTC).date()
    assert insights[0].arguments["end_date"] == today.isoformat()
    assert "Assumed: 'last quarter' read as the last quarter (92 days)" in segments.answer
    assert segments.data[0]["segments"], segments.answer

    recommend = turns["Recommend optimization strategies for our mobile onboarding experiment"]
    assert recommend.error is None, recommend.answer
    assert tools_of(recommend) == ["route_query", "recommend_experiment_optimization"]
    assert recommend.tool_calls[1].arguments == {"experiment": "onboarding-bandit"}
    assert recommend.data[0]["actions"], recommend.answer

    significant = turns["is the checkout experiment significant?"]
    assert significant.error is None, significant.answer
    assert significant.tool_calls[1].arguments == {"experiment": "checkout-1step"}
    verdict = significant.data[0]
    assert verdict["experiment"] == "checkout-1step" and verdict["verdict"]
    assert f"verdict {verdict['verdict']}" in significant.answer and "One-step checkout" in significant.answer

    saw = turns["how many users saw the premium price?"]
    assert saw.error is None, saw.answer
    assert saw.tool_calls[1].tool == "get_variant_statistics"
    assert saw.tool_calls[1].arguments["experiment"] == "pricing-premium"
    counts = {row["variant"]: row["users"] for row in saw.data[0]["variants"]}
    assert set(counts) == {"standard", "premium"} and counts["premium"] > 0
    assert f"premium {counts['premium']:,} users" in saw.answer

    plan = turns["plan a test to detect a 2% lift on a 10% conversion rate"]
    assert plan.error is None, plan.answer
    arguments = plan.tool_calls[1].arguments
    assert (arguments["baseline"], arguments["mde"]) == ({"mean": 0.1}, 0.02)
    # No traffic in the question: the exposures per day the store saw, stated as an assumption.
    assert "Assumed: no traffic given:" in plan.answer
    assert plan.data[0]["sample_size_per_variant"] > 0 and plan.data[0]["duration_days"] > 0

    past = turns["find past experiments about onboarding emails"]
    assert past.error is None and past.tool_calls[1].arguments["query"] == "onboarding emails"
    first = past.data[0]["hits"][0]
    assert first["name"] and first["name"] in past.answer  # named, not a bare id

    declined = turns["what's the capital of france?"]
    assert declined.error and tools_of(declined) == ["route_query"]
    assert "I can't answer that offline" in declined.answer
