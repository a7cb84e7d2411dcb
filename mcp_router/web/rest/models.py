"""Request, query and error models of the REST API.

Bodies that the service already types (ExperimentCreate) are used as they are. The
others mirror the MCP tools' flat, typed parameters with the same annotated types
(ExperimentRef, UserId, MetricName...), so a value the tool refuses the API refuses too.
Responses are the service's own return models; nothing here holds a business rule.
"""

from __future__ import annotations

import re
from datetime import date
from functools import cache
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from mcp_servers.postgres.models import (
    Actor,
    ExperimentRef,
    ExperimentStatus,
    ExperimentType,
    MetricName,
    UserId,
    VariantKey,
)

MAX_BATCH_USERS = 1000
INT64_MAX = 2**63 - 1

Reason = Annotated[str | None, Field(default=None, max_length=2000, description="Why, for the change log.")]
Attributes = Annotated[
    dict[str, Any] | None,
    Field(default=None, description="User attributes for targeting, e.g. {'country': 'US', 'device': 'mobile'}."),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Query(BaseModel):
    # Unknown query parameters are ignored, as HTTP clients and proxies add their own.
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------- bodies


EXPOSED = ("true (default): the user is shown the variant now; their first exposed request counts them as "
           "exposed in the analysis. false: fetched but not shown yet (prefetch); a later exposed request counts them.")


class GetVariantRequest(_Body):
    """Assign one user (sticky: the first assignment is recorded and wins)."""

    experiment: ExperimentRef
    user_id: UserId
    attributes: Attributes = None
    exposed: bool = Field(default=True, description=EXPOSED)

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"experiment": "checkout-1step", "user_id": "u-123", "attributes": {"country": "US"}},
    ]})


class BatchGetVariantRequest(_Body):
    """Assign many users of one experiment in one round trip."""

    experiment: ExperimentRef
    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_BATCH_USERS,
                                   description=f"At most {MAX_BATCH_USERS} user ids; repeats are answered once.")
    attributes: dict[str, dict[str, Any]] | None = Field(
        default=None, description="user_id -> that user's attributes, for targeting (missing: no attributes)."
    )
    record: bool = Field(default=True, description="false: predict only, nothing is written (so no exposure either).")
    exposed: bool = Field(default=True, description=EXPOSED)

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"experiment": "checkout-1step", "user_ids": ["u-1", "u-2", "u-3"]},
    ]})


class RecordResultRequest(_Body):
    """One metric value for a user already assigned by get-variant."""

    experiment: ExperimentRef
    user_id: UserId
    metric: MetricName
    value: float = Field(allow_inf_nan=False, description="The measured value, e.g. 1.0 for success.")
    event_id: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="Idempotency key: a repeated event_id records nothing (answered 200).")
    metadata: dict[str, Any] | None = Field(default=None, description="Extra context stored with the value.")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"experiment": "checkout-1step", "user_id": "u-123", "metric": "conversion", "value": 1.0,
         "event_id": "evt-0001"},
    ]})


# ---------------------------------------------------------------- query strings


class ListQuery(_Query):
    status: list[ExperimentStatus] | None = Field(default=None, description="Only these statuses (default: all but archived).")
    type: ExperimentType | None = Field(default=None, description="Only this experiment type.")
    owner: str | None = Field(default=None, max_length=200)
    tag: str | None = Field(default=None, max_length=64)
    search: str | None = Field(default=None, max_length=200, description="Substring of key, name, description or hypothesis.")
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=INT64_MAX)


class GetQuery(_Query):
    include_change_log: bool = Field(default=False, description="Also return the most recent changes.")


class ActorQuery(_Query):
    actor: Actor = Field(default="rest-api", description="Who acts, for the change log, e.g. 'service:checkout'.")
    reason: Reason = None


class StopQuery(ActorQuery):
    winner: VariantKey | None = Field(
        default=None,
        description="Variant key to declare the winner: the experiment is concluded and get-variant serves the "
        "winner to everyone. Without it the experiment is only stopped (it can be concluded later).",
    )


REGISTRY_ONLY = frozenset({"metrics", "aggregation"})


class AnalyzeQuery(_Query):
    source: Literal["intelligence", "registry"] = Field(
        default="intelligence",
        description="intelligence (the default): the statistics engine's analysis of the event store (ClickHouse), "
        "the same as the MCP tool analyze_experiment_performance - tests, intervals, SRM, verdict. registry: "
        "descriptive only - per-variant counts and means of the results recorded in PostgreSQL (record-result); "
        "no test, no interval, no verdict.",
    )
    metrics: list[MetricName] | None = Field(default=None, description="registry only. Default: every declared metric.")
    aggregation: Literal["mean", "sum"] = Field(
        default="mean",
        description="registry only. How one user's several records combine: mean (rates, scores) or sum (counts, revenue).",
    )


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day(value: Any) -> Any:
    """A query string names a day as YYYY-MM-DD, as documented (pydantic alone also reads "0" as 1970-01-01)."""
    if isinstance(value, str) and not ISO_DAY.fullmatch(value):
        raise ValueError("a day as YYYY-MM-DD")
    return value


@cache
def analyze_query() -> type[AnalyzeQuery]:
    """AnalyzeQuery plus the intelligence server's own AnalysisOptions as query parameters (same
    names, types and limits), except record_decision: a GET writes nothing to the audit trail."""
    from mcp_servers.intelligence.models import AnalysisOptions

    options: dict[str, Any] = {}
    for name, info in AnalysisOptions.model_fields.items():
        if name == "record_decision":
            continue
        annotation = info.annotation
        if date in get_args(annotation):
            annotation = Annotated[annotation, BeforeValidator(_iso_day)]
        options[name] = (annotation, info)
    return create_model("AnalyzeQueryWithOptions", __base__=AnalyzeQuery, **options)  # type: ignore[call-overload]


# ---------------------------------------------------------------- errors


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: 'body', 'query' or 'path', then the field path.")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: a stable kind, a readable reason, and for 422 the fields at fault."""

    error: str = Field(description="not_found, conflict, invalid_input, invalid_json, unauthorized, rate_limited, ...")
    detail: str
    errors: list[FieldError] | None = Field(default=None, description="Validation errors with field paths (422).")


__all__ = [
    "MAX_BATCH_USERS",
    "REGISTRY_ONLY",
    "ActorQuery",
    "AnalyzeQuery",
    "BatchGetVariantRequest",
    "ErrorBody",
    "FieldError",
    "GetQuery",
    "GetVariantRequest",
    "ListQuery",
    "RecordResultRequest",
    "StopQuery",
    "analyze_query",
]
