"""Typed inputs and outputs of the Experiment Intelligence server (tool schemas and structuredContent).

Conventions: lifts are fractions (0.05 = +5%); a relative lift is
(treatment − control) / |control| on the metric's own scale, so for a
lower-is-better metric a negative lift is an improvement. Intervals are
[low, high] pairs; a one-sided bound that is unbounded is null.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.vocabulary import ExperimentRef, MetricName  # noqa: F401  (the one vocabulary)

Verdict = Literal["ship", "roll_back", "keep_running", "needs_review"]
Direction = Literal["higher", "lower"]
MetricRole = Literal["primary", "secondary", "guardrail"]
GuardrailStatus = Literal["pass", "fail", "inconclusive", "error"]
Environment = Literal["production", "staging", "development"]
AutopilotAction = Literal["none", "pause", "roll_back", "ship", "reallocate", "needs_human_review"]

Interval = tuple[float | None, float | None]

# Magnitudes that cannot be real. Inputs outside are refused with the reason; a plan that
# would run longer than MAX_PLAN_DAYS is reported as infeasible instead of as a number.
MIN_TRAFFIC_PER_DAY = 1.0  # users entering the experiment per day
MAX_TRAFFIC_PER_DAY = 1e10  # more than everyone on Earth, every day
MIN_MDE = 1e-4  # a 0.01% relative effect
MAX_MDE = 10.0  # +1000%
MIN_ALPHA = 1e-6
MAX_METRIC_MAGNITUDE = 1e12  # |mean| and sd of a per-user metric
MIN_CV, MAX_CV = 1e-6, 1e6  # sd / |mean| of a per-user metric
MAX_PLAN_DAYS = 3650  # ten years

Alpha = Annotated[float, Field(ge=MIN_ALPHA, lt=0.5, description="Significance level (two-sided).")]
RelativeMde = Annotated[float, Field(ge=MIN_MDE, le=MAX_MDE, description="Relative effect (0.05 = 5%), 0.0001..10.")]
TrafficPerDay = Annotated[
    float, Field(ge=MIN_TRAFFIC_PER_DAY, le=MAX_TRAFFIC_PER_DAY, description="Users per day entering the experiment.")
]


class _Input(BaseModel):
    # NaN and ±inf are never an input: every float must be a real number.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------- analysis


class AnalysisOptions(_Input):
    """How to analyse; every field has a default, so {} is a full analysis."""

    alpha: Alpha = 0.05
    cuped: bool = Field(default=True, description="Adjust with the pre-period covariate (CUPED) when one exists.")
    cuped_lookback_days: int = Field(default=14, ge=1, le=365, description="Length of the CUPED pre-period.")
    sequential: bool = Field(
        default=True,
        description="Decide on always-valid (sequential) p-values, safe however often results are read. "
        "false: decide on fixed-horizon p-values (valid only if read once, at the planned sample size).",
    )
    multiple_testing: Literal["holm", "benjamini-hochberg", "none"] = Field(
        default="holm", description="Correction across treatment arms (primary) and arms x secondary metrics."
    )
    mde: float = Field(
        default=0.05, ge=MIN_MDE, le=MAX_MDE,
        description="Relative minimum detectable effect the experiment should be able to see (0.05 = 5%): "
        "drives power, days left and futility.",
    )
    target_power: float = Field(default=0.8, gt=0.5, lt=1)
    chance_to_win_threshold: float = Field(
        default=0.95, gt=0.5, lt=1, description="Posterior chance to win a ship verdict needs (with significance)."
    )
    default_guardrail_margin: float = Field(
        default=0.05, ge=MIN_MDE, le=1,
        description="Tolerated relative degradation of a guardrail that declares no non_inferiority_margin.",
    )
    max_duration_days: float = Field(
        default=56, ge=1, le=365, description="Longest the experiment may run; an MDE not reachable by then is futile."
    )
    start_date: date | None = Field(default=None, description="First day (YYYY-MM-DD, UTC) of the window; default: first exposure.")
    end_date: date | None = Field(default=None, description="Last day (inclusive); default: the last event.")
    similar_experiments: int = Field(default=5, ge=0, le=20, description="Past experiments to return from memory.")
    segment_effects: bool = Field(
        default=True, description="Also test the primary metric's effect per segment (device, country, source, plan) "
        "and flag segments that respond differently.")
    interactions: bool = Field(
        default=True, description="Also test interactions with other experiments sharing users (2x2 contrast).")
    record_decision: bool = Field(
        default=True, description="Write the verdict to the decisions audit trail (skipped when identical to the last one)."
    )


class CupedInfo(BaseModel):
    applied: bool = Field(description="True when the decision numbers use the CUPED-adjusted statistics.")
    theta: float | None = None
    variance_reduction: float | None = Field(default=None, description="1 - Var(adjusted)/Var(unadjusted) of the effect.")
    relative_lift_unadjusted: float | None = None
    p_value_unadjusted: float | None = Field(default=None, description="Fixed-horizon p without CUPED.")


class GuardrailResult(BaseModel):
    margin: float = Field(description="Tolerated relative degradation.")
    status: GuardrailStatus = Field(
        description="pass: non-inferior (the harmful-side bound is inside the margin); fail: non-inferiority "
        "fails AND the degradation is significant; inconclusive: neither yet."
    )
    bound: float | None = Field(description="One-sided bound of the relative lift on the harmful side.")
    p_non_inferiority: float
    p_harm: float = Field(description="One-sided p-value that the metric got worse at all.")
    harm_significant: bool
    sequential: bool


class MetricResult(BaseModel):
    """One metric in one treatment arm, compared with the control."""

    metric: str
    role: MetricRole
    direction: Direction
    variant: str
    control: str
    statistic: Literal["proportion", "mean", "ratio"]
    n: int
    control_n: int
    mean: float
    control_mean: float
    absolute_lift: float
    absolute_ci: Interval
    relative_lift: float
    relative_ci: Interval = Field(description="Fixed-horizon interval at 1 - alpha.")
    relative_ci_sequential: Interval = Field(description="Always-valid confidence sequence at 1 - alpha.")
    p_value: float = Field(description="Fixed-horizon two-sided p (Welch).")
    p_value_sequential: float = Field(description="Always-valid two-sided p.")
    p_value_adjusted: float | None = Field(description="The decision p after the multiple-testing correction.")
    significant: bool = Field(description="Decision p (sequential or fixed, adjusted) < alpha.")
    better: bool | None = Field(description="Significant and in the good direction (None: not significant).")
    chance_to_win: float = Field(description="Posterior P(treatment better), flat prior.")
    risk_control: float = Field(description="Expected relative loss of keeping control.")
    risk_treatment: float = Field(description="Expected relative loss of shipping the treatment.")
    cuped: CupedInfo
    power: float | None = Field(default=None, description="Power now to detect the MDE (primary metric).")
    days_left: float | None = Field(default=None, description="Days until the target power at current traffic.")
    conditional_power: float | None = Field(
        default=None, description="Chance of a significant result by the maximum duration if the current estimate "
        "is the true effect (primary metric; futility below 20%).")
    guardrail: GuardrailResult | None = None
    error: str | None = None


class VariantSummary(BaseModel):
    key: str
    is_control: bool
    weight: float = Field(description="Configured traffic weight now.")
    users: int = Field(description="Exposed users counted (single-variant users).")
    observed_share: float
    expected_share: float = Field(description="Share expected from the weights in effect over the window.")


class SrmSummary(BaseModel):
    p_value: float
    chi2: float
    flagged: bool
    threshold: float
    observed: list[int]
    expected: list[float]
    weights_changed: bool = Field(description="Weights changed during the window; expected counts follow each period.")
    error: str | None = None


class RuleOutcome(BaseModel):
    verdict: Verdict
    rule_id: str
    rule: str = Field(description="The rule that decided, as a sentence filled with the numbers.")
    confidence: float = Field(ge=0, le=1)
    confidence_basis: str = Field(description="Which computed quantity the confidence is.")
    variant: str | None = Field(default=None, description="The treatment the verdict is about.")
    days_left: float | None = None


class SimilarExperiment(BaseModel):
    experiment_key: str
    similarity: float
    name: str | None = None
    outcome: str | None = None
    lift: float | None = None
    p_value: float | None = None
    winner: str | None = None


class ExperimentAnalysis(BaseModel):
    experiment_key: str
    name: str
    status: str
    primary_metric: str
    window_start: datetime
    window_end: datetime
    days_observed: float
    units_per_day: float = Field(description="Exposed users per day over all arms.")
    variants: list[VariantSummary]
    srm: SrmSummary
    metrics: list[MetricResult]
    multiple_testing: str = Field(description="The correction applied and to which families.")
    verdict: RuleOutcome
    variant_verdicts: list[RuleOutcome]
    similar_experiments: list[SimilarExperiment]
    narrative: list[str] = Field(description="Sentences generated from the numbers above by templates.")
    notes: list[str]
    options: AnalysisOptions
    segments: SegmentEffects | None = Field(
        default=None, description="Per-segment effects of the primary metric and heterogeneity flags (null when off "
        "or unavailable; notes say why).")
    interactions: InteractionReport | None = Field(
        default=None, description="Interactions with concurrent experiments sharing users (null when off or unavailable).")
    decision_id: int | None = Field(description="The audit-trail row of this verdict (null when not recorded).")
    elapsed_ms: float
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="registry (postgres), statistics (clickhouse) and memory (chromadb, concurrent with "
        "statistics) calls, and compute (the statistics engine, rules, narrative).")


# ---------------------------------------------------------------- segments, interactions, personalization


class SegmentEffectRow(BaseModel):
    dimension: str
    segment: str
    control_users: int
    treatment_users: int
    control_mean: float
    treatment_mean: float
    effect: float = Field(description="Treatment mean − control mean in the segment (the metric's own scale).")
    relative_effect: float | None = Field(description="effect / control mean, a fraction (0.05 = +5%).")
    ci: Interval = Field(description="Unadjusted interval of the effect at 1 − alpha.")
    p_value: float
    p_adjusted: float = Field(description="Adjusted across every segment of every dimension (the correction).")
    significant: bool
    complement_effect: float | None = Field(description="The rest of the dimension's effect (unit-weighted).")
    heterogeneity_p: float | None = Field(description="Segment vs complement z-test, two-sided.")
    heterogeneity_p_adjusted: float | None = Field(description="Bonferroni across the segments tested.")
    differs: bool = Field(description="Responds differently: the adjusted heterogeneity p ≤ alpha and the "
                          "dimension's Cochran's Q is significant.")


class DimensionQ(BaseModel):
    dimension: str
    segments: int
    pooled_effect: float
    q: float = Field(description="Cochran's Q.")
    df: int
    p_value: float
    p_adjusted: float = Field(description="Bonferroni across dimensions.")
    i_squared: float = Field(description="Share of the spread beyond chance, 0..1.")
    flagged: bool


class ArmSegmentEffects(BaseModel):
    variant: str
    overall_effect: float | None
    overall_relative_effect: float | None = Field(description="A fraction (0.05 = +5%).")
    segments: list[SegmentEffectRow]
    dimensions: list[DimensionQ]
    differing: list[str] = Field(description="'dimension=segment' of the segments that respond differently.")
    error: str | None = None


class SegmentEffects(BaseModel):
    experiment_key: str
    metric: str
    control: str
    correction: Literal["holm", "benjamini-hochberg"]
    alpha: float
    min_users: int = Field(description="Segments need this many users in each arm.")
    arms: list[ArmSegmentEffects]
    narrative: list[str] = Field(description="Sentences generated from the numbers above by templates.")
    elapsed_ms: float


class InteractionPair(BaseModel):
    experiment_key: str
    other_experiment_key: str
    variant: str = Field(description="Treatment arm of this experiment.")
    other_variant: str = Field(description="Treatment arm of the other experiment.")
    metric: str
    shared_users: int = Field(description="Users in the four cells of this 2x2 table.")
    contrast: float = Field(description="(effect with the other's treatment) − (effect with its control).")
    relative_contrast: float | None = Field(description="contrast / the both-control mean, a fraction (0.05 = 5%).")
    effect_with: float
    effect_without: float
    ci: Interval
    p_value: float
    p_adjusted: float = Field(description="Holm across every pair tested in this report.")
    flagged: bool


class InteractionReport(BaseModel):
    experiment_key: str
    metric: str
    alpha: float = Field(description="Family-wise level of the flags (Holm).")
    other_experiments: int = Field(description="Running experiments sharing users that were tested.")
    pairs: list[InteractionPair]
    flagged: list[InteractionPair]
    skipped: list[str] = Field(description="Other experiments left out, with why.")
    narrative: list[str]


class InteractionScan(BaseModel):
    scanned_at: datetime | None = Field(description="When the running experiments were last scanned (null: never).")
    experiments: int = Field(description="Running experiments scanned.")
    flagged: list[InteractionPair]
    narrative: list[str]


class PersonalizedDecision(BaseModel):
    experiment_key: str
    user_id: str | None
    variant: str
    source: Literal["contextual_bandit", "exploration", "recorded"] = Field(
        description="Thompson draw from the context posterior, the uniform exploration floor, or the variant this "
        "user was served before (sticky).")
    context: dict[str, str] = Field(description="The user's context as given.")
    context_dimension: str = Field(description="The dimension the experiment personalises on (its tag).")
    context_value: str | None = Field(description="The user's value of it; null: the global posterior decided.")
    context_source: Literal["given", "journey", "none"] = Field(
        description="Where the context came from: the call, the user's latest stored journey, or nowhere.")
    posterior_means: dict[str, float] = Field(description="Per variant: the pooled posterior mean rate in this context.")
    global_means: dict[str, float] = Field(description="Per variant: the rate over all contexts.")
    best_arm_probabilities: dict[str, float] = Field(description="Per variant: P(best in this context).")
    context_users: dict[str, int] = Field(description="Per variant: users observed in this context.")
    pooling_strength: dict[str, float] = Field(description="Per variant: prior weight toward the global rate, in users.")
    exploration_rate: float = Field(description="The environment policy's floor (exploration_rate / arms per arm).")
    recorded: bool = Field(description="True when this call wrote the user's exposure to the event store.")
    event_id: str | None = Field(description="The exposure's event id (deterministic per experiment and user).")
    why: str
    data_age_seconds: float = Field(description="Age of the posterior's data (learned from the event store).")
    elapsed_ms: float


# ---------------------------------------------------------------- recommendations


class RecommendedAction(BaseModel):
    rank: int
    action: Literal[
        "investigate_srm", "roll_back", "ship", "stop_for_futility", "extend_duration",
        "rebalance_traffic", "remove_arm", "review_results", "keep_running",
    ]
    variant: str | None = None
    title: str
    reasoning: str = Field(description="Template sentence filled with the evidence.")
    evidence: dict[str, Any] = Field(description="The numbers that triggered the action.")
    confidence: float = Field(ge=0, le=1)
    supporting_patterns: list[dict[str, Any]] = Field(default_factory=list,
                                                      description="Similar optimization patterns from memory.")
    decision_id: int | None = None


class OptimizationRecommendations(BaseModel):
    experiment_key: str
    verdict: RuleOutcome
    actions: list[RecommendedAction] = Field(description="Most urgent first.")
    patterns_considered: int
    narrative: list[str]


# ---------------------------------------------------------------- prediction and planning


class MetricInput(_Input):
    name: MetricName
    direction: Direction = "higher"


class Baseline(_Input):
    """The primary metric per user in control: a rate (0..1) or a mean with its standard deviation."""

    mean: float = Field(
        ge=-MAX_METRIC_MAGNITUDE, le=MAX_METRIC_MAGNITUDE, description="Conversion rate (0..1) or mean per user."
    )
    sd: float | None = Field(
        default=None, gt=0, le=MAX_METRIC_MAGNITUDE, description="Per-user standard deviation; omit for a rate."
    )

    @model_validator(mode="after")
    def _a_real_metric(self) -> Baseline:
        if self.sd is None:
            if not 0 < self.mean < 1:
                raise ValueError("a baseline without sd is a rate and must lie strictly between 0 and 1; "
                                 "for a mean metric give its sd")
        elif self.mean == 0:
            raise ValueError("a relative effect needs a non-zero baseline mean")
        elif not MIN_CV <= self.sd / abs(self.mean) <= MAX_CV:
            raise ValueError(f"sd / |mean| = {self.sd / abs(self.mean):.3g} is not a per-user metric "
                             f"(it must lie within {MIN_CV:g}..{MAX_CV:g}); check that mean and sd use the same unit")
        return self


class ExperimentConfig(_Input):
    """An experiment you are considering, described in words plus the numbers you know."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    hypothesis: str = Field(default="", max_length=4000)
    type: str | None = Field(default=None, max_length=50, description="prompt, model, agent_config, feature, ui, workflow.")
    primary_metric: MetricInput | MetricName = Field(description="A metric name or {name, direction}.")
    baseline: Baseline | None = Field(default=None, description="Needed for sample size and probability of a win.")
    mde: RelativeMde | None = Field(default=None, description="Relative MDE to plan for; default: the prior's expected |lift|.")
    traffic_per_day: TrafficPerDay | None = None
    variants: int = Field(default=2, ge=2, le=20)
    alpha: Alpha = 0.05
    target_power: float = Field(default=0.8, gt=0.5, lt=1)
    segment: str | None = Field(default=None, max_length=200)
    platform: str | None = Field(default=None, max_length=100)


