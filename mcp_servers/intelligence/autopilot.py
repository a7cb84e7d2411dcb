"""evaluate_guardrails and run_autopilot: harm checks against the environment policy, and the action the
autopilot takes (or would take) through the registry, each one audited."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from mcp_servers.confirmation import require_confirmation, weights_change
from schemas.errors import ServiceError

from .base import ACTOR, AUTOPILOT_ACTOR
from .decisions import AutopilotChoice, AutopilotFacts, MetricHarm, decide_autopilot, policy_breaches
from .models import AnalysisOptions, AutopilotDecision, GuardrailCheck
from .narrative import pct
from .readout import Analysed, analysis_options, normalised_weights, policy_view, rule_outcome
from .traffic import TrafficAllocator


class GuardrailsAndAutopilot(TrafficAllocator):
    def _facts(self, a: Analysed) -> tuple[AutopilotFacts, list[GuardrailCheck]]:
        policy = self.policy
        harms = tuple(MetricHarm(p.metric, p.role, p.variant, p.degradation, p.p_harm)
                      for p in a.pairs if p.role in ("primary", "guardrail") and not p.error)
        breaching = {(h.metric, h.variant) for h in policy_breaches(harms, policy, a.result.options.alpha)}
        checks = [GuardrailCheck(
            metric=p.metric, role=p.role, variant=p.variant, direction=p.direction, relative_lift=p.fixed.effect,
            degradation=p.degradation, margin=p.guardrail["margin"] if p.guardrail else None,
            status=(p.guardrail["status"] if p.guardrail else ("fail" if p.better is False else "pass"
                                                               if p.better else "inconclusive")),
            p_harm=p.p_harm, breaches_policy=(p.metric, p.variant) in breaching)
            for p in a.pairs if p.role in ("primary", "guardrail") and not p.error]
        bandit = self._bandit(a) if a.verdict.verdict == "keep_running" else None
        proposal = (normalised_weights(dict(zip(a.weights, bandit.weights, strict=True)))
                    if bandit is not None and bandit.updated else None)
        facts = AutopilotFacts(
            status=a.experiment["status"], verdict=a.verdict, days_observed=a.result.days_observed,
            min_arm_units=min(v.users for v in a.result.variants), harms=harms, n_arms=len(a.weights),
            control=a.control, alpha=a.result.options.alpha, bandit_weights=proposal, current_weights=a.weights,
            bandit_best_probability=max(bandit.best_arm_probabilities) if proposal and bandit and bandit.best_arm_probabilities else None)
        return facts, checks

    async def evaluate_guardrails(self, experiment_id: str,
                                  options: AnalysisOptions | Mapping[str, Any] | None = None) -> AutopilotDecision:
        """Guardrail and primary-metric harm checks against the environment policy, and the action the
        autopilot would take (recorded as a recommendation; nothing is changed)."""
        return await self._autopilot(experiment_id, options, act=False)

    async def run_autopilot(self, experiment_id: str, dry_run: bool = False,
                            options: AnalysisOptions | Mapping[str, Any] | None = None, *, confirm: bool = False,
                            reason: str | None = None) -> AutopilotDecision:
        """Decide under the environment policy and, when allowed (and not dry_run), act through the registry
        once the user confirmed an action that changes traffic or stops the experiment (`confirm` with a
        `reason`, see `mcp_servers.confirmation`)."""
        return await self._autopilot(experiment_id, options, act=not dry_run, confirm=confirm, reason=reason)

    async def _autopilot(self, experiment_id: str, options: Any, *, act: bool, confirm: bool = False,
                         reason: str | None = None) -> AutopilotDecision:
        opts = analysis_options(options).model_copy(update={"record_decision": False, "similar_experiments": 0})
        a = await self._analyze(experiment_id, opts)
        facts, checks = self._facts(a)
        choice = decide_autopilot(facts, self.policy)
        applied = False
        outcome_note = ""
        if act and choice.should_apply:
            # Every applied action changes traffic or stops the experiment: the user confirms it first.
            require_confirmation("run_autopilot", _action_question(a, choice), confirm, reason)
            if reason:
                choice = replace(choice, rule=f"{choice.rule} Confirmed: {reason}")
            try:
                await self._apply(a, choice)
                applied = True
            except ServiceError as exc:
                outcome_note = f" Applying failed: {exc}"
        reasoning = choice.rule + outcome_note
        decision_id = None
        if choice.action != "none":
            actor = AUTOPILOT_ACTOR if act else ACTOR
            if choice.action == "needs_human_review" or applied:
                action = choice.action
            else:
                action = f"recommend_{choice.action}"
            decision_id = await self._record(
                a.key, action, reasoning,
                {"policy": self.policy.as_dict(), "verdict": a.verdict.verdict, "rule_id": a.verdict.rule_id,
                 "verdict_rule": a.verdict.rule, "variant": choice.variant, "weights": choice.weights,
                 "allowed": choice.allowed, "harms": [c.model_dump() for c in checks],
                 "users": {v.key: v.users for v in a.result.variants}, "days_observed": a.result.days_observed},
                choice.confidence, actor, applied)
        narrative = [reasoning]
        for c in checks:
            narrative.append(f"{c.metric} ({c.role}) for {c.variant}: {pct(c.relative_lift)}, degradation "
                             f"{pct(c.degradation)}, status {c.status}, p(harm) = {c.p_harm:.2g}"
                             + (", breaches the policy." if c.breaches_policy else "."))
        return AutopilotDecision(
            experiment_key=a.key, environment=self.policy.environment, policy=policy_view(self.policy),  # type: ignore[arg-type]
            verdict=rule_outcome(a.verdict), guardrails=checks, action=choice.action, variant=choice.variant,  # type: ignore[arg-type]
            weights=choice.weights, allowed=choice.allowed, applied=applied, rule=reasoning,
            confidence=max(0.0, min(1.0, choice.confidence)), decision_id=decision_id, narrative=narrative)

    async def _apply(self, a: Analysed, choice: AutopilotChoice) -> None:
        # The user confirmed run_autopilot's action (see _autopilot): the registry's own confirmation is that one.
        reason = choice.rule[:2000]
        if choice.action == "reallocate" or (choice.action == "roll_back" and choice.weights):
            await self.peers.postgres("set_variant_weights", experiment=a.key, weights=choice.weights,
                                      actor=AUTOPILOT_ACTOR, reason=reason, confirm=True)
        elif choice.action == "roll_back":
            await self.peers.postgres("stop_experiment", experiment=a.key, winner=a.control, actor=AUTOPILOT_ACTOR,
                                      reason=reason, confirm=True)
        elif choice.action == "ship":
            await self.peers.postgres("stop_experiment", experiment=a.key, winner=choice.variant,
                                      actor=AUTOPILOT_ACTOR, reason=reason, confirm=True)
        elif choice.action == "pause":
            await self.peers.postgres("stop_experiment", experiment=a.key, actor=AUTOPILOT_ACTOR, reason=reason)


def _action_question(a: Analysed, choice: AutopilotChoice) -> str:
    """What the autopilot is about to do, in one sentence for the user, with the rule that decided it."""
    key = a.key
    if choice.action == "reallocate" or (choice.action == "roll_back" and choice.weights):
        verb = "re-weight" if choice.action == "reallocate" else "roll back by moving the traffic of"
        what = f"Let the autopilot {verb} running experiment '{key}': {weights_change(a.weights, choice.weights or {})}."
    elif choice.action == "roll_back":
        what = f"Let the autopilot roll back '{key}': stop it and serve the control '{a.control}' to everyone."
    elif choice.action == "ship":
        what = f"Let the autopilot ship variant '{choice.variant}' of '{key}' to everyone: the experiment is concluded."
    else:  # pause
        what = f"Let the autopilot pause '{key}': stop it, nobody is assigned any more."
    return f"{what} Why: {choice.rule}"
