"""Offline chat asks for a value the question did not give, and the reply completes the question."""

from __future__ import annotations

from nl_env import demo_router  # type: ignore[import-not-found]

from mcp_router.apps.chat.session import ChatOptions, ChatSession


async def test_a_missing_experiment_is_asked_for_and_the_reply_completes_the_question(nl_settings, chroma_path) -> None:
    settings = nl_settings()
    async with demo_router(settings, chroma_path) as client:
        session = ChatSession(client, settings, ChatOptions())
        await session.start()
        first = await session.ask("which variant does user u_42 get?")
        second = await session.ask("the one-step checkout")

    # Five experiments run: the question names none, so chat asks which (listing them) and runs nothing.
    assert first.stop == "needs_input" and first.error
    assert [c.tool for c in first.tool_calls] == ["route_query"]
    assert "which experiment? " in first.answer and "checkout-1step (One-step checkout)" in first.answer
    assert "reply with it" in first.answer
    # The short reply completes it: the assignment of u_42 in checkout-1step, without exposing the user.
    assert second.error is None, second.answer
    assign = second.tool_calls[-1]
    assert assign.tool == "predict_user_assignment"
    assert assign.arguments == {"experiment": "checkout-1step", "user_id": "u_42"}
    assert assign.structured["variant_key"] in {"two_step", "one_step"}
