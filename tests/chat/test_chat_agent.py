"""The agent chat's tool-use loop, driven end to end.

The real `anthropic` client streams from a local fake of the Messages API that
speaks its wire format; the tools are the real router's (real PostgreSQL
registry), reached through a real MCP client. The fake plays the model: the
test scripts which tools it asks for, and the assertions check that the router
ran them, that their results went back as tool_result blocks, and that the
final answer was built from them.
"""

from __future__ import annotations

import json
import re

import pytest
from fake_anthropic import Failure, Reply, StreamFailure, result_text, text, tool_use, tool_uses
from mcp import Client

from mcp_router.apps.chat.agent import ChatLimits
from mcp_router.apps.chat.session import ChatOptions, ChatSession
from mcp_router.runtime.serving import open_router

CHECKOUT = {
    "key": "checkout-1step", "name": "One-step checkout", "type": "ui", "primary_metric": "conversion",
    "hypothesis": "Fewer steps convert better", "variants": [
        {"key": "control", "is_control": True}, {"key": "one-step"}],
}


async def seed_registry(client: Client, *experiments: dict, start: bool = True) -> None:
    for experiment in experiments:
        created = await client.call_tool("create_experiment", {"experiment": experiment})
        assert not created.is_error, created.content[0].text
        if start:
            started = await client.call_tool("start_experiment", {"experiment": experiment["key"]})
            assert not started.is_error, started.content[0].text


def quote_last_tool_result(template: str):
    """A scripted model turn that answers from the tool_result it was just sent."""

    def reply(body: dict) -> Reply:
        blocks = [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]
        return text(template.format(result=json.loads(result_text(blocks[-1]))))

    return reply


async def test_claude_calls_the_router_tools_and_answers_from_their_results(
        fake_anthropic, chat_settings, recorder) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_use("list_experiments", {"status": ["running"]}, say="Let me look at the registry."),
        quote_last_tool_result("{result[total]} experiment is running: {result[items][0][key]} "
                               "with variants {result[items][0][variant_keys]}."),
    )
    async with open_router(settings) as router, Client(router.server) as client:
        await seed_registry(client, CHECKOUT)
        session = ChatSession(client, settings, ChatOptions(), recorder)
        await session.start()
        turn = await session.ask("Which experiments are running?")

    # The router executed what the model asked for, and the answer quotes its result.
    assert [c.tool for c in turn.tool_calls] == ["list_experiments"]
    assert not turn.tool_calls[0].is_error
    assert turn.tool_calls[0].structured["items"][0]["key"] == "checkout-1step"
    assert turn.answer.endswith("1 experiment is running: checkout-1step with variants ['control', 'one-step'].")
    assert turn.stop == "answered" and turn.error is None
    # Wire level: both requests streamed; the tools went out as Anthropic definitions;
    # the second request carried the tool_use back with its tool_result.
    first, second = fake_anthropic.requests
    assert first.stream and second.stream
    tools = {t["name"]: t for t in first.body["tools"]}
    assert {"list_experiments", "create_experiment", "route_query", "router_status"} <= set(tools)
    assert tools["list_experiments"]["input_schema"]["type"] == "object"
    assert "status" in tools["list_experiments"]["input_schema"]["properties"]
    assert first.body["model"] == "claude-test-default"
    assert "NeonBlue" in first.body["system"]
    assistant = second.messages[1]
    assert assistant["role"] == "assistant"
    assert [b["type"] for b in assistant["content"]] == ["text", "tool_use"]
    (result,) = second.tool_results()
    assert result["tool_use_id"] == assistant["content"][1]["id"]
    assert "is_error" not in result
    assert json.loads(result["content"])["items"][0]["key"] == "checkout-1step"
    # The text was streamed to the listener in pieces, and the tool call was shown.
    assert len(recorder.text_chunks) > 3
    assert "".join(recorder.text_chunks).startswith("Let me look at the registry.")
    assert recorder.calls == [("list_experiments", {"status": ["running"]})]
    assert turn.usage.requests == 2 and turn.usage.input_tokens > 0 and turn.usage.output_tokens > 0


