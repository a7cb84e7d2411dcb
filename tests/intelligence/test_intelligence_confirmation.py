"""Confirmation before destructive actions, through the real router and stores, with real MCP clients:
one that declares elicitation (asked through an input-required result on 2026-07-28, or mid-call on
the 2025 handshake) and one that does not (it must call again with confirm=true and a reason)."""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp import Client
from mcp_calls import readable  # type: ignore[import-not-found]

REASON = "p<0.01 on conversion, guardrails fine"
TWO_ARMS = {"control": 0.5, "treatment": 0.5}


class User:
    """The person behind an eliciting client: records every question, answers as told."""

    def __init__(self, action: str = "accept", confirm: bool = True, reason: str = REASON) -> None:
        self.questions: list[str] = []
        self.action, self.confirm, self.reason = action, confirm, reason

    async def __call__(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.questions.append(params.message)
        if self.action != "accept":
            return types.ElicitResult(action=self.action)
        properties = params.requested_schema["properties"]
        if "confirm" in properties:
            return types.ElicitResult(action="accept", content={"confirm": self.confirm, "reason": self.reason})
        return types.ElicitResult(action="accept", content={name: "conversion_rate" for name in properties})


def error_kind(result: types.CallToolResult) -> str | None:
    return (result.meta or {}).get("neonblue/error", {}).get("kind") if result.is_error else None


def text(result: types.CallToolResult) -> str:
    return result.content[0].text


async def change_log(client: Client, key: str) -> list[dict[str, Any]]:
    detail = await client.call_tool("get_experiment", {"experiment": key, "include_change_log": True})
    return detail.structured_content["change_log"]


@readable
async def test_destructive_calls_ask_an_eliciting_client_and_nothing_else_does(intel_settings, open_stack,
                                                                              kit) -> None:
    user = User()
    async with open_stack(intel_settings()) as router, Client(router.server) as plain, \
            Client(router.server, elicitation_callback=user) as asking:
        seed = kit.Seeder(router, plain)
        await seed.experiment("confirm-me")
        await seed.experiment("still-a-draft", start=False)
        # Nothing destructive: reads, a draft's weights, a stop without a winner of another experiment.
        await kit.call(asking, "get_experiment", {"experiment": "confirm-me"})
        await kit.call(asking, "list_experiments", {})
        draft = await kit.call(asking, "set_variant_weights", {"experiment": "still-a-draft",
                                                               "weights": {"control": 0.3, "treatment": 0.7}})
        assert [v["weight"] for v in draft["variants"]] == [0.3, 0.7]
        assert user.questions == []

        moved = await kit.call(asking, "set_variant_weights", {"experiment": "confirm-me",
                                                               "weights": {"control": 0.2, "treatment": 0.8}})
        stopped = await kit.call(asking, "stop_experiment", {"experiment": "confirm-me", "winner": "treatment"})
        again = await asking.call_tool("stop_experiment", {"experiment": "confirm-me", "winner": "treatment"})
        archived = await kit.call(asking, "archive_experiment", {"experiment": "confirm-me"})
        log = await change_log(plain, "confirm-me")

    assert [v["weight"] for v in moved["variants"]] == [0.2, 0.8]
    assert stopped["status"] == "concluded" and stopped["winner"] == "treatment"
    assert error_kind(again) == "conflict"  # a repeat is refused by the registry, never asked about
    assert archived["status"] == "archived"
    # Asked three times, each question saying what would happen to which experiment.
    assert len(user.questions) == 3, user.questions
    weights_q, stop_q, archive_q = user.questions
    assert "confirm-me" in weights_q and "control 50% → 20%" in weights_q and "treatment 50% → 80%" in weights_q
    assert "ship variant 'treatment' to everyone" in stop_q
    assert archive_q.startswith("Archive 'confirm-me'")
    # The user's reason is in the audit trail with each change.
    reasons = {entry["change_type"]: entry["reason"] for entry in log}
    assert reasons["weights_changed"] == REASON and reasons["archived"] == REASON
    assert any(entry["reason"] == REASON and entry["change_type"] in ("concluded", "stopped") for entry in log)


@readable
async def test_a_declined_or_dismissed_confirmation_changes_nothing(intel_settings, open_stack, kit) -> None:
    declining, dismissing = User(confirm=False), User(action="cancel")
    async with open_stack(intel_settings()) as router, Client(router.server) as plain, \
            Client(router.server, elicitation_callback=declining) as no, \
            Client(router.server, elicitation_callback=dismissing) as later:
        await kit.Seeder(router, plain).experiment("keep-running")
        declined = await no.call_tool("stop_experiment", {"experiment": "keep-running", "winner": "treatment"})
        dismissed = await later.call_tool("archive_experiment", {"experiment": "keep-running"})
        # A model that sets confirm=true itself does not stand in for a person who can be asked.
        self_confirmed = await no.call_tool("stop_experiment", {"experiment": "keep-running", "winner": "treatment",
                                                                "confirm": True, "reason": "the model is sure"})
        experiment = await kit.call(plain, "get_experiment", {"experiment": "keep-running"})

    assert error_kind(declined) == "refused" and "declined; nothing was changed" in text(declined)
    assert error_kind(dismissed) is not None
    assert error_kind(self_confirmed) == "refused" and "declined" in text(self_confirmed)
    assert len(declining.questions) == 2
    assert experiment["status"] == "running" and experiment["winner"] is None


@readable
async def test_a_client_without_elicitation_confirms_with_an_argument_and_a_reason(intel_settings, open_stack,
                                                                                   kit) -> None:
    async with open_stack(intel_settings()) as router, Client(router.server) as plain:
        await kit.Seeder(router, plain).experiment("by-argument")
        asked = await plain.call_tool("stop_experiment", {"experiment": "by-argument", "winner": "treatment"})
        unchanged = await kit.call(plain, "get_experiment", {"experiment": "by-argument"})
        no_reason = await plain.call_tool("stop_experiment", {"experiment": "by-argument", "winner": "treatment",
                                                              "confirm": True})
        done = await kit.call(plain, "stop_experiment", {"experiment": "by-argument", "winner": "treatment",
                                                         "confirm": True, "reason": REASON})
        log = await change_log(plain, "by-argument")

    assert error_kind(asked) == "confirmation_required"
    assert "ship variant 'treatment' to everyone" in text(asked) and "confirm=true and a reason" in text(asked)
    assert unchanged["status"] == "running"
    assert error_kind(no_reason) == "invalid_input" and "needs a reason" in text(no_reason)
    assert done["status"] == "concluded" and log[0]["reason"] == REASON


@readable
async def test_a_client_on_the_2025_handshake_is_asked_during_the_call(intel_settings, open_stack, kit) -> None:
    user = User()
    async with open_stack(intel_settings()) as router, Client(router.server) as plain, \
            Client(router.server, mode="legacy", elicitation_callback=user) as legacy:
        await kit.Seeder(router, plain).experiment("old-client")
        stopped = await kit.call(legacy, "stop_experiment", {"experiment": "old-client", "winner": "control"})
    assert stopped["status"] == "concluded" and stopped["winner"] == "control"
    assert len(user.questions) == 1 and "ship variant 'control'" in user.questions[0]


@readable
async def test_the_autopilot_asks_before_it_ships_and_a_dry_run_never_asks(intel_settings, open_stack, kit) -> None:
    user = User(reason="ship the winner")
    # development: the policy lets the autopilot ship a clear winner.
    async with open_stack(intel_settings(environment="development")) as router, Client(router.server) as plain, \
            Client(router.server, elicitation_callback=user) as asking:
        seed = kit.Seeder(router, plain)
        await seed.experiment("autopilot-asks")
        await seed.traffic("autopilot-asks", kit.arms(0.10, 0.125), users=20_000)
        dry = await kit.call(asking, "run_autopilot", {"experiment": "autopilot-asks", "dry_run": True})
        asked_without = await plain.call_tool("run_autopilot", {"experiment": "autopilot-asks"})
        running = await kit.call(plain, "get_experiment", {"experiment": "autopilot-asks"})
        acted = await kit.call(asking, "run_autopilot", {"experiment": "autopilot-asks"})
        experiment = await kit.call(plain, "get_experiment", {"experiment": "autopilot-asks"})
        decisions = await kit.call(plain, "list_decisions", {"experiment": "autopilot-asks", "actor": "autopilot"})

    assert dry["action"] == "ship" and not dry["applied"]
    assert error_kind(asked_without) == "confirmation_required" and "ship variant 'treatment'" in text(asked_without)
    assert running["status"] == "running"
    assert len(user.questions) == 1 and user.questions[0].startswith("Let the autopilot ship variant 'treatment'")
    assert acted["applied"] and experiment["status"] == "concluded" and experiment["winner"] == "treatment"
    assert any("Confirmed: ship the winner" in d["reasoning"] for d in decisions["items"])


@readable
async def test_design_experiment_asks_for_its_primary_metric(intel_settings, open_stack) -> None:
    user = User()
    async with open_stack(intel_settings()) as router, Client(router.server) as plain, \
            Client(router.server, elicitation_callback=user) as asking:
        asked = await asking.get_prompt("design_experiment", {"goal": "more sign-ups"})
        given = await asking.get_prompt("design_experiment", {"goal": "more sign-ups", "primary_metric": "signups"})
        unasked = await plain.get_prompt("design_experiment", {"goal": "more sign-ups"})

    assert "Primary metric: conversion_rate" in asked.messages[0].content.text
    assert "Primary metric: signups" in given.messages[0].content.text
    assert len(user.questions) == 1 and "metric" in user.questions[0]
    assert "Ask the user which metric decides the experiment" in unasked.messages[0].content.text
