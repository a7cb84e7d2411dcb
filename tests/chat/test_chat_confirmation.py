"""`neonblue chat`: a destructive call the model asks for is confirmed by the person at the terminal,
never by the model. The fake Messages API plays Claude; the router, registry and MCP client are real."""

from __future__ import annotations

import io
import json

from fake_anthropic import result_text, text, tool_use
from mcp import Client
from rich.console import Console

from mcp_router.apps.chat.session import ChatOptions, ChatSession, chat_questions
from mcp_router.runtime.serving import open_router

CHECKOUT = {
    "key": "checkout-1step", "name": "One-step checkout", "type": "ui", "primary_metric": "conversion",
    "variants": [{"key": "control", "is_control": True}, {"key": "one-step"}],
}
SHIP = {"experiment": "checkout-1step", "winner": "one-step"}


def answer_from_last_tool_result(body: dict):
    (block,) = [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]
    if block.get("is_error"):
        return text(f"Not done: {result_text(block)}")
    result = json.loads(result_text(block))
    return text(f"Status: {result['status']}, winner {result['winner']}.")


async def run_turn(fake_anthropic, settings, recorder, typed: list[str]) -> tuple[object, str, list[str], dict]:
    fake_anthropic.then(tool_use("stop_experiment", SHIP, say="Shipping the one-step checkout."),
                        answer_from_last_tool_result)
    prompts: list[str] = []
    lines = iter(typed)

    async def read_line(prompt: str) -> str | None:
        prompts.append(prompt)
        return next(lines, None)

    screen = io.StringIO()
    console = Console(file=screen, width=80)
    async with open_router(settings) as router, \
            Client(router.server, elicitation_callback=chat_questions(console, read_line)) as client:
        for tool, arguments in (("create_experiment", {"experiment": CHECKOUT}),
                                ("start_experiment", {"experiment": "checkout-1step"})):
            assert not (await client.call_tool(tool, arguments)).is_error
        session = ChatSession(client, settings, ChatOptions(), recorder)
        await session.start()
        turn = await session.ask("Ship the one-step checkout to everyone")
        detail = await client.call_tool("get_experiment", {"experiment": "checkout-1step", "include_change_log": True})
    return turn, screen.getvalue(), prompts, detail.structured_content


async def test_the_person_confirms_what_claude_asked_for_and_gives_the_reason(
        fake_anthropic, chat_settings, recorder) -> None:
    turn, screen, prompts, experiment = await run_turn(fake_anthropic, chat_settings(fake_anthropic), recorder,
                                                       ["y", "conversion +20%, guardrails fine"])
    assert "NeonBlue asks you: Stop 'checkout-1step' and ship variant 'one-step'" in " ".join(screen.split())
    assert prompts == ["Go ahead? [y/N] ", "Reason: "]
    assert turn.answer.endswith("Status: concluded, winner one-step.")
    assert experiment["status"] == "concluded"
    assert experiment["change_log"][0]["reason"] == "conversion +20%, guardrails fine"
    # The model's call carried no confirmation of its own: the person's answer made it.
    assert [(c.tool, c.arguments) for c in turn.tool_calls] == [("stop_experiment", SHIP)]


async def test_a_no_at_the_terminal_changes_nothing_and_claude_is_told(fake_anthropic, chat_settings,
                                                                       recorder) -> None:
    turn, _, prompts, experiment = await run_turn(fake_anthropic, chat_settings(fake_anthropic), recorder, ["n"])
    assert prompts == ["Go ahead? [y/N] "]
    assert turn.tool_calls[0].is_error and "the user declined; nothing was changed" in turn.tool_calls[0].text
    assert "Not done: the user declined; nothing was changed" in turn.answer
    assert experiment["status"] == "running" and experiment["winner"] is None
