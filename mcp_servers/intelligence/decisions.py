"""Verdict rules and autopilot policies: pure functions over computed evidence, no I/O.

Verdict rules (anchored on GrowthBook's decision framework: a decision is
"ready" once the experiment is powered or tested sequentially; rollback on any
failing guardrail; ship on clear goal wins with no guardrail failing; review
otherwise). Applied in this order, first match wins:

  R1 srm_mismatch        SRM χ² p < 0.001                          → needs_review (every number is suspect)
  R2 insufficient_data   an arm below the minimum sample           → needs_review, with days left
  R3 guardrail_failure   a guardrail fails non-inferiority AND its
                         degradation is significant                 → roll_back
  R4 primary_win         primary significantly better (decision p,
                         corrected) and chance to win ≥ threshold   → ship
  R5 primary_loss        primary significantly worse                → roll_back
  R6 futility            not significant, the MDE is not reachable
                         within the maximum duration, and the
                         conditional power under the current trend
                         is below 20%                               → needs_review (stop for futility)
  R7 no_effect           not significant although powered for
                         the MDE                                    → needs_review (no effect at that size)
  R8 underpowered        otherwise                                  → keep_running, with days left

Rules R2-R8 are evaluated per treatment arm; the experiment verdict is R1,
else R2 if any arm lacks data, else ship the arm with the highest chance to win
among those that ship, else roll back if every arm rolls back, else keep
running (with several arms, an arm that rolls back is to be removed while the
others continue), else review.

Confidence is always a stated computed quantity: 1 − p(SRM); the power not yet
reached (1 − power) for R2/R8; 1 − p(harm) for R3; the chance to win for R4;
1 − chance to win for R5; 1 − conditional power for R6; the power reached for R7.

Futility needs both: a planned MDE out of reach in the time left says the test
was sized too small, not that the arm is hopeless — an arm whose observed effect
is already large keeps a high conditional power (the chance of significance by
the maximum duration if the current estimate is the truth) and keeps running.

Autopilot policies (from the orchestration design's environment settings: confidence
threshold, risk tolerance = the largest degradation tolerated before an automatic
rollback, exploration rate = the traffic floor bandits keep on every arm):

  environment   confidence  max degradation  exploration  min days  min units/arm  may do automatically
  production    0.85        5%               5%           7         1000           pause, roll back
  staging       0.70        15%              15%          3         300            pause, roll back, reallocate
  development   0.50        25%              30%          1         100            pause, roll back, reallocate, ship

Autopilot rules, first match wins: A1 not running → none; A2 SRM → needs human
review; A3 emergency brake: a primary or guardrail metric degraded by more than
the policy's max degradation with the harm significant (always-valid, one-sided)
→ roll back (pause, i.e. stop without a winner, while below the minimum days/units;
with more than two arms the arm is removed instead); A4 before min days or units →
none (wait); A5-A7 act on the verdict (roll_back / ship / keep_running →
bandit reallocation) when the action is allowed and its confidence reaches the
threshold, otherwise needs human review; A8 needs_review → needs human review.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .narrative import days, interval_label, p_label, pct, pct_interval, prob, statistic_kind

SRM_RULE_THRESHOLD = 0.001
FUTILITY_CONDITIONAL_POWER = 0.2  # below this chance of significance by the maximum duration, stop (R6)
DEFAULT_MIN_UNITS = 100  # per arm, when the experiment states no min_sample_size

RULES: dict[str, str] = {
    "srm_mismatch": "R1: sample ratio mismatch (SRM p < 0.001) blocks every verdict",
    "insufficient_data": "R2: an arm is below the minimum sample size",
    "guardrail_failure": "R3: a guardrail fails non-inferiority and its degradation is significant",
    "primary_win": "R4: the primary metric is significantly better and the chance to win reaches the threshold",
    "primary_loss": "R5: the primary metric is significantly worse",
    "futility": "R6: not significant, the MDE cannot be reached within the maximum duration, and the conditional "
                "power under the current trend is below 20%",
    "no_effect": "R7: not significant although powered to detect the MDE",
    "underpowered": "R8: not significant and not yet powered: keep collecting data",
    "analysis_error": "R0: the comparison could not be computed",
    "no_data": "R0: no exposed users to analyse",
}


# ---------------------------------------------------------------- evidence (inputs)


@dataclass(frozen=True)
class GuardrailEvidence:
    metric: str
    status: str  # pass | fail | inconclusive | error
    relative_lift: float
    margin: float
    bound: float | None
    p_harm: float
    lower_is_better: bool


@dataclass(frozen=True)
class ArmEvidence:
    """What the rules need about one treatment arm (primary metric + its guardrails)."""

    variant: str
    n: int
    control_n: int
    metric: str
    relative_lift: float
    ci: tuple[float | None, float | None]
    p_value: float  # the decision p (sequential or fixed, corrected)
    better: bool | None  # significant and good / significant and bad / not significant
    chance_to_win: float
    power: float | None
    days_left: float | None
    guardrails: tuple[GuardrailEvidence, ...] = ()
    error: str | None = None
    conditional_power: float | None = None  # P(significant by the maximum duration | current trend)


@dataclass(frozen=True)
class VerdictInputs:
    arms: tuple[ArmEvidence, ...]
    srm_p: float
    srm_flagged: bool
    srm_error: str | None
    min_units: int
    units_per_day: float
    days_observed: float
    arm_shares: dict[str, float] = field(default_factory=dict)  # expected share of traffic per arm (incl. control)
    control: str = "control"
    chance_threshold: float = 0.95
    alpha: float = 0.05
    max_duration_days: float = 56.0
    mde: float = 0.05
    target_power: float = 0.8
    # How the decision statistics were computed, so the rule sentences name them: always-valid
    # (sequential) or fixed-horizon, and the multiple-testing correction of the decision p ("none",
    # "holm", "benjamini-hochberg"; "none" with a single treatment arm).
    sequential: bool = True
    correction: str = "none"

    @property
    def kind(self) -> str:
        return statistic_kind(self.sequential)

    @property
    def p_label(self) -> str:
        return p_label(self.sequential, self.correction)

    @property
    def interval_label(self) -> str:
        return interval_label(self.sequential, self.alpha)

    @property
    def power_label(self) -> str:
        return f"{self.kind} power"


@dataclass(frozen=True)
class Outcome:
    verdict: str
    rule_id: str
    rule: str
    confidence: float
    confidence_basis: str
    variant: str | None = None
    days_left: float | None = None


def _clip(x: float) -> float:
    return 0.0 if not math.isfinite(x) else min(1.0, max(0.0, x))


def days_to_min_units(inputs: VerdictInputs, arm: ArmEvidence) -> float | None:
    """Days until both the arm and the control reach the minimum sample at the current traffic."""
    if inputs.units_per_day <= 0:
        return None
    needed = []
    for name, n in ((arm.variant, arm.n), (inputs.control, arm.control_n)):
        share = inputs.arm_shares.get(name, 0.0)
        if n >= inputs.min_units:
            continue
        if share <= 0:
            return None
        needed.append((inputs.min_units - n) / (inputs.units_per_day * share))
    return max(needed) if needed else 0.0


def arm_verdict(arm: ArmEvidence, inputs: VerdictInputs) -> Outcome:
    """Rules R2-R8 for one treatment arm."""
    power = arm.power if arm.power is not None else 0.0
    if arm.error:
        return Outcome("needs_review", "analysis_error",
                       f"{arm.variant}: the {arm.metric} comparison could not be computed ({arm.error}).",
                       0.0, "none: no comparison", arm.variant)
    if min(arm.n, arm.control_n) < inputs.min_units:
        wait = days_to_min_units(inputs, arm)
        left = max(wait or 0.0, arm.days_left or 0.0) if wait is not None else arm.days_left
        return Outcome(
            "needs_review", "insufficient_data",
            f"Too little data to judge {arm.variant}: {min(arm.n, arm.control_n)} users in the smaller arm, "
            f"{inputs.min_units} needed per arm; {days(left)} at {inputs.units_per_day:.0f} users/day "
            f"to reach the minimum and the target power.",
            _clip(1.0 - power), "1 - power now (chance of missing an MDE-sized effect)", arm.variant, left)
    failing = [g for g in arm.guardrails if g.status == "fail"]
    if failing:
        worst = min(failing, key=lambda g: g.p_harm)
        return Outcome(
            "roll_back", "guardrail_failure",
            f"Guardrail {worst.metric} fails for {arm.variant}: {pct(worst.relative_lift)} "
            f"({'lower' if worst.lower_is_better else 'higher'} is better), beyond the {worst.margin:.0%} margin "
            f"(harmful-side bound {pct(worst.bound)}); the degradation is significant "
            f"(one-sided {inputs.kind} p = {worst.p_harm:.2g}).",
            _clip(1.0 - worst.p_harm), "1 - p(harm) of the failing guardrail", arm.variant, 0.0)
    if arm.better is True and arm.chance_to_win >= inputs.chance_threshold:
        return Outcome(
            "ship", "primary_win",
            f"{arm.variant} wins on {arm.metric}: {pct(arm.relative_lift)} ({inputs.interval_label} "
            f"{pct_interval(arm.ci)}), {inputs.p_label} = {arm.p_value:.2g}, "
            f"chance to win {prob(arm.chance_to_win)} ≥ {prob(inputs.chance_threshold)}, "
            f"no guardrail failing.",
            _clip(arm.chance_to_win), "chance to win (posterior P(treatment better))", arm.variant, 0.0)
    if arm.better is False:
        return Outcome(
            "roll_back", "primary_loss",
            f"{arm.variant} is significantly worse on {arm.metric}: {pct(arm.relative_lift)} "
            f"({inputs.interval_label} {pct_interval(arm.ci)}), {inputs.p_label} = {arm.p_value:.2g}.",
            _clip(1.0 - arm.chance_to_win), "1 - chance to win", arm.variant, 0.0)
    remaining = inputs.max_duration_days - inputs.days_observed
    cp = arm.conditional_power
    if (arm.days_left is not None and arm.days_left > max(remaining, 0.0)
            and (cp is None or cp < FUTILITY_CONDITIONAL_POWER)):
        trend = (f"; if the current {pct(arm.relative_lift)} is the true effect, the chance of significance by then "
                 f"is {prob(cp)}" if cp is not None else "")
        return Outcome(
            "needs_review", "futility",
            f"{arm.variant}: no significant effect on {arm.metric} ({pct(arm.relative_lift)}, "
            f"{inputs.p_label} = {arm.p_value:.2g}) and reaching {prob(inputs.target_power)} "
            f"{inputs.power_label} for a {inputs.mde:.1%} relative effect (the MDE) needs {days(arm.days_left)}, "
            f"beyond the {inputs.max_duration_days:.0f}-day maximum ({remaining:.1f} days remain){trend}: "
            f"stop for futility.",
            _clip(1.0 - (cp if cp is not None else power)),
            "1 - conditional power under the current trend" if cp is not None else "1 - power now",
            arm.variant, arm.days_left)
    if arm.days_left is not None and arm.days_left <= 0:
        return Outcome(
            "needs_review", "no_effect",
            f"{arm.variant}: no significant effect on {arm.metric} ({pct(arm.relative_lift)}, {inputs.interval_label} "
            f"{pct_interval(arm.ci)}) although {inputs.power_label} is {prob(power)} for a {inputs.mde:.1%} "
            f"relative effect (the MDE): "
            f"any effect is likely smaller than the MDE.",
            _clip(power), "power reached for the MDE", arm.variant, 0.0)
    if arm.better is True:  # significant but the posterior is not convincing enough
        return Outcome(
            "keep_running", "underpowered",
            f"{arm.variant} is significantly better on {arm.metric} ({pct(arm.relative_lift)}, "
            f"{inputs.p_label} = {arm.p_value:.2g}) but its chance to win {prob(arm.chance_to_win)} is below {prob(inputs.chance_threshold)}.",
            _clip(arm.chance_to_win), "chance to win", arm.variant, arm.days_left)
    return Outcome(
        "keep_running", "underpowered",
        f"{arm.variant}: no significant effect yet on {arm.metric} ({pct(arm.relative_lift)}, "
        f"{inputs.p_label} = {arm.p_value:.2g}); {inputs.power_label} now {prob(power)} for a {inputs.mde:.1%} "
        f"relative effect (the MDE), {days(arm.days_left)} to reach {prob(inputs.target_power)} at {inputs.units_per_day:.0f} users/day.",
        _clip(1.0 - power), "1 - power now (chance of missing an MDE-sized effect)", arm.variant, arm.days_left)


def decide_verdict(inputs: VerdictInputs) -> tuple[Outcome, list[Outcome]]:
    """The experiment's verdict (rules R1-R8) and each treatment arm's own verdict."""
    if inputs.srm_error or not inputs.arms:
        why = inputs.srm_error or "no treatment arm has data"
        outcome = Outcome("needs_review", "no_data", f"Nothing to analyse yet: {why}.", 0.0, "none: no data")
        return outcome, []
    per_arm = [arm_verdict(arm, inputs) for arm in inputs.arms]
    if inputs.srm_flagged:
        return Outcome(
            "needs_review", "srm_mismatch",
            f"Sample ratio mismatch: the observed split differs from the configured weights (χ² p = "
            f"{inputs.srm_p:.2g} < {SRM_RULE_THRESHOLD}); assignment or logging is broken, so no metric can be "
            f"trusted until it is explained.",
            _clip(1.0 - inputs.srm_p), "1 - SRM p-value"), per_arm
    lacking = [o for o in per_arm if o.rule_id in ("insufficient_data", "analysis_error")]
    if lacking:
        worst = max(lacking, key=lambda o: (o.rule_id == "analysis_error", o.days_left or 0.0))
        return worst, per_arm
    ships = [(o, a) for o, a in zip(per_arm, inputs.arms, strict=True) if o.verdict == "ship"]
    if ships:
        return max(ships, key=lambda pair: pair[1].chance_to_win)[0], per_arm
    rollbacks = [o for o in per_arm if o.verdict == "roll_back"]
    if rollbacks and len(rollbacks) == len(per_arm):
        return max(rollbacks, key=lambda o: (o.rule_id == "guardrail_failure", o.confidence)), per_arm
    running = [o for o in per_arm if o.verdict == "keep_running"]
    if rollbacks:
        bad = max(rollbacks, key=lambda o: o.confidence)
        left = max((o.days_left or 0.0) for o in running) if running else None
        verdict = "keep_running" if running else "needs_review"
        return Outcome(
            verdict, bad.rule_id,
            f"{bad.rule} Remove {bad.variant} from the test; the other arms continue.",
            bad.confidence, bad.confidence_basis, bad.variant, left), per_arm
    if running:
        slowest = max(running, key=lambda o: o.days_left or 0.0)
        return slowest, per_arm
    return max(per_arm, key=lambda o: o.confidence), per_arm


# ---------------------------------------------------------------- autopilot


@dataclass(frozen=True)
class AutopilotPolicy:
    environment: str
    confidence_threshold: float  # an automatic action needs at least this confidence
    max_degradation: float  # relative degradation that triggers the emergency rollback
    exploration_rate: float  # traffic share bandits spread over all arms as a floor
    min_days: float  # days of data before any non-emergency action
    min_units_per_variant: int
    allowed_actions: frozenset[str]
    min_weight_change: float = 0.05  # smaller bandit moves are not worth a registry change

    def allows(self, action: str) -> bool:
        return action in self.allowed_actions

    def as_dict(self) -> dict:
        return {"environment": self.environment, "confidence_threshold": self.confidence_threshold,
                "max_degradation": self.max_degradation, "exploration_rate": self.exploration_rate,
                "min_days": self.min_days, "min_units_per_variant": self.min_units_per_variant,
                "allowed_actions": sorted(self.allowed_actions)}


POLICIES: dict[str, AutopilotPolicy] = {
    "production": AutopilotPolicy("production", 0.85, 0.05, 0.05, 7, 1000, frozenset({"pause", "roll_back"})),
    "staging": AutopilotPolicy("staging", 0.70, 0.15, 0.15, 3, 300, frozenset({"pause", "roll_back", "reallocate"})),
    "development": AutopilotPolicy("development", 0.50, 0.25, 0.30, 1, 100,
                                   frozenset({"pause", "roll_back", "reallocate", "ship"})),
}


@dataclass(frozen=True)
class MetricHarm:
    """A primary or guardrail metric of one arm, seen as possible harm."""

    metric: str
    role: str
    variant: str
    degradation: float  # relative change in the harmful direction (positive = worse)
    p_harm: float  # one-sided, always-valid


@dataclass(frozen=True)
class AutopilotFacts:
    status: str
    verdict: Outcome
    days_observed: float
    min_arm_units: int
    harms: tuple[MetricHarm, ...]
    n_arms: int
    control: str
    alpha: float = 0.05
    bandit_weights: dict[str, float] | None = None
    current_weights: dict[str, float] | None = None
    bandit_best_probability: float | None = None


@dataclass(frozen=True)
class AutopilotChoice:
    action: str  # none | pause | roll_back | ship | reallocate | needs_human_review
    allowed: bool
    rule: str
    confidence: float
    variant: str | None = None
    weights: dict[str, float] | None = None
    breaches: tuple[MetricHarm, ...] = ()

    @property
    def should_apply(self) -> bool:
        return self.allowed and self.action in ("pause", "roll_back", "ship", "reallocate")


def policy_breaches(harms: Sequence[MetricHarm], policy: AutopilotPolicy, alpha: float) -> list[MetricHarm]:
    """Metrics degraded beyond the policy's tolerance with the harm significant (always-valid)."""
    return [h for h in harms if h.degradation > policy.max_degradation and h.p_harm < alpha]