class Neighbour(BaseModel):
    experiment_key: str
    similarity: float
    lift: float | None
    improvement: float | None = Field(description="Lift signed so that positive is good for its metric.")
    standard_error: float | None = Field(description="From lift and p-value, when both are known.")
    weight: float
    used: bool
    why_not: str | None = None


class LiftPrior(BaseModel):
    mean: float = Field(description="Expected relative lift (the new metric's sign).")
    sd: float = Field(description="Predictive sd of the true lift: between-experiment spread + uncertainty of the mean.")
    between_experiment_sd: float
    observed_sd: float = Field(description="Weighted sd of the neighbours' observed lifts (before removing noise).")
    mean_sampling_sd: float | None = Field(description="Typical standard error of the neighbours (noise removed).")
    effective_neighbours: float
    quantiles: dict[str, float] = Field(description="p05, p25, p50, p75, p95 of the predicted lift.")
    probability_positive_effect: float = Field(description="P(true effect in the good direction).")


class OutcomePrediction(BaseModel):
    status: Literal["ok", "insufficient_history"]
    message: str
    neighbours_found: int = Field(description="Past experiments with results above the similarity floor.")
    neighbours_required: int
    similarity_floor: float
    neighbours: list[Neighbour]
    prior: LiftPrior | None
    probability_significant_win: float | None = Field(
        description="P(the planned test ends significant in the good direction), averaging power over the prior.")
    planned_mde: float | None
    mde_source: str | None
    recommended_sample_size_per_variant: int | None
    recommended_total_sample_size: int | None
    traffic_per_day: float | None
    traffic_source: str | None
    estimated_duration_days: float | None
    narrative: list[str]


