"""allocate_traffic: Thompson-sampling weights on the primary metric, applied through the registry when the
policy allows (the same proposal feeds recommendations and the autopilot)."""

from __future__ import annotations

import hashlib

from mcp_servers import stats
from mcp_servers.confirmation import require_confirmation, weights_change

from . import analysis as calc
from .base import ACTOR, AUTOPILOT_ACTOR
from .models import AnalysisOptions, TrafficAllocation
from .performance import PerformanceAnalysis
from .readout import Analysed, normalised_weights, policy_view

BANDIT_MIN_UNITS = 100


class TrafficAllocator(PerformanceAnalysis):
    def _bandit(self, a: Analysed) -> stats.BanditResult:
        primary = a.specs[0]
        arms = list(a.weights)
        rows = [a.rows.get((v, primary.name)) for v in arms]
        total = sum(int(r["n"]) for r in rows if r)
        if any(r is None for r in rows):
            return stats.BanditResult(tuple(a.weights.values()), None, (), (), False,
                                      "not every arm has exposed users yet", 0)
        statistics = [calc.to_statistics(r, cuped=False)[1] for r in rows]  # type: ignore[arg-type]
        seed = int(hashlib.sha256(f"{a.key}:{total}".encode()).hexdigest()[:8], 16)
        return stats.thompson_weights(statistics, seed=seed, min_weight=self.policy.exploration_rate / len(arms),
                                      min_n=BANDIT_MIN_UNITS, lower_is_better=primary.direction == "lower",
                                      current_weights=list(a.weights.values()))

    async def allocate_traffic(self, experiment_id: str, dry_run: bool = False, *, confirm: bool = False,
                               reason: str | None = None) -> TrafficAllocation:
        """Thompson-sampling weights on the primary metric; applied through the registry when the policy allows
        and the user confirmed (`confirm` with a `reason`, see `mcp_servers.confirmation`)."""
        a = await self._analyze(experiment_id, AnalysisOptions(record_decision=False, similar_experiments=0))
        policy = self.policy
        bandit = self._bandit(a)
        proposal = normalised_weights(dict(zip(a.weights, bandit.weights, strict=True)))
        best = dict(zip(a.weights, bandit.best_arm_probabilities, strict=True)) if bandit.best_arm_probabilities else None
        move = max(abs(proposal[k] - a.weights[k]) for k in proposal)
        min_arm = min(v.users for v in a.result.variants)
        status = a.experiment["status"]
        reasons = []
        if dry_run:
            reasons.append("dry_run=true (proposal only)")
        if not policy.allows("reallocate"):
            reasons.append(f"the {policy.environment} policy does not allow automatic reallocation")
        if status != "running":
            reasons.append(f"the experiment is {status}")
        if a.result.srm.flagged:
            reasons.append("sample ratio mismatch: traffic is not moved on untrustworthy data")
        if not bandit.updated:
            reasons.append(f"the posterior is not usable yet ({bandit.reason or bandit.error})")
        if a.result.days_observed < policy.min_days or min_arm < policy.min_units_per_variant:
            reasons.append(f"below the policy minimum ({a.result.days_observed:.1f}/{policy.min_days:g} days, "
                           f"{min_arm}/{policy.min_units_per_variant} users in the smallest arm)")
        if move < policy.min_weight_change:
            reasons.append(f"the largest change ({move:.1%}) is below {policy.min_weight_change:.0%}")
        applied = False
        if not reasons:
            # Applying moves the traffic of a running experiment: the user confirms first (nothing is recorded
            # before they do).
            require_confirmation("allocate_traffic", (
                f"Apply the Thompson-sampling allocation to running experiment '{a.key}': "
                f"{weights_change(a.weights, proposal)} (on {a.specs[0].name}, P(best) "
                + ", ".join(f"{k} {v:.2f}" for k, v in (best or {}).items()) + "). Users already assigned keep "
                "their variant; new users follow the new weights."), confirm, reason)
            await self.peers.postgres("set_variant_weights", experiment=a.key, weights=proposal,
                                      actor=AUTOPILOT_ACTOR, confirm=True,
                                      reason=f"Thompson sampling on {a.specs[0].name}: P(best) {best}. "
                                             f"Confirmed: {reason}")
            applied = True
            why = (f"Applied: Thompson sampling on {a.specs[0].name} moves up to {move:.0%} of traffic "
                   f"(floor {policy.exploration_rate / len(a.weights):.1%} per arm).")
        else:
            why = "Not applied: " + "; ".join(reasons) + "."
        decision_id = await self._record(
            a.key, "reallocate_weights" if applied else "recommend_reallocate_weights",
            f"{why} Current {a.weights}, proposed {proposal}, P(best) {best}.",
            {"current_weights": a.weights, "proposed_weights": proposal, "best_arm_probabilities": best,
             "seed": bandit.seed, "metric": a.specs[0].name, "users": {v.key: v.users for v in a.result.variants},
             "policy": policy.as_dict(), "confirmed_reason": reason if applied else None},
            max(best.values()) if best else None, AUTOPILOT_ACTOR if applied else ACTOR, applied)
        return TrafficAllocation(
            experiment_key=a.key, metric=a.specs[0].name, current_weights=a.weights, proposed_weights=proposal,
            best_arm_probabilities=best, updated=bandit.updated, reason=bandit.reason or bandit.error,
            seed=bandit.seed, min_weight=policy.exploration_rate / len(a.weights), applied=applied, why=why,
            policy=policy_view(policy), decision_id=decision_id)