def _remove_arm_weights(current: dict[str, float], arm: str) -> dict[str, float]:
    rest = {k: w for k, w in current.items() if k != arm}
    total = sum(rest.values()) or 1.0
    out = {k: round(w / total, 6) for k, w in rest.items()}
    first = next(iter(out))
    out[first] = round(1.0 - sum(v for k, v in out.items() if k != first), 6)
    out[arm] = 0.0
    return out


def decide_autopilot(facts: AutopilotFacts, policy: AutopilotPolicy) -> AutopilotChoice:
    """Rules A1-A8 (see the module docstring)."""
    verdict = facts.verdict
    thr = policy.confidence_threshold
    if facts.status != "running":
        return AutopilotChoice("none", True, f"A1: the experiment is {facts.status}, not running; nothing to do.", 1.0)
    if verdict.rule_id == "srm_mismatch":
        return AutopilotChoice("needs_human_review", False,
                               f"A2: sample ratio mismatch blocks automation. {verdict.rule}", verdict.confidence)
    breaches = policy_breaches(facts.harms, policy, facts.alpha)
    early = facts.days_observed < policy.min_days or facts.min_arm_units < policy.min_units_per_variant
    if breaches:
        worst = max(breaches, key=lambda h: h.degradation)
        confidence = 1.0 - worst.p_harm
        rule = (f"A3 emergency brake: {worst.metric} ({worst.role}) is {worst.degradation:.1%} worse for "
                f"{worst.variant}, beyond the {policy.environment} tolerance of {policy.max_degradation:.0%}, and the "
                f"harm is significant (always-valid p = {worst.p_harm:.2g}).")
        if facts.n_arms > 2 and facts.current_weights:
            allowed = policy.allows("roll_back")
            return AutopilotChoice("roll_back" if allowed else "needs_human_review", allowed,
                                   rule + f" Remove {worst.variant} (weight 0); the other arms continue.",
                                   confidence, worst.variant, _remove_arm_weights(facts.current_weights, worst.variant),
                                   tuple(breaches))
        # Before the policy's minimum data the experiment is paused (stopped, no winner declared);
        # after it, rolled back (concluded with the control serving everyone).
        action = "pause" if early else "roll_back"
        allowed = policy.allows(action)
        tail = (" Pause it (stop without a winner) before the minimum data is in." if early
                else " Roll back to control.")
        return AutopilotChoice(action if allowed else "needs_human_review", allowed, rule + tail, confidence,
                               worst.variant, None, tuple(breaches))
    if early:
        return AutopilotChoice(
            "none", True,
            f"A4: waiting for the {policy.environment} minimum before acting: {facts.days_observed:.1f} of "
            f"{policy.min_days:g} days, {facts.min_arm_units} of {policy.min_units_per_variant} users in the "
            f"smallest arm.", verdict.confidence)
    if verdict.verdict == "roll_back":
        allowed = policy.allows("roll_back") and verdict.confidence >= thr
        if facts.n_arms > 2 and facts.current_weights and verdict.variant:
            return AutopilotChoice(
                "roll_back" if allowed else "needs_human_review", allowed,
                f"A5: remove {verdict.variant} (weight 0): {verdict.rule}" + _gate(verdict.confidence, thr),
                verdict.confidence, verdict.variant, _remove_arm_weights(facts.current_weights, verdict.variant))
        return AutopilotChoice("roll_back" if allowed else "needs_human_review", allowed,
                               f"A5: roll back to control: {verdict.rule}" + _gate(verdict.confidence, thr),
                               verdict.confidence, verdict.variant)
    if verdict.verdict == "ship":
        if not policy.allows("ship"):
            return AutopilotChoice("needs_human_review", False,
                                   f"A6: ready to ship {verdict.variant}, but the {policy.environment} policy "
                                   f"requires a human to ship. {verdict.rule}", verdict.confidence, verdict.variant)
        allowed = verdict.confidence >= thr
        return AutopilotChoice("ship" if allowed else "needs_human_review", allowed,
                               f"A6: ship {verdict.variant}: {verdict.rule}" + _gate(verdict.confidence, thr),
                               verdict.confidence, verdict.variant)
    if verdict.verdict == "keep_running":
        proposal, current = facts.bandit_weights, facts.current_weights
        if proposal and current and policy.allows("reallocate"):
            move = max(abs(proposal[k] - current.get(k, 0.0)) for k in proposal)
            best = facts.bandit_best_probability or 0.0
            if move >= policy.min_weight_change and best >= thr:
                return AutopilotChoice(
                    "reallocate", True,
                    f"A7: keep running and rebalance by Thompson sampling: the leading arm's chance of being best is "
                    f"{prob(best)} ≥ {prob(thr)}; weights move by up to {move:.0%} (floor "
                    f"{policy.exploration_rate:.0%} spread over the arms).", best, None, dict(proposal))
        return AutopilotChoice("none", True, f"A7: keep running. {verdict.rule}", verdict.confidence)
    return AutopilotChoice("needs_human_review", False, f"A8: needs human review. {verdict.rule}", verdict.confidence,
                           verdict.variant)


def _gate(confidence: float, threshold: float) -> str:
    if confidence >= threshold:
        return ""
    return f" Confidence {prob(confidence)} is below the policy threshold {prob(threshold)}: a human must decide."