class PlanMetric(BaseModel):
    name: str
    direction: Direction
    role: MetricRole
    non_inferiority_margin: float | None = None
    why: str


class PlanVariant(BaseModel):
    key: str
    is_control: bool
    weight: float
    description: str


class DurationOption(BaseModel):
    days: int
    n_per_variant: int
    mde: float | None = Field(description="Relative MDE detectable with target power after this many days.")


class ExperimentPlan(BaseModel):
    goal: str
    experiment_type: str
    primary_metric: PlanMetric
    secondary_metrics: list[PlanMetric]
    guardrail_metrics: list[PlanMetric]
    variants: list[PlanVariant]
    baseline: Baseline
    mde: float
    alpha: float
    target_power: float
    n_comparisons: int
    sample_size_per_variant: int
    total_sample_size: int
    sample_size_per_variant_sequential: int = Field(description="Units per arm if you will peek (always-valid test).")
    traffic_per_day: float
    duration_days: int = Field(description="Whole days at traffic_per_day (at most 3650: longer plans are infeasible).")
    duration_days_sequential: int | None = Field(
        description="Days for the always-valid size; null when that would take more than ten years."
    )
    duration_options: list[DurationOption]
    similar_experiments: list[SimilarExperiment]
    create_experiment_draft: dict[str, Any] = Field(description="A ready argument for postgres create_experiment.")
    notes: list[str]
    narrative: list[str]


