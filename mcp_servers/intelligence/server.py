"""The Experiment Intelligence MCP server: each tool a thin typed adapter over one IntelligenceService method."""

from __future__ import annotations

from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent
from pydantic import Field

from mcp_servers.annotations import DESTRUCTIVE_WRITE, IDEMPOTENT_WRITE, READ_ONLY, WRITE
from mcp_servers.confirmation import Confirm, Reason
from mcp_servers.tool_server import ToolServer
from schemas.vocabulary import limit

from .models import (
    Alpha,
    AnalysisOptions,
    AutopilotDecision,
    Baseline,
    BehaviorPrediction,
    ExperimentAnalysis,
    ExperimentConfig,
    ExperimentPlan,
    ExperimentRef,
    InteractionScan,
    MetricName,
    OptimizationRecommendations,
    OutcomePrediction,
    PersonalizedDecision,
    PlotSummary,
    RelativeMde,
    SegmentEffects,
    TrafficAllocation,
    TrafficPerDay,
)
from .service import IntelligenceService

INSTRUCTIONS = """\
NeonBlue's Experiment Intelligence: trustworthy analysis and decisions for A/B experiments, computed
by a statistics engine (Welch and always-valid sequential tests, Bayesian chance to win, CUPED, SRM,
Holm/BH, power) from the event store's sufficient statistics. Start with analyze_experiment_performance
(verdict ship / roll_back / keep_running / needs_review with the rule that decided it), then
recommend_experiment_optimization for ranked actions. Before launching: plan_experiment (sizing) and
predict_experiment_outcome (prior from similar past experiments). allocate_traffic and run_autopilot
act under the environment's policy; every verdict, recommendation and action is written to the
registry's decisions table (list_decisions shows the inputs and reasoning). Numbers are computed;
sentences are templates over them."""

Options = Annotated[AnalysisOptions | None, Field(default=None, description="Analysis settings; omit for the defaults.")]

# Reads that append their verdict/recommendation to the audit trail (an identical one is not
# repeated) are IDEMPOTENT_WRITE; tools that act through the registry are DESTRUCTIVE_WRITE.


