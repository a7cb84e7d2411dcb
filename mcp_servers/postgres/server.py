"""The PostgreSQL MCP server: each tool a thin typed adapter over one ExperimentService method."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from mcp_servers.annotations import DESTRUCTIVE_WRITE, IDEMPOTENT_WRITE, OVERWRITE, READ_ONLY, WRITE
from mcp_servers.confirmation import Confirm, Reason, require_confirmation
from mcp_servers.tool_server import ToolServer

from .confirmation import archive_action, stop_action, weights_action
from .models import (
    Actor,
    AssignmentPrediction,
    Decision,
    DecisionCreate,
    DecisionPage,
    Experiment,
    ExperimentAnalysis,
    ExperimentCreate,
    ExperimentDetail,
    ExperimentPage,
    ExperimentRef,
    ExperimentStatus,
    ExperimentSummary,
    ExperimentType,
    ExperimentUpdate,
    MetricName,
    QueryResult,
    ResultRecorded,
    SchemaDescription,
    UserId,
    VariantAssignment,
)
from .service import ExperimentService

INSTRUCTIONS = """\
NeonBlue's experiment registry on PostgreSQL: define A/B experiments (prompt, model, agent_config,
feature, ui, workflow), run their lifecycle (draft -> running -> stopped -> concluded, or archived),
assign users to variants with GrowthBook-compatible hashing (get_variant), record per-user metric
results, and read descriptive per-variant statistics. Experiments are addressed by their key
(e.g. 'checkout-1step'), the same id used in events. postgres_query runs read-only SQL over the
registry tables (see describe_schema). Decisions by agents go to the audit trail with record_decision."""

Attributes = Annotated[
    dict[str, Any] | None,
    Field(default=None, description="User attributes for targeting, e.g. {'country': 'US', 'device': 'mobile'}."),
]

def build_server(service: ExperimentService) -> MCPServer:
    """The MCP server over `service` (tools only; the service's lifetime is the caller's)."""
    mcp = ToolServer("neonblue-postgres", instructions=INSTRUCTIONS)

    # ---------------------------------------------------------------- lifecycle

    @mcp.tool(annotations=WRITE)
    async def create_experiment(experiment: ExperimentCreate, actor: Actor = "mcp-client") -> Experiment:
        """Define a new experiment as a draft (it assigns nobody until start_experiment).

        Give a unique key, a type, the primary metric and the variants: exactly one
        with is_control=true, weights as fractions summing to 1 (omit all weights for
        an equal split). Each variant's config is the JSON your app reads, e.g. a
        system prompt or a model name. Optional: targeting on user attributes,
        coverage, a namespace slice, secondary and guardrail metrics, QA overrides.
        Returns the stored experiment.

        Example: {"experiment": {"key": "support-prompt-v2", "name": "Support prompt with examples",
        "type": "prompt", "primary_metric": {"name": "resolution_rate", "direction": "higher"},
        "variants": [{"key": "control", "is_control": true, "config": {"system_prompt": "..."}},
                     {"key": "examples", "config": {"system_prompt": "... with examples"}}],
        "min_sample_size": 200}}
        """
        return await service.create_experiment(experiment, actor=actor)

    @mcp.tool(annotations=OVERWRITE)
    async def update_experiment(experiment: ExperimentRef, changes: ExperimentUpdate, actor: Actor = "mcp-client",
                                reason: Reason = None) -> Experiment:
        """Change fields of an experiment. Only the fields given change; every change is logged.

        A draft accepts any field (variants given replace all variants). Once started,
        only name, description, hypothesis, owner, tags, secondary_metrics,
        guardrail_metrics, min_sample_size and forced_variations can change; traffic
        moves with set_variant_weights. Archived experiments cannot change.

        Example: {"experiment": "support-prompt-v2", "changes": {"coverage": 0.5, "tags": ["support"]}}
        """
        return await service.update_experiment(experiment, changes, actor=actor, reason=reason)

    @mcp.tool(annotations=WRITE)
    async def start_experiment(experiment: ExperimentRef, actor: Actor = "mcp-client", reason: Reason = None) -> Experiment:
        """Start a draft: from now on get_variant assigns users.

        Refused unless there are at least 2 variants, exactly one control, and
        weights summing to 1. Example: {"experiment": "support-prompt-v2"}
        """
        return await service.start_experiment(experiment, actor=actor, reason=reason)

    @mcp.tool(annotations=DESTRUCTIVE_WRITE)
    async def stop_experiment(experiment: ExperimentRef,
                              winner: Annotated[str | None, Field(default=None, description="Variant key to declare the winner; concludes the experiment.")] = None,
                              actor: Actor = "mcp-client", reason: Reason = None,
                              confirm: Confirm = False) -> Experiment:
        """Stop a running experiment: nobody is assigned any more; results can still be recorded.

        With a winner (a variant key) the experiment is concluded and get_variant
        serves the winner's config to everyone: that asks the user first (or needs
        confirm=true with a reason). A stopped experiment can later be concluded by
        calling this again with a winner.
        Example: {"experiment": "support-prompt-v2", "winner": "examples", "confirm": true,
        "reason": "p<0.01 on resolution_rate"}
        """
        if winner is not None:
            action = stop_action(await service.get_experiment(experiment), winner)
            require_confirmation("stop_experiment", action, confirm, reason)
        return await service.stop_experiment(experiment, winner=winner, actor=actor, reason=reason)

    @mcp.tool(annotations=OVERWRITE)
    async def archive_experiment(experiment: ExperimentRef, actor: Actor = "mcp-client", reason: Reason = None,
                                 confirm: Confirm = False) -> Experiment:
        """Archive an experiment that is not running (draft, stopped or concluded): hidden from lists, frozen.

        Asks the user first (or needs confirm=true with a reason). Archiving an archived
        experiment changes nothing. Example: {"experiment": "old-banner-test", "confirm": true,
        "reason": "superseded by banner-v3"}
        """
        require_confirmation("archive_experiment", archive_action(await service.get_experiment(experiment)),
                             confirm, reason)
        return await service.archive_experiment(experiment, actor=actor, reason=reason)

    @mcp.tool(annotations=OVERWRITE)
    async def set_variant_weights(experiment: ExperimentRef,
                                  weights: Annotated[dict[str, float], Field(description="Variant key -> weight; all variants, summing to 1.")],
                                  actor: Actor = "mcp-client", reason: Reason = None,
                                  confirm: Confirm = False) -> Experiment:
        """Reallocate traffic between variants of a draft or running experiment (bandits, rollbacks).

        Audited in the change log. Users already assigned keep their variant; new
        users are bucketed with the new weights. Moving a running experiment's traffic
        asks the user first (or needs confirm=true with a reason); a draft's never does.
        Example: {"experiment": "support-prompt-v2", "weights": {"control": 0.2, "examples": 0.8},
        "confirm": true, "reason": "roll back: guardrail breached"}
        """
        require_confirmation("set_variant_weights", weights_action(await service.get_experiment(experiment), weights),
                             confirm, reason)
        return await service.set_variant_weights(experiment, weights, actor=actor, reason=reason)

    # ---------------------------------------------------------------- reading the registry

    @mcp.tool(annotations=READ_ONLY)
    async def get_experiment(experiment: ExperimentRef,
                             include_change_log: Annotated[bool, Field(description="Also return recent changes.")] = False) -> ExperimentDetail:
        """One experiment by key or numeric id: definition, variants with configs, status,
        users assigned per variant, and optionally its change log.
        Example: {"experiment": "support-prompt-v2", "include_change_log": true}
        """
        return await service.get_experiment(experiment, include_change_log=include_change_log)

    @mcp.tool(annotations=READ_ONLY)
    async def list_experiments(
        status: Annotated[list[ExperimentStatus] | None, Field(description="Only these statuses (default: all but archived).")] = None,
        type: Annotated[ExperimentType | None, Field(description="Only this experiment type.")] = None,
        owner: Annotated[str | None, Field(max_length=200)] = None,
        tag: Annotated[str | None, Field(max_length=64)] = None,
        search: Annotated[str | None, Field(max_length=200, description="Substring of key, name, description or hypothesis.")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 50,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> ExperimentPage:
        """List experiments, newest first, with filters and pagination (next_offset is null on the last page).
        Example: {"status": ["running"], "type": "prompt", "limit": 20}
        """
        return await service.list_experiments(status=status, type=type, owner=owner, tag=tag, search=search,
                                              limit=limit, offset=offset)

    # ---------------------------------------------------------------- assignment

    @mcp.tool(annotations=IDEMPOTENT_WRITE)
    async def get_variant(
        experiment: ExperimentRef, user_id: UserId, attributes: Attributes = None,
        exposed: Annotated[bool, Field(description="The user is shown the variant now (the default): the first such "
                                       "call counts them as exposed in the analysis. false: fetched but not shown "
                                       "yet; a later exposed call counts them then.")] = True,
    ) -> VariantAssignment:
        """Assign a user to a variant and return what to serve (variant key and its config).

        Deterministic and sticky: the same user always gets the same variant; the
        first assignment is recorded and wins forever. Honours status (only running
        experiments assign; a concluded one serves its winner), QA overrides,
        targeting (pass the user's attributes), namespace, coverage and weights.
        When in_experiment is false, serve your default experience.
        The user's first exposed call is their exposure in the analysis (newly_exposed
        says this call recorded it); QA-forced users are never counted.
        Example: {"experiment": "support-prompt-v2", "user_id": "u-123", "attributes": {"country": "US"}}
        """
        return await service.get_variant(experiment, user_id, attributes, exposed=exposed)

    @mcp.tool(annotations=READ_ONLY)
    async def predict_user_assignment(experiment: ExperimentRef, user_id: UserId,
                                      attributes: Attributes = None) -> AssignmentPrediction:
        """Look up which variant a user WOULD get right now, and why, step by step, without recording anything.

        A deterministic lookup (the same hashing get_variant uses), not a statistical prediction.

        Shows the hash bucket, each variant's bucket range and the check that decided.
        Example: {"experiment": "support-prompt-v2", "user_id": "u-123"}
        """
        return await service.predict_user_assignment(experiment, user_id, attributes)

    # ---------------------------------------------------------------- results

    @mcp.tool(annotations=WRITE)
    async def record_result(
        experiment: ExperimentRef,
        user_id: UserId,
        metric: MetricName,
        value: Annotated[float, Field(allow_inf_nan=False, description="The measured value, e.g. 1.0 for success.")],
        event_id: Annotated[str | None, Field(default=None, min_length=1, max_length=200,
                                              description="Idempotency key: a repeated event_id records nothing.")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(default=None, description="Extra context stored with the value.")] = None,
    ) -> ResultRecorded:
        """Record one metric value for a user already assigned by get_variant; it is attributed
        to the user's variant and reaches the event store the analysis reads (counted once per
        event_id). The metric must be declared on the experiment (primary,
        secondary or guardrail). Refused for drafts and unassigned users.
        Example: {"experiment": "support-prompt-v2", "user_id": "u-123", "metric": "resolution_rate", "value": 1.0}
        """
        return await service.record_result(experiment, user_id, metric, value, event_id=event_id, metadata=metadata)

    @mcp.tool(annotations=READ_ONLY)
    async def analyze_experiment_data(
        experiment: ExperimentRef,
        metrics: Annotated[list[MetricName] | None, Field(default=None, description="Default: every declared metric.")] = None,
        aggregation: Annotated[Literal["mean", "sum"], Field(description="How one user's several records combine: mean (rates, scores) or sum (counts, revenue).")] = "mean",
    ) -> ExperimentAnalysis:
        """Per-variant figures from PostgreSQL: users assigned, observed vs expected traffic share,
        and per metric the users with data, mean, std, sum, sum of squares, conversion
        rate and lift vs control. QA-forced users are excluded. Descriptive only:
        significance and recommendations come from the intelligence server.
        Example: {"experiment": "support-prompt-v2", "metrics": ["resolution_rate"]}
        """
        return await service.analyze_experiment_data(experiment, metrics=metrics, aggregation=aggregation)

    @mcp.tool(annotations=READ_ONLY)
    async def get_experiment_summary(experiment: ExperimentRef) -> ExperimentSummary:
        """A short human-readable (markdown) report: status, hypothesis, per-variant table on the
        primary metric, the current leader and whether the sample size is reached.
        Example: {"experiment": "support-prompt-v2"}
        """
        return await service.get_experiment_summary(experiment)

    # ---------------------------------------------------------------- audit trail

    @mcp.tool(annotations=WRITE)
    async def record_decision(decision: DecisionCreate) -> Decision:
        """Append a recommendation or automated action to the audit trail, with its inputs,
        reasoning, confidence and actor (applied=true when it was carried out).
        Example: {"decision": {"experiment": "support-prompt-v2", "action": "recommend_ship",
        "reasoning": "examples beats control by 6.1% (95% CI 2.0-10.2%)", "confidence": 0.97,
        "actor": "intelligence", "inputs": {"p_value": 0.003}}}
        """
        return await service.record_decision(decision)

    @mcp.tool(annotations=READ_ONLY)
    async def list_decisions(
        experiment: Annotated[ExperimentRef | None, Field(default=None)] = None,
        action: Annotated[str | None, Field(default=None, max_length=64)] = None,
        actor: Annotated[str | None, Field(default=None, max_length=200)] = None,
        applied: Annotated[bool | None, Field(default=None)] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 50,
        offset: Annotated[int, Field(ge=0)] = 0,
    ) -> DecisionPage:
        """The audit trail of decisions, newest first, filtered by experiment, action, actor or applied.
        Example: {"experiment": "support-prompt-v2", "limit": 10}
        """
        return await service.list_decisions(experiment=experiment, action=action, actor=actor, applied=applied,
                                            limit=limit, offset=offset)

    # ---------------------------------------------------------------- SQL

    @mcp.tool(annotations=READ_ONLY)
    async def postgres_query(
        sql: Annotated[str, Field(min_length=1, max_length=20_000, description="One SELECT, EXPLAIN SELECT or SHOW statement.")],
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many rows; the result says when it truncated.")] = 200,
    ) -> QueryResult:
        """Run one read-only SQL statement over the registry tables (experiments, variants,
        assignments, results, decisions, experiment_changes; see describe_schema).

        Only a single SELECT, EXPLAIN SELECT or SHOW is accepted; writes, DDL,
        multi-statement payloads, data-modifying CTEs, COPY, SET and functions with
        side effects are refused. It runs in a READ ONLY transaction with a statement
        timeout, as a SELECT-only role where available, and returns at most `limit` rows.
        Example: {"sql": "SELECT v.key, count(*) FROM assignments a JOIN variants v ON v.id = a.variant_id GROUP BY 1"}
        """
        return await service.postgres_query(sql, max_rows=limit)

    @mcp.tool(annotations=READ_ONLY)
    async def describe_schema() -> SchemaDescription:
        """Describe the registry's schema: its tables and columns with types, nullability, defaults and
        descriptions, to write postgres_query statements. Example: {}
        """
        return await service.describe_schema()

    return mcp
