"""The pure parts as specifications: verdict rules, autopilot policies, empirical priors, statistic
mapping, SRM under weight changes, and kNN voting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mcp_servers.intelligence import analysis, behavior, priors
from mcp_servers.intelligence.decisions import (
    POLICIES,
    ArmEvidence,
    AutopilotFacts,
    GuardrailEvidence,
    MetricHarm,
    Outcome,
    VerdictInputs,
    decide_autopilot,
    decide_verdict,
)
from mcp_servers.stats import (
    ProportionStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)


def arm(variant: str = "treatment", *, n: int = 20_000, lift: float = 0.0, p: float = 0.5, better: bool | None = None,
        chance: float = 0.5, power: float = 0.4, days_left: float | None = 10.0,
        guardrails: tuple[GuardrailEvidence, ...] = ()) -> ArmEvidence:
    return ArmEvidence(variant, n, n, "conversion", lift, (lift - 0.02, lift + 0.02), p, better, chance, power,
                       days_left, guardrails)


def inputs(*arms: ArmEvidence, srm_p: float = 0.5, min_units: int = 100, days: float = 14.0) -> VerdictInputs:
    shares = {"control": 1 / (len(arms) + 1), **{a.variant: 1 / (len(arms) + 1) for a in arms}}
    return VerdictInputs(arms=arms, srm_p=srm_p, srm_flagged=srm_p < 0.001, srm_error=None, min_units=min_units,
                         units_per_day=2000.0, days_observed=days, arm_shares=shares)


FAILING = GuardrailEvidence("error_rate", "fail", 0.4, 0.05, 0.25, 1e-6, True)
PASSING = GuardrailEvidence("error_rate", "pass", 0.0, 0.05, 0.03, 0.6, True)
WIN = {"lift": 0.1, "p": 1e-6, "better": True, "chance": 0.9999, "power": 0.99, "days_left": 0.0}


class TestVerdictRules:
    def test_srm_blocks_everything_first(self) -> None:
        verdict, _ = decide_verdict(inputs(arm(**WIN), srm_p=1e-9))
        assert (verdict.verdict, verdict.rule_id) == ("needs_review", "srm_mismatch")
        assert verdict.confidence == pytest.approx(1 - 1e-9)

    def test_too_little_data_comes_before_guardrails_and_says_how_long(self) -> None:
        verdict, _ = decide_verdict(inputs(arm(n=400, guardrails=(FAILING,)), min_units=5000))
        assert (verdict.verdict, verdict.rule_id) == ("needs_review", "insufficient_data")
        # (5000 - 400) users at 2000/day x 1/2 share = 4.6 days at least.
        assert verdict.days_left >= 4.6

    def test_a_failing_guardrail_rolls_back_even_a_winner(self) -> None:
        verdict, _ = decide_verdict(inputs(arm(**WIN, guardrails=(FAILING,))))
        assert (verdict.verdict, verdict.rule_id) == ("roll_back", "guardrail_failure")
        assert verdict.confidence == pytest.approx(1 - 1e-6)
        assert "error_rate" in verdict.rule and "+40.0%" in verdict.rule

    def test_a_significant_win_with_a_convincing_posterior_ships(self) -> None:
        verdict, _ = decide_verdict(inputs(arm(**WIN, guardrails=(PASSING,))))
        assert (verdict.verdict, verdict.rule_id, verdict.variant) == ("ship", "primary_win", "treatment")
        assert verdict.confidence == 0.9999 and verdict.confidence_basis.startswith("chance to win")

    def test_a_significant_loss_rolls_back(self) -> None:
        verdict, _ = decide_verdict(inputs(arm(lift=-0.1, p=1e-5, better=False, chance=0.001)))
        assert (verdict.verdict, verdict.rule_id) == ("roll_back", "primary_loss")
        assert verdict.confidence == pytest.approx(0.999)

    def test_futility_no_effect_and_underpowered(self) -> None:
        futile, _ = decide_verdict(inputs(arm(days_left=100.0, power=0.1)))
        assert (futile.verdict, futile.rule_id) == ("needs_review", "futility")
        powered, _ = decide_verdict(inputs(arm(days_left=0.0, power=0.85)))
        assert (powered.verdict, powered.rule_id, powered.confidence) == ("needs_review", "no_effect", 0.85)
        running, _ = decide_verdict(inputs(arm(days_left=12.0, power=0.3)))
        assert (running.verdict, running.rule_id, running.days_left) == ("keep_running", "underpowered", 12.0)
        assert running.confidence == pytest.approx(0.7)

    def test_futility_needs_a_low_conditional_power_too(self) -> None:
        # The MDE is out of reach in time for both arms; only the flat one is hopeless.
        flat = ArmEvidence("treatment", 20_000, 20_000, "conversion", 0.002, (-0.02, 0.024), 0.8, None, 0.55, 0.1,
                           100.0, conditional_power=0.04)
        verdict, _ = decide_verdict(inputs(flat))
        assert (verdict.verdict, verdict.rule_id) == ("needs_review", "futility")
        assert verdict.confidence == pytest.approx(0.96) and "chance of significance by then is 4.0%" in verdict.rule
        promising = ArmEvidence("treatment", 20_000, 20_000, "conversion", 0.09, (-0.004, 0.18), 0.06, None, 0.97,
                                0.1, 100.0, conditional_power=0.72)
        verdict, _ = decide_verdict(inputs(promising))
        assert (verdict.verdict, verdict.rule_id) == ("keep_running", "underpowered")

    def test_several_arms_ship_the_best_and_remove_a_harmful_one(self) -> None:
        good = arm("t2", **{**WIN, "chance": 0.99999})
        verdict, per_arm = decide_verdict(inputs(arm("t1", **WIN), good, arm("t3", guardrails=(FAILING,))))
        assert (verdict.verdict, verdict.variant) == ("ship", "t2")
        assert [o.verdict for o in per_arm] == ["ship", "ship", "roll_back"]
        verdict, _ = decide_verdict(inputs(arm("t1", days_left=5.0), arm("t2", guardrails=(FAILING,))))
        assert (verdict.verdict, verdict.variant) == ("keep_running", "t2") and "Remove t2" in verdict.rule
        verdict, _ = decide_verdict(inputs(arm("t1", guardrails=(FAILING,)), arm("t2", guardrails=(FAILING,))))
        assert verdict.verdict == "roll_back"

    def test_each_rule_names_the_statistics_it_read(self) -> None:
        # The decision p and interval are always-valid by default; with several arms the p is Holm-adjusted.
        ship, _ = decide_verdict(inputs(arm(**WIN)))
        assert "(always-valid 95% interval +8.0% to +12.0%), always-valid p = 1e-06," in ship.rule
        multi = replace(inputs(arm("t1", **WIN), arm("t2", days_left=12.0)), correction="holm")
        _, per_arm = decide_verdict(multi)
        assert "always-valid p (Holm) = 1e-06" in per_arm[0].rule
        assert ("always-valid p (Holm) = 0.5); always-valid power now 40.0% for a 5.0% relative effect (the MDE)"
                in per_arm[1].rule)
        fixed, _ = decide_verdict(replace(inputs(arm(**WIN)), sequential=False, alpha=0.1))
        assert "(fixed-horizon 90% interval +8.0% to +12.0%), fixed-horizon p = 1e-06" in fixed.rule
        guard, _ = decide_verdict(inputs(arm(guardrails=(FAILING,))))
        assert "(one-sided always-valid p = 1e-06)" in guard.rule


def facts(verdict: Outcome, *, status: str = "running", days: float = 14.0, units: int = 20_000,
          harms: tuple[MetricHarm, ...] = (), arms: int = 2, **kw) -> AutopilotFacts:
    weights = {"control": 0.5, "treatment": 0.5} if arms == 2 else {"control": 0.34, "t1": 0.33, "t2": 0.33}
    return AutopilotFacts(status=status, verdict=verdict, days_observed=days, min_arm_units=units, harms=harms,
                          n_arms=arms, control="control", current_weights=weights, **kw)


SHIP = Outcome("ship", "primary_win", "treatment wins", 0.999, "chance to win", "treatment", 0.0)
ROLLBACK = Outcome("roll_back", "guardrail_failure", "error_rate fails", 0.9999, "1 - p(harm)", "treatment", 0.0)
KEEP = Outcome("keep_running", "underpowered", "not yet", 0.6, "1 - power", "treatment", 10.0)
HARM = MetricHarm("error_rate", "guardrail", "treatment", 0.4, 1e-5)


class TestAutopilotPolicies:
    def test_policies_follow_the_environment_settings(self) -> None:
        prod, staging, dev = POLICIES["production"], POLICIES["staging"], POLICIES["development"]
        assert (prod.confidence_threshold, prod.max_degradation, prod.exploration_rate) == (0.85, 0.05, 0.05)
        assert (staging.confidence_threshold, staging.max_degradation, staging.exploration_rate) == (0.70, 0.15, 0.15)
        assert (dev.confidence_threshold, dev.max_degradation, dev.exploration_rate) == (0.50, 0.25, 0.30)
        assert not prod.allows("ship") and not prod.allows("reallocate") and prod.allows("roll_back")
        assert staging.allows("reallocate") and not staging.allows("ship") and dev.allows("ship")

    def test_shipping_is_automatic_only_where_allowed(self) -> None:
        prod = decide_autopilot(facts(SHIP), POLICIES["production"])
        assert prod.action == "needs_human_review" and not prod.should_apply
        dev = decide_autopilot(facts(SHIP), POLICIES["development"])
        assert dev.action == "ship" and dev.should_apply and dev.variant == "treatment"

    def test_nothing_happens_before_the_minimum_or_when_not_running(self) -> None:
        waiting = decide_autopilot(facts(SHIP, days=2.0), POLICIES["production"])
        assert waiting.action == "none" and "2.0 of 7 days" in waiting.rule
        stopped = decide_autopilot(facts(ROLLBACK, status="stopped"), POLICIES["development"])
        assert stopped.action == "none"

    def test_the_emergency_brake_pauses_early_and_rolls_back_later(self) -> None:
        early = decide_autopilot(facts(KEEP, days=1.0, units=300, harms=(HARM,)), POLICIES["production"])
        assert early.action == "pause" and early.should_apply and early.rule.startswith("A3")
        later = decide_autopilot(facts(KEEP, harms=(HARM,)), POLICIES["production"])
        assert later.action == "roll_back"
        small = MetricHarm("error_rate", "guardrail", "treatment", 0.10, 1e-5)  # within development's 25%
        assert decide_autopilot(facts(KEEP, harms=(small,)), POLICIES["development"]).action == "none"
        assert decide_autopilot(facts(KEEP, harms=(small,)), POLICIES["production"]).action == "roll_back"
        three = decide_autopilot(facts(KEEP, harms=(MetricHarm("error_rate", "guardrail", "t1", 0.4, 1e-5),), arms=3),
                                 POLICIES["production"])
        assert three.action == "roll_back" and three.weights["t1"] == 0.0  # remove the arm, keep the test
        assert three.weights["t2"] == pytest.approx(0.33 / 0.67, abs=1e-5) and sum(three.weights.values()) == pytest.approx(1)

    def test_low_confidence_and_review_verdicts_go_to_a_human(self) -> None:
        weak = Outcome("roll_back", "primary_loss", "worse", 0.6, "1 - chance to win", "treatment", 0.0)
        assert decide_autopilot(facts(weak), POLICIES["production"]).action == "needs_human_review"
        assert decide_autopilot(facts(weak), POLICIES["development"]).action == "roll_back"
        srm = Outcome("needs_review", "srm_mismatch", "srm", 0.99, "1 - SRM p")
        assert decide_autopilot(facts(srm), POLICIES["development"]).action == "needs_human_review"

    def test_bandit_reallocation_needs_permission_a_leader_and_a_real_move(self) -> None:
        kw = {"bandit_weights": {"control": 0.1, "treatment": 0.9}, "bandit_best_probability": 0.95}
        assert decide_autopilot(facts(KEEP, **kw), POLICIES["staging"]).action == "reallocate"
        assert decide_autopilot(facts(KEEP, **kw), POLICIES["production"]).action == "none"
        tiny = {"bandit_weights": {"control": 0.48, "treatment": 0.52}, "bandit_best_probability": 0.95}
        assert decide_autopilot(facts(KEEP, **tiny), POLICIES["staging"]).action == "none"


class TestEmpiricalPrior:
    def results(self, lifts: list[float], similarity: float = 0.7, p: float | None = 0.05) -> list[priors.PastResult]:
        return [priors.PastResult(f"e{i}", similarity, lift, p) for i, lift in enumerate(lifts)]

    def test_the_prior_mean_follows_the_neighbours(self) -> None:
        up = priors.empirical_prior(priors.weigh(self.results([0.08, 0.1, 0.06, 0.09, 0.07])))
        down = priors.empirical_prior(priors.weigh(self.results([-0.08, -0.1, -0.06, -0.09, -0.07])))
        assert up.mean == pytest.approx(0.08) and down.mean == pytest.approx(-0.08)

    def test_noise_is_removed_from_the_spread(self) -> None:
        lifts = [0.02, 0.06, 0.1, 0.14, 0.18]
        noisy = priors.empirical_prior(priors.weigh(self.results(lifts, p=0.2)))  # large standard errors
        precise = priors.empirical_prior(priors.weigh(self.results(lifts, p=1e-8)))
        assert noisy.tau < precise.tau <= precise.observed_sd
        assert noisy.mean_sampling_sd > precise.mean_sampling_sd

    def test_far_neighbours_and_missing_results_do_not_count(self) -> None:
        weighted = priors.weigh([priors.PastResult("near", 0.8, 0.1, 0.01), priors.PastResult("far", 0.2, -0.5, 0.01),
                                 priors.PastResult("open", 0.9, None, None)])
        assert [w.used for w in weighted] == [True, False, False]
        assert "below the floor" in weighted[1].why_not and "no result" in weighted[2].why_not

    def test_lower_is_better_neighbours_count_by_improvement(self) -> None:
        weighted = priors.weigh([priors.PastResult("churn", 0.8, -0.1, 0.01, "lower")])
        assert weighted[0].improvement == pytest.approx(0.1)

    def test_standard_error_from_p_and_assurance(self) -> None:
        assert priors.standard_error(0.1, 0.05) == pytest.approx(0.1 / 1.959964, rel=1e-5)
        assert priors.standard_error(0.1, 1.0) is None
        high = priors.assurance(0.08, 0.02, 0.02, 0.05)
        low = priors.assurance(0.0, 0.02, 0.02, 0.05)
        assert high > 0.9 > 0.1 > low


class TestStatisticMapping:
    def test_zero_one_metrics_become_proportions(self) -> None:
        assert isinstance(analysis.mean_statistic(100, 12.0, 12.0, 12), ProportionStatistic)
        assert isinstance(analysis.mean_statistic(100, 30.0, 50.0, 12), SampleMeanStatistic)

    def test_cuped_rows_become_regression_adjusted_statistics(self) -> None:
        row = {"n": 100, "sum": 12.0, "sum_squares": 12.0, "users_with_metric": 12, "pre_sum": 10.0,
               "pre_sum_squares": 10.0, "post_pre_sum_of_products": 7.0, "kind": "mean"}
        adjusted, raw = analysis.to_statistics(row, cuped=True)
        assert isinstance(adjusted, RegressionAdjustedStatistic) and isinstance(raw, ProportionStatistic)
        without_pre = {**row, "pre_sum": 0.0, "pre_sum_squares": 0.0, "post_pre_sum_of_products": 0.0}
        assert isinstance(analysis.to_statistics(without_pre, cuped=True)[0], ProportionStatistic)

    def test_srm_expects_each_periods_split_after_a_weight_change(self) -> None:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        change = (t0 + timedelta(days=7), {"control": 0.2, "treatment": 0.8})
        assert analysis.weights_at(t0, {"control": 0.5, "treatment": 0.5}, [change]) == {"control": 0.5, "treatment": 0.5}
        assert analysis.weights_at(t0 + timedelta(days=8), {"control": 0.5, "treatment": 0.5}, [change])["treatment"] == 0.8
        periods = [({"control": 5000, "treatment": 5000}, {"control": 0.5, "treatment": 0.5}),
                   ({"control": 2000, "treatment": 8000}, {"control": 0.2, "treatment": 0.8})]
        expected = analysis.expected_counts(periods, ["control", "treatment"])
        assert expected == [7000.0, 13000.0]
        assert not analysis.srm_from_counts([7020, 12980], expected).flagged
        assert analysis.srm_from_counts([7020, 12980], [10000.0, 10000.0]).flagged  # ignoring the change

    def test_the_segment_driving_an_srm_is_found(self) -> None:
        rows = [{"dimension": "device", "segment": "mobile", "variant": "treatment", "control_users": 4000,
                 "variant_users": 6000},
                {"dimension": "device", "segment": "desktop", "variant": "treatment", "control_users": 5010,
                 "variant_users": 4990}]
        ranked = analysis.segment_srm(rows, "control", {"control": 0.5, "treatment": 0.5})
        assert ranked[0]["segment"] == "mobile" and ranked[0]["p_value"] < 1e-10


class TestJourneyVotes:
    def test_the_next_step_aligns_on_the_current_position(self) -> None:
        assert behavior.next_step(["home", "product"], ["home", "product", "cart", "product", "exit"]) == "cart"
        assert behavior.next_step(["home", "cart", "product"], ["home", "product", "cart", "product", "exit"]) == "exit"
        assert behavior.next_step(["home", "pricing"], ["home", "product"]) is None
        assert behavior.next_step(["home", "product"], ["home", "product"]) == behavior.END

    def test_votes_are_weighted_by_similarity(self) -> None:
        near = behavior.NeighbourJourney(("a", "b", "c"), "won", 0.9)
        far = [behavior.NeighbourJourney(("a", "b", "d"), "lost", 0.2)] * 2
        votes = behavior.next_step_votes(["a", "b"], [near, *far])
        assert votes[0].label == "c" and votes[0].probability == pytest.approx(0.9 / 1.3)
        assert behavior.outcome_votes([near, *far])[0].label == "won"