async def test_several_tools_in_one_round_all_run_and_all_results_go_back(
        fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_uses([("get_experiment_summary", {"experiment": "checkout-1step"}),
                   ("route_query", {"query": "recommend optimization strategies for checkout"})]),
        text("done"),
    )
    async with open_router(settings) as router, Client(router.server) as client:
        await seed_registry(client, CHECKOUT)
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        turn = await session.ask("Summarise checkout and tell me which tool recommends strategies")

    assert [c.tool for c in turn.tool_calls] == ["get_experiment_summary", "route_query"]
    results = fake_anthropic.requests[1].tool_results()
    assert len(results) == 2
    assert "One-step checkout" in json.loads(results[0]["content"])["summary"]
    assert json.loads(results[1]["content"])["intent"] == "recommend"


async def test_tool_errors_go_back_as_is_error_so_claude_can_correct_itself(
        fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_use("get_experiment", {"experiment": "checkout-2step"}),
        tool_use("no_such_tool", {}),
        tool_use("get_experiment", {"experiment": "checkout-1step"}),
        quote_last_tool_result("Found {result[name]} after correcting the key."),
    )
    async with open_router(settings) as router, Client(router.server) as client:
        await seed_registry(client, CHECKOUT)
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        turn = await session.ask("Tell me about the checkout experiment")

    assert [(c.tool, c.is_error) for c in turn.tool_calls] == [
        ("get_experiment", True), ("no_such_tool", True), ("get_experiment", False)]
    (not_found,) = fake_anthropic.requests[1].tool_results()
    assert not_found["is_error"] is True
    assert "checkout-2step" in not_found["content"]
    (unknown,) = fake_anthropic.requests[2].tool_results()
    assert unknown["is_error"] is True and "Unknown tool: no_such_tool" in unknown["content"]
    assert turn.answer == "Found One-step checkout after correcting the key."


async def test_the_conversation_is_kept_between_questions(fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_use("router_status", {}),
        text("Every backend is healthy."),
        text("You asked about backend health."),
    )
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        await session.ask("Is the stack healthy?")
        second = await session.ask("What did I just ask?")
        await session.command("/reset")
        fake_anthropic.then(text("fresh"))
        await session.ask("hello again")

    assert second.answer == "You asked about backend health."
    history = fake_anthropic.requests[2].messages
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant", "user"]
    assert history[0]["content"][0]["text"] == "Is the stack healthy?"
    assert history[3]["content"] == [{"type": "text", "text": "Every backend is healthy."}]
    assert history[4]["content"][0]["text"] == "What did I just ask?"
    assert len(fake_anthropic.requests[3].messages) == 1  # /reset forgot it


async def test_tool_rounds_are_limited_then_claude_must_answer(fake_anthropic, chat_settings, recorder) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_use("router_status", {}), tool_use("router_status", {}),
        text("Answering with what I have: all backends healthy."),
        text("next question answered"),
    )
    options = ChatOptions(limits=ChatLimits(max_tool_rounds=2))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, options, recorder)
        await session.start()
        turn = await session.ask("Check health repeatedly")
        after = await session.ask("And now?")

    assert len(turn.tool_calls) == 2
    assert turn.stop == "tool_rounds_exhausted"
    assert turn.answer == "Answering with what I have: all backends healthy."
    final = fake_anthropic.requests[2].body
    assert final["tool_choice"] == {"type": "none"}
    assert "budget of 2 tool rounds is used up" in final["messages"][-1]["content"][-1]["text"]
    assert after.answer == "next question answered" and after.error is None  # the history stayed valid


