"""Asking the user through the client: confirming destructive calls, and context a prompt is missing.

The backends decide *what* to ask (`schemas.errors.ConfirmationRequired` carries the question for a
destructive call; `PROMPT_QUESTIONS` names a prompt's missing context). This module decides *how*,
from what the client declared:

- a client on MCP 2026-07-28 that declares form elicitation gets an `InputRequiredResult` (SEP-2322):
  the question as an `elicitation/create` input request and a `requestState` naming what was asked
  (sealed by the SDK's `RequestStateBoundary`: the client cannot forge it). Its retry carries the
  answer; the answer counts only for the exact question asked, so a destructive call whose
  consequences changed in between is asked again, not confirmed blindly;
- a client on an earlier revision that declares elicitation, on a channel that can carry a server
  request (stdio, stateful HTTP), is asked with `elicitation/create` during the call;
- any other client is never sent a request it did not declare: a destructive call answers the
  backend's `confirmation_required` refusal (call again with confirm=true and a reason), and a
  prompt renders without the answer (its text tells the agent to ask).

A confirmed call is forwarded with `confirm=true` and the reason the user gave, which the registry
and the audit trail record. Read-only and non-destructive tools never reach this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import mcp.types as types
from mcp.server import ServerRequestContext
from mcp_types.version import is_version_at_least

from schemas.errors import ServiceError
from schemas.refusals import question_of, refusal_result, result_text

log = logging.getLogger("neonblue.router")

INPUT_REQUIRED_VERSION = "2026-07-28"  # the first revision whose requests carry input-required results
CONFIRM_KEY = "confirm"  # the input request's key (and the tool argument it becomes)

Mode = Literal["input_required", "request"]
Call = Callable[[dict[str, Any]], Awaitable[types.CallToolResult]]


@dataclass(frozen=True)
class PromptQuestion:
    """Context a prompt needs and the user can give: asked when the prompt argument is missing."""

    argument: str
    message: str
    description: str


# Prompts whose missing context is asked for (prompt name -> its questions, by argument).
PROMPT_QUESTIONS: dict[str, tuple[PromptQuestion, ...]] = {
    "design_experiment": (PromptQuestion(
        "primary_metric",
        "Which metric should decide this experiment? (the one number the verdict is about)",
        "The primary metric, e.g. conversion_rate, revenue_per_user or resolution_rate."),),
}


def elicitation_mode(ctx: ServerRequestContext[Any]) -> Mode | None:
    """How this request's client can be asked, or None when it declared no form elicitation."""
    session = ctx.session
    capabilities = session.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    # A bare `elicitation: {}` (the only shape before modes existed) means form support; url-only does not.
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return None
    if ctx.protocol_version and is_version_at_least(ctx.protocol_version, INPUT_REQUIRED_VERSION):
        return "input_required"
    return "request" if session.can_send_request else None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _state(request_state: str | None) -> dict[str, Any]:
    """The plaintext state this router minted last round (the boundary verified and unsealed it)."""
    if not request_state:
        return {}
    try:
        state = json.loads(request_state)
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


def _refused(message: str) -> types.CallToolResult:
    return refusal_result(ServiceError(message))


# -- confirmation of a destructive call -----------------------------------------------------------

def confirmation_schema(reason: str | None) -> dict[str, Any]:
    """The form the user answers: go ahead or not, and why (kept in the audit trail)."""
    why: dict[str, Any] = {"type": "string", "title": "Reason", "minLength": 1, "maxLength": 2000,
                           "description": "Why, written to the audit trail with the change."}
    if reason:
        why["default"] = reason
    return {"type": "object",
            "properties": {"confirm": {"type": "boolean", "title": "Go ahead",
                                       "description": "Yes: make this change now."},
                           "reason": why},
            "required": ["confirm", "reason"]}