def build_server(service: IntelligenceService) -> MCPServer:
    """The MCP server over `service` (tools only; the service's lifetime is the caller's)."""
    mcp = ToolServer("neonblue-intelligence", instructions=INSTRUCTIONS)

    @mcp.tool(annotations=IDEMPOTENT_WRITE)
    async def analyze_experiment_performance(experiment: ExperimentRef, options: Options = None) -> ExperimentAnalysis:
        """Analyse a running or finished experiment and return a verdict with the rule that produced it.

        For each metric (primary, guardrails, secondary) and treatment arm: users, means,
        absolute and relative lift with 95% intervals (fixed and always-valid), p-values
        (Welch and sequential), multiple-testing corrected p, Bayesian chance to win and
        risk, CUPED on/off with its variance reduction, power now and days left for the
        MDE, guardrail non-inferiority status; the sample-ratio-mismatch check; the most
        similar past experiments. Verdict rules, first match: R1 SRM p<0.001 → needs_review;
        R2 an arm below the minimum sample → needs_review with days_left; R3 a guardrail
        fails non-inferiority with significant harm → roll_back; R4 primary significantly
        better and chance to win ≥ 95% → ship; R5 significantly worse → roll_back;
        R6 MDE unreachable in the maximum duration → needs_review (futility); R7 powered,
        no effect → needs_review; R8 otherwise keep_running with days_left. The verdict is
        written to the decisions audit trail. Example: {"experiment": "checkout-1step",
        "options": {"mde": 0.03, "cuped": true}}
        """
        return await service.analyze_experiment_performance(experiment, options)

    @mcp.tool(annotations=IDEMPOTENT_WRITE)
    async def recommend_experiment_optimization(experiment: ExperimentRef,
                                                options: Options = None) -> OptimizationRecommendations:
        """Concrete, ranked next actions for an experiment, each with the evidence that triggered it.

        Actions: investigate_srm (with the segment whose split departs most), roll_back or
        remove_arm, ship, stop_for_futility, review_results, extend_duration (days and users
        needed to reach the MDE), rebalance_traffic (Thompson-sampling weights). Grounded in
        the analysis and in similar successful optimization patterns from memory. Each action
        is written to the decisions audit trail (actor 'intelligence', not applied).
        Example: {"experiment": "checkout-1step"}
        """
        return await service.recommend_experiment_optimization(experiment, options)

    @mcp.tool(annotations=READ_ONLY)
    async def predict_experiment_outcome(experiment_config: ExperimentConfig) -> OutcomePrediction:
        """Before running: predicted lift from similar past experiments, chance of a significant win, size, duration.

        Finds past experiments by meaning, keeps those with results above a similarity floor,
        and builds an empirical prior over lift (similarity-weighted, with the neighbours'
        sampling noise removed from the spread). With fewer than 5 such neighbours it says
        'insufficient_history' and how many it found instead of guessing. Sample size needs
        the baseline; duration uses the stated traffic or the exposures/day ClickHouse saw
        for the similar experiments. Example: {"experiment_config": {"name": "One-step checkout",
        "hypothesis": "Fewer checkout steps raise mobile conversion", "type": "ui",
        "primary_metric": "conversion", "baseline": {"mean": 0.1}, "traffic_per_day": 4000}}
        """
        return await service.predict_experiment_outcome(experiment_config)

    @mcp.tool(annotations=READ_ONLY)
    async def plan_experiment(
        goal: Annotated[str, Field(min_length=3, max_length=2000, description="What the change should achieve, in words.")],
        baseline: Annotated[Baseline, Field(description="Primary metric in control: a rate {mean: 0.1} or {mean, sd}.")],
        mde: Annotated[RelativeMde, Field(description="Smallest relative effect worth detecting (0.05 = 5%).")],
        traffic_per_day: TrafficPerDay,
        variants: Annotated[int, Field(ge=2, le=10, description="Arms including control.")] = 2,
        primary_metric: Annotated[MetricName | None, Field(default=None, description="Override the metric name.")] = None,
        alpha: Alpha = 0.05,
        target_power: Annotated[float, Field(gt=0.5, lt=1)] = 0.8,
    ) -> ExperimentPlan:
        """Plan an experiment for a goal: sample size, duration, variants, primary metric and guardrails.

        Returns the units per variant (fixed-horizon and always-valid), days at the stated
        traffic, the MDE reachable after 1-6 weeks, metric and guardrail choices with why,
        similar past experiments, and a draft ready for postgres create_experiment.
        Example: {"goal": "raise mobile checkout conversion with a one-step checkout",
        "baseline": {"mean": 0.08}, "mde": 0.05, "traffic_per_day": 6000}
        """
        return await service.plan_experiment(goal, baseline, mde, traffic_per_day, variants=variants,
                                             primary_metric=primary_metric, alpha=alpha, target_power=target_power)

    @mcp.tool(annotations=DESTRUCTIVE_WRITE)
    async def allocate_traffic(
        experiment: ExperimentRef,
        dry_run: Annotated[bool, Field(description="Propose and audit, but change nothing (default: apply when the policy allows).")] = False,
        confirm: Confirm = False,
        reason: Reason = None,
    ) -> TrafficAllocation:
        """Thompson-sampling traffic weights on the primary metric (floor = exploration rate / arms).

        Applied via set_variant_weights (actor 'autopilot') only when the environment policy
        allows reallocation, the experiment runs, there is no SRM, the minimum days and users
        are in and the change is at least 5 points; otherwise says why not. Audited either way.
        Applying asks the user first (or needs confirm=true with a reason).
        Example: {"experiment": "pricing-page-3way", "dry_run": true}
        """
        return await service.allocate_traffic(experiment, dry_run, confirm=confirm, reason=reason)

    @mcp.tool(annotations=IDEMPOTENT_WRITE)
    async def evaluate_guardrails(experiment: ExperimentRef, options: Options = None) -> AutopilotDecision:
        """Check guardrails and primary-metric harm against the environment policy; say what the autopilot would do.

        Per metric and arm: degradation, non-inferiority status, one-sided always-valid
        p(harm) and whether it breaches the policy's max degradation. Nothing is changed;
        a recommended action is written to the audit trail. Example: {"experiment": "checkout-1step"}
        """
        return await service.evaluate_guardrails(experiment, options)

    @mcp.tool(annotations=DESTRUCTIVE_WRITE)
    async def run_autopilot(
        experiment: ExperimentRef,
        dry_run: Annotated[bool, Field(description="Decide and audit, but change nothing.")] = False,
        confirm: Confirm = False,
        reason: Reason = None,
    ) -> AutopilotDecision:
        """Let the guarded autopilot act on an experiment under this environment's policy.

        Policies: production (confidence 0.85, max degradation 5%, exploration 5%, ≥7 days,
        ≥1000 users/arm; may pause or roll back only), staging (0.70, 15%, 15%, ≥3 days,
        ≥300; may also reallocate), development (0.50, 25%, 30%, ≥1 day, ≥100; may also ship).
        Order: not running → nothing; SRM → human review; a metric degraded beyond the policy
        with significant harm → roll back (pause before the minimum data); before the minimum
        → wait; then act on the verdict if allowed and confident enough, else human review.
        Actions go through the registry (stop_experiment / set_variant_weights) and every
        decision is audited (actor 'autopilot'). An action that changes traffic or stops the
        experiment asks the user first (or needs confirm=true with a reason); a dry run or a
        decision to wait never asks. Example: {"experiment": "checkout-1step"}
        """
        return await service.run_autopilot(experiment, dry_run, confirm=confirm, reason=reason)

    @mcp.tool(annotations=READ_ONLY)
    async def predict_user_behavior(
        user_id: Annotated[str | None, Field(default=None, max_length=256, description="Use this user's latest stored journey.")] = None,
        steps: Annotated[list[str] | None, Field(default=None, max_length=100, description="Or the current steps, in order.")] = None,
        device_type: Annotated[str | None, Field(default=None, max_length=50)] = None,
        limit: Annotated[int, limit(50, "At most this many neighbouring journeys vote (nearest first).")] = 50,
    ) -> BehaviorPrediction:
        """Likely next action and outcome of a user, from the most similar stored journeys of other users.

        k-nearest neighbours over journey embeddings: of the 100 nearest stored journeys, those
        that went through exactly the same steps vote (weighted by similarity); with fewer than 3
        of them, the nearest ones vote, aligned on the current step. Measured on 300 held-out
        generated journeys with 1000 stored (bench/bench_intelligence.py): cut before the last
        step, next action 0.98 and outcome 0.83 accuracy (majority guess 0.22 and 0.31); cut at a
        uniform position, session end included, 0.65 and 0.65 (majority guess 0.19 and 0.31).
        Example: {"steps": ["landing_page", "pricing"], "device_type": "mobile"}
        """
        return await service.predict_user_behavior(user_id, steps, device_type=device_type, n_neighbors=limit)

    @mcp.tool(annotations=READ_ONLY)
    async def analyze_segment_effects(
        experiment: ExperimentRef,
        metric: Annotated[MetricName | None, Field(default=None, description="Default: the primary metric.")] = None,
        correction: Annotated[Literal["holm", "benjamini-hochberg"], Field(
            description="Across segments: holm (family-wise error) or benjamini-hochberg (false discovery rate).")] = "holm",
        alpha: Alpha = 0.05,
        min_users: Annotated[int, Field(ge=2, le=100_000, description="Users per arm a segment needs to be tested.")] = 100,
    ) -> SegmentEffects:
        """Who responds differently: the treatment effect per segment (device, country, source, plan) and
        heterogeneity flags.

        Per treatment arm vs control: each segment's effect (treatment − control mean) with its
        interval and p, adjusted across all segments (Holm or BH); a z-test of the segment's effect
        against the rest of its dimension (Bonferroni across segments) and Cochran's Q with I² per
        dimension; `differs` flags a segment when both its test and its dimension's Q are significant.
        Sentences in `narrative` are templates over those numbers.
        Example: {"experiment": "checkout-1step", "correction": "benjamini-hochberg"}
        """
        return await service.analyze_segment_effects(experiment, metric, correction=correction, alpha=alpha,
                                                     min_users=min_users)

    @mcp.tool(annotations=READ_ONLY)
    async def find_experiment_interactions(
        refresh: Annotated[bool, Field(description="Scan the running experiments now (default); false: return "
                                       "the flags of the latest scan and analyses without reading the stores.")] = True,
    ) -> InteractionScan:
        """Find running experiments that interact: pairs sharing users whose effects do not add up.

        For every running experiment and every other one it shares users with: the 2x2 contrast
        (A's effect with B's treatment minus A's effect with B's control) on A's primary metric,
        Holm across the pairs at 1%. Returns the flagged pairs with their contrasts and sentences.
        Example: {"refresh": true}
        """
        return await service.find_experiment_interactions(refresh)

    @mcp.tool(annotations=WRITE)
    async def personalize_experiment_experience(
        experiment: ExperimentRef,
        user_id: Annotated[str | None, Field(default=None, min_length=1, max_length=256, description=(
            "The user to serve; their decision is recorded as their exposure. Omit for a preview (nothing recorded)."))] = None,
        context: Annotated[dict[str, Annotated[str, Field(min_length=1, max_length=64)]] | None, Field(
            default=None, max_length=4, description='The user\'s segment: any of device, country, source, plan, '
            'e.g. {"device": "mobile"}.')] = None,
    ) -> PersonalizedDecision:
        """Choose the variant for one user of a personalised experiment with a contextual bandit, and say why.

        The experiment must run and carry the registry tag 'personalized' (optionally
        'personalize:<device|country|source|plan>', default device). Thompson sampling over each
        variant's conversion rate in the user's context, learned from the event store and pooled
        toward the variant's global rate, inside the environment's exploration floor. The decision
        is written as the user's exposure (one per user: a returning user keeps their variant), so
        the usual analysis sees it. Without the context attribute, the user's latest stored
        journey supplies it (device_type, traffic_source). Returns the variant, posterior means,
        P(best) and users per variant in the context, and the sentence that explains it.
        Example: {"experiment": "onboarding-personalised", "user_id": "u-42", "context": {"device": "mobile"}}
        """
        return await service.personalize_experiment_experience(experiment, user_id, context)

    @mcp.tool(annotations=READ_ONLY)
    async def plot_experiment(
        experiment: ExperimentRef,
        metric: Annotated[MetricName | None, Field(default=None, description="Default: the primary metric.")] = None,
    ) -> Annotated[CallToolResult, PlotSummary]:
        """A PNG chart: cumulative relative lift per treatment with its 95% always-valid band over time,
        and the daily metric per variant (with a short forecast). Returns the image and the plotted numbers.
        Example: {"experiment": "checkout-1step", "metric": "conversion"}
        """
        import base64

        png, summary = await service.plot_experiment(experiment, metric)
        finals = ", ".join(f"{k}: {v * 100:+.1f}%" if v is not None else f"{k}: n/a" for k, v in summary.final_lift.items())
        text = f"Cumulative lift of {summary.metric} vs {summary.control} ({summary.band}); last: {finals}."
        return CallToolResult(
            content=[ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"),
                     TextContent(type="text", text=text)],
            structured_content=summary.model_dump(mode="json"))

    return mcp