async def test_a_model_that_ignores_the_tool_limit_gets_refusals_not_executions(
        fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(tool_use("router_status", {}), text("ok"))
    options = ChatOptions(limits=ChatLimits(max_tool_rounds=0))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, options)
        await session.start()
        turn = await session.ask("Check health")
        after = await session.ask("thanks")

    assert turn.tool_calls == [] and turn.stop == "tool_rounds_exhausted"
    (refusal,) = fake_anthropic.requests[1].tool_results()
    assert refusal["is_error"] and "not executed" in refusal["content"]
    assert after.answer == "ok"


async def test_the_token_budget_ends_a_turn_and_the_next_question_still_works(
        fake_anthropic, chat_settings, recorder) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        tool_use("router_status", {}, input_tokens=4000, output_tokens=100),
        text("second question answered"),
    )
    options = ChatOptions(limits=ChatLimits(max_total_tokens=3000))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, options, recorder)
        await session.start()
        turn = await session.ask("Expensive question")
        after = await session.ask("Cheap question")

    assert turn.stop == "token_budget_exhausted"
    assert turn.usage.input_tokens == 4000 and turn.usage.output_tokens == 100
    assert any("over the budget of 3000" in n for n in recorder.notices)
    assert after.answer == "second question answered"
    # The pending tool_result and the next question share one user message (roles must alternate).
    last = fake_anthropic.requests[1].messages[-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "text"]


async def test_large_tool_results_are_truncated_with_a_note(fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(tool_use("describe_schema", {}), text("ok"))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        session.tools.max_result_chars = 500
        turn = await session.ask("What tables are there?")

    (result,) = fake_anthropic.requests[1].tool_results()
    assert turn.tool_calls[0].truncated
    assert len(result["content"]) < 700
    assert "[truncated by neonblue chat: showing 500 of" in result["content"]


async def test_read_only_mode_offers_only_read_only_tools(fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(text("ok"))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions(read_only=True))
        await session.start()
        await session.ask("anything")

    offered = {t["name"] for t in fake_anthropic.requests[0].body["tools"]}
    assert {"list_experiments", "get_experiment", "router_status"} <= offered
    assert not offered & {"create_experiment", "start_experiment", "record_result", "stop_experiment"}


async def test_rate_limits_are_retried_then_answered(fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(
        Failure(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit",
                {"retry-after-ms": "20"}),
        Failure(529, "overloaded_error", "Overloaded", {"retry-after-ms": "20"}),
        text("answered after two retries"),
    )
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions(max_retries=2))
        await session.start()
        turn = await session.ask("hello")

    assert turn.answer == "answered after two retries" and turn.error is None
    assert [r.headers.get("x-stainless-retry-count") for r in fake_anthropic.requests] == ["0", "1", "2"]


@pytest.mark.parametrize(("failure", "expected"), [
    (Failure(529, "overloaded_error", "Overloaded", {"retry-after-ms": "10"}), "overloaded (529"),
    (Failure(429, "rate_limit_error", "per-minute rate limit", {"retry-after-ms": "10"}), "rate limit (429"),
])
async def test_persistent_overload_or_rate_limit_ends_the_turn_with_one_clear_sentence(
        fake_anthropic, chat_settings, failure, expected) -> None:
    settings = chat_settings(fake_anthropic)
    fake_anthropic.then(failure, failure, failure, text("later"))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions(max_retries=2))
        await session.start()
        turn = await session.ask("hello")
        assert session.agent.messages == []  # rolled back: the failed question is not half in the history
        retry = await session.ask("hello again")

    assert turn.stop == "error" and expected in turn.error and "\n" not in turn.error
    assert len(fake_anthropic.requests) == 4
    assert retry.answer == "later"


async def test_a_bad_key_is_one_clear_line_and_no_retry(fake_anthropic, chat_settings) -> None:
    fake_anthropic.api_key = "the-right-key"
    settings = chat_settings(fake_anthropic, anthropic_api_key="sk-ant-wrong")
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        turn = await session.ask("hello")

    assert turn.stop == "error"
    assert turn.error.startswith("Anthropic rejected the API key (401 authentication_error)")
    assert "ANTHROPIC_API_KEY" in turn.error
    assert len(fake_anthropic.requests) == 1