# ---------------------------------------------------------------- bandits, guardrails, autopilot


class PolicyView(BaseModel):
    environment: Environment
    confidence_threshold: float
    max_degradation: float
    exploration_rate: float
    min_days: float
    min_units_per_variant: int
    allowed_actions: list[str]


class TrafficAllocation(BaseModel):
    experiment_key: str
    metric: str
    current_weights: dict[str, float]
    proposed_weights: dict[str, float]
    best_arm_probabilities: dict[str, float] | None
    updated: bool = Field(description="False when the posterior could not be used yet (burn-in, error).")
    reason: str | None
    seed: int
    min_weight: float = Field(description="Floor per arm = exploration_rate / arms.")
    applied: bool
    why: str
    policy: PolicyView
    decision_id: int | None


class GuardrailCheck(BaseModel):
    metric: str
    role: MetricRole
    variant: str
    direction: Direction
    relative_lift: float
    degradation: float = Field(description="Relative change in the harmful direction (positive = worse).")
    margin: float | None
    status: GuardrailStatus
    p_harm: float
    breaches_policy: bool = Field(description="Degradation > policy max_degradation and harm significant at the policy level.")


class AutopilotDecision(BaseModel):
    experiment_key: str
    environment: Environment
    policy: PolicyView
    verdict: RuleOutcome
    guardrails: list[GuardrailCheck]
    action: AutopilotAction
    variant: str | None = Field(description="The arm acted on (shipped, or removed).")
    weights: dict[str, float] | None = Field(default=None, description="New weights for reallocate.")
    allowed: bool = Field(description="The environment policy permits this action automatically.")
    applied: bool = Field(description="The action was carried out through the registry.")
    rule: str = Field(description="The autopilot rule that decided, filled with numbers.")
    confidence: float
    decision_id: int | None
    narrative: list[str]


