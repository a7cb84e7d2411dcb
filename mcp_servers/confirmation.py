"""Confirmation before destructive actions, shared by every server's tools.

A tool whose call would do something destructive (ship a winner to everyone, archive, move the
traffic of a running experiment, apply an allocation, let the autopilot stop or re-weight an
experiment) first describes that action in one sentence. Unless the call carries `confirm=true`
with a reason, it raises `ConfirmationRequired` with that sentence as the question, and nothing
changes. The router in front turns the refusal into the user's confirmation prompt (an
input-required elicitation) when the client can show one; a client that cannot repeats the call
with `confirm=true` and a reason, which is written to the audit trail with the change.

Calls that change nothing destructive (a draft's weights, a repeat of a conclusion already made,
a dry run, an autopilot that decides to wait) never ask. The LaunchDarkly and PostHog MCP servers
guard their destructive tools the same way; Statsig's writes carry an acknowledged reason.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from schemas.errors import ConfirmationRequired, InvalidInput

Reason = Annotated[str | None, Field(default=None, max_length=2000, description="Why, for the change log.")]
Confirm = Annotated[bool, Field(
    default=False,
    description="The user confirmed this destructive action: go ahead without asking. Needs a reason "
                "(written to the audit trail). Without it the call changes nothing and says what it would do.")]


def require_confirmation(tool: str, action: str | None, confirm: bool, reason: str | None) -> None:
    """Go ahead when nothing destructive happens (`action` is None) or the caller confirmed with a reason.

    Raises ConfirmationRequired (the question is `action`) when unconfirmed, and InvalidInput for
    confirm=true without a reason."""
    if action is None:
        return
    if confirm:
        if reason is not None and reason.strip():
            return
        raise InvalidInput(f"confirm=true needs a reason: it is written to the audit trail with the change ({action})")
    raise ConfirmationRequired(
        f"Confirmation needed: {action} To go ahead once the user agreed, call {tool} again with confirm=true "
        "and a reason (written to the audit trail); nothing was changed.",
        question=action)


def percent(weight: float) -> str:
    """A traffic weight as the question shows it: 0.5 -> '50%', 0.125 -> '12.5%'."""
    return f"{weight * 100:.3g}%"


def weights_change(current: dict[str, float], proposed: dict[str, float]) -> str:
    """'control 50% → 20%, examples 50% → 80%' for the arms whose weight changes."""
    return ", ".join(f"{key} {percent(current.get(key, 0.0))} → {percent(weight)}"
                     for key, weight in proposed.items() if abs(weight - current.get(key, 0.0)) > 1e-9)