async def test_the_model_is_configurable(fake_anthropic, chat_settings) -> None:
    settings = chat_settings(fake_anthropic, anthropic_model="claude-from-settings")
    fake_anthropic.then(text("a"), text("b"))
    async with open_router(settings) as router, Client(router.server) as client:
        for options in (ChatOptions(), ChatOptions(model="claude-from-flag")):
            session = ChatSession(client, settings, options)
            await session.start()
            await session.ask("hi")

    assert [r.body["model"] for r in fake_anthropic.requests] == ["claude-from-settings", "claude-from-flag"]


def test_the_fake_refuses_what_the_real_api_refuses() -> None:
    """The fake is only useful if it is as strict as the API about tool_use/tool_result pairing."""
    from fake_anthropic import check_request

    dangling = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "and?"}]},
    ]}
    assert re.search(r"tool_use` ids were found without `tool_result`.*toolu_1", check_request(dangling))
    extra = {"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "x", "parsed_output": None}]},
        {"role": "user", "content": "again"},
    ]}
    assert "Extra inputs are not permitted" in check_request(extra)
    dotted = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
              "tools": [{"name": "a.b", "input_schema": {"type": "object"}}]}
    assert "does not match pattern" in check_request(dotted)


async def test_a_stream_that_breaks_off_with_an_error_event_is_retried(
        fake_anthropic, chat_settings, recorder) -> None:
    settings = chat_settings(fake_anthropic)
    broken = StreamFailure("overloaded_error", "Overloaded", partial_text="The stack is")
    fake_anthropic.then(broken, text("The stack is healthy."), broken, broken, broken, text("unused"))
    async with open_router(settings) as router, Client(router.server) as client:
        session = ChatSession(client, settings, ChatOptions(), recorder)
        await session.start()
        recovered = await session.ask("Is the stack healthy?")
        failed = await session.ask("And now?")

    assert recovered.answer == "The stack is healthy." and recovered.error is None
    assert any("stream broke off (overloaded_error); retrying (1/2)" in n for n in recorder.notices)
    assert failed.stop == "error" and "overloaded (529 overloaded_error)" in failed.error
    assert fake_anthropic.unused == 1  # one try + two retries, then the clear message


def test_mcp_tool_names_become_names_the_messages_api_accepts() -> None:
    from mcp_router.apps.chat.tools import api_tool_name

    assert api_tool_name("list_experiments", {}) == "list_experiments"
    assert api_tool_name("stack.list_experiments", {}) == "stack_list_experiments"
    taken = {"stack_list_experiments": "stack.list_experiments"}
    clash = api_tool_name("stack_list.experiments", taken)
    assert clash != "stack_list_experiments" and clash.startswith("stack_list_experiments_")
    long = api_tool_name("x" * 80, {})
    assert len(long) <= 64 and re.fullmatch(r"[a-zA-Z0-9_-]+", long)


async def test_the_offline_router_preselects_tools_the_listed_profile_leaves_out(
        fake_anthropic, chat_settings, recorder) -> None:
    settings = chat_settings(fake_anthropic, tool_profile="core")
    fake_anthropic.then(text("Checked."))
    async with open_router(settings) as router, Client(router.server) as client:
        await seed_registry(client, CHECKOUT)
        session = ChatSession(client, settings, ChatOptions(), recorder)
        await session.start()
        listed = set(session.tools.names)
        turn = await session.ask("Is the one-step checkout hurting revenue?")

    assert "evaluate_guardrails" not in listed  # the core profile does not list it
    offered = {t["name"] for t in fake_anthropic.requests[0].body["tools"]}
    # route_query's candidates for this question joined the listed tools, the guardrail check first among them.
    assert "evaluate_guardrails" in offered and listed <= offered
    assert turn.error is None and turn.answer == "Checked."