async def confirm_call(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams,
                       refused: types.CallToolResult, call: Call) -> types.CallToolResult | types.InputRequiredResult:
    """Ask the user to confirm the destructive call a backend refused with `confirmation_required`.

    `call(extra)` repeats the call with extra arguments (confirm=true and the reason once confirmed)."""
    question = question_of(refused) or result_text(refused)
    asked = _digest(params.name, question)
    given = (params.arguments or {}).get("reason")
    reason = given if isinstance(given, str) and given.strip() else None
    schema = confirmation_schema(reason)
    answer: types.ElicitResult | None = None
    state = _state(params.request_state)
    response = (params.input_responses or {}).get(CONFIRM_KEY)
    if state.get("confirm") == asked and isinstance(response, types.ElicitResult):
        answer = response
    elif state.get("confirm") not in (None, asked):
        log.info("tool=%s: the confirmed question changed since it was asked; asking again", params.name)
    if answer is None:
        mode = elicitation_mode(ctx)
        if mode == "input_required":
            return types.InputRequiredResult(
                input_requests={CONFIRM_KEY: types.ElicitRequest(params=types.ElicitRequestFormParams(
                    message=question, requested_schema=schema))},
                request_state=json.dumps({"confirm": asked}))
        if mode is None:
            return refused  # it says: call again with confirm=true and a reason
        answer = await ctx.session.elicit_form(question, schema, related_request_id=ctx.request_id)
    return await _settle(params.name, answer, reason, call)


async def _settle(tool: str, answer: types.ElicitResult, reason: str | None,
                  call: Call) -> types.CallToolResult:
    if answer.action == "cancel":
        return _refused("the user dismissed the confirmation; nothing was changed")
    content = answer.content or {}
    if answer.action != "accept" or content.get("confirm") is not True:
        return _refused("the user declined; nothing was changed")
    given = content.get("reason")
    why = given.strip() if isinstance(given, str) and given.strip() else reason
    if not why:
        return _refused("confirmed without a reason; nothing was changed (the reason goes into the audit trail: "
                        "confirm again with one)")
    log.info("tool=%s confirmed by the user: %s", tool, why)
    return await call({"confirm": True, "reason": why})


# -- context a prompt is missing ------------------------------------------------------------------

def prompt_schema(question: PromptQuestion) -> dict[str, Any]:
    return {"type": "object",
            "properties": {question.argument: {"type": "string", "minLength": 1,
                                               "description": question.description}},
            "required": [question.argument]}


async def complete_prompt(ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams,
                          questions: Sequence[PromptQuestion]) -> dict[str, str] | types.InputRequiredResult:
    """The prompt's arguments with the missing context the user gave, or the InputRequiredResult asking for it.

    A question answered (or declined) is not asked again; when the client cannot be asked, the prompt
    renders with what it has."""
    arguments = dict(params.arguments or {})
    missing = [q for q in questions if not arguments.get(q.argument)]
    if not missing:
        return arguments
    state = _state(params.request_state)
    asked = state.get("asked") if state.get("prompt") == params.name else None
    responses: Mapping[str, Any] = params.input_responses or {}
    mode = elicitation_mode(ctx)
    unanswered = []
    for question in missing:
        response = responses.get(question.argument) if isinstance(asked, list) and question.argument in asked else None
        if response is None and mode == "request":
            response = await ctx.session.elicit_form(question.message, prompt_schema(question),
                                                     related_request_id=ctx.request_id)
        if isinstance(response, types.ElicitResult):
            value = (response.content or {}).get(question.argument) if response.action == "accept" else None
            if isinstance(value, str) and value.strip():
                arguments[question.argument] = value.strip()
            continue  # answered, declined or dismissed: asked once
        unanswered.append(question)
    if unanswered and mode == "input_required":
        return types.InputRequiredResult(
            input_requests={q.argument: types.ElicitRequest(params=types.ElicitRequestFormParams(
                message=q.message, requested_schema=prompt_schema(q))) for q in unanswered},
            request_state=json.dumps({"prompt": params.name, "asked": [q.argument for q in unanswered]}))
    return arguments