# ---------------------------------------------------------------- user behaviour


class OutcomeVote(BaseModel):
    label: str
    probability: float
    neighbours: int


class BehaviorPrediction(BaseModel):
    user_id: str | None
    current_steps: list[str]
    journey_source: str = Field(description="'given' or the stored journey id used as the user's current path.")
    journey_complete: bool
    next_action: str | None = Field(description="Most likely next step ('(end)' = the session ends).")
    next_action_probability: float | None
    next_actions: list[OutcomeVote]
    predicted_outcome: str | None
    outcome_probability: float | None
    outcomes: list[OutcomeVote]
    neighbours_used: int
    mean_similarity: float | None
    method: str
    measured_accuracy: dict[str, Any] | None = Field(description="Held-out accuracy of this method, when measured.")


class BehaviorEvaluation(BaseModel):
    journeys: int
    next_action_accuracy: float
    outcome_accuracy: float
    next_action_baseline: float = Field(description="Accuracy of always predicting the most common next step.")
    outcome_baseline: float = Field(description="Accuracy of always predicting the most common outcome.")
    n_neighbors: int


# ---------------------------------------------------------------- charts


class LiftSeries(BaseModel):
    variant: str
    days: list[str] = Field(description="UTC days; each point uses all data up to the end of that day.")
    cumulative_lift: list[float | None]
    band_low: list[float | None]
    band_high: list[float | None]
    users: list[int]


