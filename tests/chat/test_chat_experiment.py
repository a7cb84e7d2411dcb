"""The chat as an experiment client: a prompt experiment in the registry picks each user's
system prompt and model, and every answered turn comes back as results the analysis reads.

Real registry (PostgreSQL) through the real router; the model is the fake Messages API,
which answers differently per variant so the per-variant results are known exactly.
"""

from __future__ import annotations

import pytest
from fake_anthropic import Reply, text, tool_use
from mcp import Client

from mcp_router.apps.chat.session import ChatOptions, ChatSession
from mcp_router.runtime.serving import open_router
from mcp_servers.registry import SERVERS

THOROUGH = "You are NeonBlue's analyst. Check the data with tools, then explain in detail."
CONCISE = "You are NeonBlue's analyst. Check the data with tools, then answer in one sentence."

PROMPT_EXPERIMENT = {
    "key": "chat-system-prompt",
    "name": "Chat system prompt: thorough vs concise",
    "type": "prompt",
    "hypothesis": "A concise prompt resolves as many questions with fewer output tokens",
    "primary_metric": {"name": "resolved", "direction": "higher"},
    "secondary_metrics": [{"name": "output_tokens", "direction": "lower"},
                          {"name": "input_tokens", "direction": "lower"},
                          {"name": "latency_ms", "direction": "lower"}],
    "variants": [
        {"key": "thorough", "is_control": True, "config": {"system_prompt": THOROUGH, "model": "claude-big"}},
        {"key": "concise", "config": {"system_prompt": CONCISE, "model": "claude-small"}},
    ],
}
# What the "model" spends per variant: the tool round costs 10 output tokens, the answer 200 or 20.
ANSWER_TOKENS = {"claude-big": 200, "claude-small": 20}


def spread(user: str) -> int:
    """A per-user wobble (0..4 tokens) so the token metrics have variance, as real ones do."""
    return int(user.rsplit("-", 1)[-1]) % 5 if user.rsplit("-", 1)[-1].isdigit() else 0


def model_by_variant(body: dict) -> Reply:
    """Every user's first request asks for router_status; the second answers, at the variant's length."""
    if body["messages"][-1]["content"][0].get("type") != "tool_result":
        return tool_use("router_status", {}, input_tokens=1000, output_tokens=10)
    user = body.get("metadata", {}).get("user_id", "")
    return text(f"[{body['model']}] the stack is healthy.", input_tokens=1500,
                output_tokens=ANSWER_TOKENS[body["model"]] + spread(user))


async def start_experiment(client: Client, experiment: dict) -> None:
    for tool, args in (("create_experiment", {"experiment": experiment}),
                       ("start_experiment", {"experiment": experiment["key"]})):
        result = await client.call_tool(tool, args)
        assert not result.is_error, result.content[0].text