class DailySeries(BaseModel):
    """The daily panel of one variant: observed days (partial ones flagged) and the forecast after them."""

    variant: str
    days: list[str]
    values: list[float]
    partial: list[bool] = Field(description="Only part of the day is observed (today, or a first day started late): "
                                "drawn hollow, not used by the forecast.")
    forecast_days: list[str]
    forecast: list[float] = Field(description="Fitted on the complete days only.")
    forecast_low: list[float]
    forecast_high: list[float]


class PlotSummary(BaseModel):
    experiment_key: str
    metric: str
    direction: Direction
    control: str
    band: str = Field(description="What the shaded band is.")
    series: list[LiftSeries]
    daily_source: str | None = Field(description="Where the daily per-variant panel comes from (None: not drawn).")
    final_lift: dict[str, float | None] = Field(description="Last cumulative lift per treatment.")
    verdict: str = Field(default="", description="The analysis verdict the chart's headline states.")
    rule_id: str = ""
    headline: str = Field(default="", description="The line above the chart: verdict and the metric that decided.")
    decided_by: str | None = Field(default=None, description="The metric that decided the verdict (a failing "
                                   "guardrail for a guardrail roll-back; None for an SRM).")
    panels: list[str] = Field(default_factory=list, description="Panels top to bottom: lift:<metric>, "
                              "guardrail:<metric> (when a guardrail decided), daily:<metric>.")
    guardrail_metric: str | None = None
    guardrail_margin: float | None = None
    guardrail_series: list[LiftSeries] = Field(default_factory=list, description="The guardrail panel's lifts.")
    daily: list[DailySeries] = Field(default_factory=list)
    partial_days: list[str] = Field(default_factory=list, description="Days observed only in part.")
    png_bytes: int


ExperimentAnalysis.model_rebuild()