async def test_a_prompt_experiment_drives_the_chat_and_records_per_variant_results(
        fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.always(model_by_variant)
    users = [f"analyst-{i:02d}" for i in range(24)]
    served: dict[str, str] = {}
    verdicts: dict[str, float] = {}
    async with open_router(settings) as router, Client(router.server) as client:
        await start_experiment(client, PROMPT_EXPERIMENT)
        for i, user in enumerate(users):
            session = ChatSession(client, settings, ChatOptions(experiment="chat-system-prompt", user_id=user))
            await session.start()
            turn = await session.ask("Is the stack healthy?")
            served[user] = turn.variant
            assert turn.answer.startswith("[claude-big]" if turn.variant == "thorough" else "[claude-small]")
            if i % 3 == 0:  # a third of the users say the answer did not help; the rest leave it to the heuristic
                assert await session.command("/unresolved") == "recorded resolved=0 for the last answer"
                verdicts[user] = 0.0
            else:
                verdicts[user] = 1.0  # answered within every limit → resolved by the stated heuristic
            await session.close()
        analysis = (await client.call_tool("analyze_experiment_data", {"experiment": "chat-system-prompt"}))
        again = await client.call_tool("get_variant", {"experiment": "chat-system-prompt", "user_id": users[0]})
        tools = {t.name for t in (await client.list_tools()).tools}
        judged = None
        if "analyze_experiment_performance" in tools:  # the statistics engine reads the mirrored events
            judged = await client.call_tool("analyze_experiment_performance", {"experiment": "chat-system-prompt"})

    assert set(served.values()) == {"thorough", "concise"}
    # Each user's requests used their variant's model and system prompt (metadata.user_id says whose).
    for request in fake_anthropic.requests:
        variant = served[request.body["metadata"]["user_id"]]
        assert request.body["model"] == ("claude-big" if variant == "thorough" else "claude-small")
        assert request.body["system"] == (THOROUGH if variant == "thorough" else CONCISE)
    # Assignment is sticky: the registry serves the same variant later.
    assert again.structured_content["variant_key"] == served[users[0]]

    # The analysis tool reads what the chat recorded, per variant.
    assert not analysis.is_error, analysis.content[0].text
    by_variant = {v["variant_key"]: v for v in analysis.structured_content["variants"]}
    for variant in ("thorough", "concise"):
        members = [u for u in users if served[u] == variant]
        figures = by_variant[variant]
        assert figures["assigned_users"] == len(members)
        metrics = figures["metrics"]
        assert metrics["output_tokens"]["users"] == len(members)
        tokens = [10 + ANSWER_TOKENS["claude-big" if variant == "thorough" else "claude-small"] + spread(u)
                  for u in members]
        assert metrics["output_tokens"]["mean"] == pytest.approx(sum(tokens) / len(tokens))
        assert metrics["input_tokens"]["mean"] == 2500
        assert metrics["latency_ms"]["users"] == len(members) and metrics["latency_ms"]["mean"] > 0
        assert metrics["resolved"]["users"] == len(members)
        expected = sum(verdicts[u] for u in members) / len(members)
        assert abs(metrics["resolved"]["mean"] - expected) < 1e-9
    token_lift = by_variant["concise"]["metrics"]["output_tokens"]["relative_lift_vs_control"]
    assert -0.87 < token_lift < -0.84  # about (30 - 210) / 210

    # The same results reached the event store, so the statistics engine judges the prompt experiment too.
    assert judged is not None or not SERVERS["intelligence"].available()
    if judged is not None:
        assert not judged.is_error, judged.content[0].text
        result = judged.structured_content
        assert {v["key"]: v["users"] for v in result["variants"]} == {
            v: sum(1 for u in users if served[u] == v) for v in ("thorough", "concise")}
        by_metric = {m["metric"]: m for m in result["metrics"] if m["variant"] == "concise"}
        assert set(by_metric) >= {"resolved", "output_tokens", "input_tokens", "latency_ms"}
        assert by_metric["output_tokens"]["relative_lift"] == pytest.approx(token_lift, rel=1e-6)
        assert by_metric["output_tokens"]["better"] is True  # fewer tokens, significantly: lower is better


async def test_a_user_verdict_replaces_the_heuristic_instead_of_adding_to_it(fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.always(model_by_variant)
    async with open_router(settings) as router, Client(router.server) as client:
        await start_experiment(client, PROMPT_EXPERIMENT)
        session = ChatSession(client, settings, ChatOptions(experiment="chat-system-prompt", user_id="u-1"))
        await session.start()
        await session.ask("first question")   # verdict pending
        await session.ask("second question")  # first turn's heuristic verdict (1) is recorded now
        assert await session.command("/unresolved") == "recorded resolved=0 for the last answer"
        assert await session.command("/resolved") == "there is no answer to judge yet"
        await session.close()                 # nothing pending: nothing more recorded
        recorded = session.experiment.recorded
        rows = await client.call_tool("postgres_query", {"sql": (
            "SELECT metric_value, metadata->>'source' FROM neonblue.results "
            "WHERE metric_name = 'resolved' ORDER BY id")})

    assert [(r["metric"], r["value"], r["turn"]) for r in recorded if r["metric"] == "resolved"] == [
        ("resolved", 1.0, 1), ("resolved", 0.0, 2)]
    assert sum(1 for r in recorded if r["metric"] == "output_tokens") == 2
    assert not rows.is_error, rows.content[0].text  # the registry's own table agrees, with the verdict's source
    assert rows.structured_content["rows"] == [[1.0, "heuristic"], [0.0, "user"]]


async def test_metrics_the_experiment_does_not_declare_are_skipped_with_a_notice(
        fake_anthropic, chat_settings, recorder) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.always(model_by_variant)
    only_resolution = {**PROMPT_EXPERIMENT, "key": "chat-resolution-only", "secondary_metrics": []}
    async with open_router(settings) as router, Client(router.server) as client:
        await start_experiment(client, only_resolution)
        session = ChatSession(client, settings, ChatOptions(experiment="chat-resolution-only", user_id="u-9"),
                              recorder)
        await session.start()
        await session.ask("hello")
        await session.close()

    assert any("does not declare latency_ms, input_tokens, output_tokens" in n for n in recorder.notices)
    assert [r["metric"] for r in session.experiment.recorded] == ["resolved"]
    assert not any("could not record" in n for n in recorder.notices)
