"""The REST endpoints as FastAPI path operations: each validates its path, query and body from
the signature and calls ONE in-process service method (the one the MCP tool calls); the OpenAPI
document is derived from the same signatures and pydantic models.

`JsonRoute` keeps two rules FastAPI has no switch for: a body is validated strictly against the
raw JSON ("5" is not an integer, nor "true" a boolean) and may not exceed MAX_BODY_BYTES; and a
ServiceError answers its `status_code` as {"error", "detail"}, never a stack trace.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime,
# and /analyze's query model is a local variable.

import logging
import re
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Message, Receive, Scope, Send

from mcp_router.gateway.router import Router
from mcp_servers.postgres.models import (
    BatchAssignment,
    Experiment,
    ExperimentAnalysis,
    ExperimentCreate,
    ExperimentDetail,
    ExperimentPage,
    ExperimentRef,
    ExperimentSummary,
    ResultRecorded,
    VariantAssignment,
)
from schemas.errors import ServiceError

from .models import (
    REGISTRY_ONLY,
    ActorQuery,
    BatchGetVariantRequest,
    ErrorBody,
    GetQuery,
    GetVariantRequest,
    ListQuery,
    RecordResultRequest,
    StopQuery,
    analyze_query,
)

log = logging.getLogger("neonblue.rest")

PREFIX = "/api/v1/experiments"
MAX_BODY_BYTES = 1_048_576

ERRORS = {
    400: "Malformed JSON body (`invalid_json`).",
    401: "Missing or wrong bearer token (`unauthorized`).",
    404: "No experiment with this key or id (`not_found`).",
    409: "Refused in the experiment's current state, or the key is taken (`conflict`).",
    413: f"Request body over {MAX_BODY_BYTES} bytes (`payload_too_large`).",
    422: "Invalid input (`invalid_input`); `errors` lists the field paths, e.g. [\"body\", \"variants\", 0, \"key\"].",
    429: "Over the per-client rate limit (`rate_limited`); retry after the Retry-After header.",
    503: "The postgres server is not available in this process, or for /analyze the intelligence server "
         "(`backend_unavailable`).",
}
ALWAYS = (401, 429, 503)  # middleware and availability: every operation can answer these

CREATE_EXAMPLE = {
    "key": "checkout-1step", "name": "One-step checkout", "type": "ui",
    "primary_metric": {"name": "conversion", "direction": "higher"},
    "secondary_metrics": ["revenue"],
    "variants": [{"key": "control", "is_control": True, "config": {"steps": 3}},
                 {"key": "one-step", "config": {"steps": 1}}],
    "min_sample_size": 100,
}

Ref = Annotated[ExperimentRef, Path(description="Experiment key or numeric id.",
                                    openapi_examples={"key": {"value": "checkout-1step"}})]


class ApiError(HTTPException):
    """An answer other than success, raised anywhere in a request; the app renders it as ErrorBody."""

    def __init__(self, status: int, kind: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, detail, headers)
        self.kind = kind


def _kind(exc: ServiceError) -> str:
    """NotFound -> not_found, Conflict -> conflict, InvalidInput -> invalid_input, ..."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _service_error(exc: BaseException) -> ServiceError | None:
    """The ServiceError to answer, also when a service that fans out in a task group raised it
    wrapped in an exception group (the first one, when every leaf is a ServiceError)."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_service_error(e) for e in exc.exceptions]
        if all(leaves):
            return leaves[0]
    return None


def _limited(scope: Scope, receive: Receive) -> Receive:
    """`receive`, refusing a body over MAX_BODY_BYTES (declared or streamed) when it is read."""
    too_large = ApiError(413, "payload_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    declared = Headers(scope=scope).get("content-length")
    size = int(declared) if declared is not None and declared.isdecimal() else 0

    async def receive_limited() -> Message:
        nonlocal size
        if size > MAX_BODY_BYTES:
            raise too_large
        message = await receive()
        if declared is None:
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                raise too_large
        return message

    return receive_limited


async def _validate_strictly(model: Any, request: Request) -> None:
    """Validate the raw body strictly first (FastAPI validates the parsed JSON laxly afterwards)."""
    try:
        model.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        # JSON Schema's integer includes 5.0, which strict mode refuses: that alone is left to the lax pass.
        if not all(p["type"] == "int_type" and isinstance(p.get("input"), float) and p["input"].is_integer()
                   for p in problems):
            raise RequestValidationError([{**p, "loc": ("body", *p["loc"])} for p in problems]) from None


class JsonRoute(APIRoute):
    """An APIRoute with the house rules above, answering HEAD for GET as Starlette's Route does."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.PARTIAL and scope["method"] == "HEAD" and "GET" in self.methods:
            return Match.FULL, child
        return match, child

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":  # a copy: the server still sees HEAD and sends no body
            scope = {**scope, "method": "GET"}
        await super().handle(scope, _limited(scope, receive), send)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = self.body_field.field_info.annotation if self.body_field is not None else None

        async def guarded(request: Request) -> Response:
            try:
                if body is not None:
                    await _validate_strictly(body, request)
                return await handler(request)
            except (HTTPException, RequestValidationError):
                raise
            except Exception as exc:
                refusal = _service_error(exc)
                if refusal is not None:
                    raise ApiError(refusal.status_code, _kind(refusal), str(refusal)) from None
                log.exception("%s %s failed", request.method, request.url.path)  # a bug: the details stay in the log
                raise ApiError(500, "internal_error", "internal error; the server log has the details") from None

        return guarded


def _responses(*errors: int, success: dict[int, dict[str, Any]] | None = None) -> dict[int | str, dict[str, Any]]:
    """The documented answers besides the main success: `success` extras, and the errors as ErrorBody."""
    answers: dict[int | str, dict[str, Any]] = dict(success or {})
    for code in sorted({*errors, *ALWAYS}):
        answers[code] = {"model": ErrorBody, "description": ERRORS[code]}
    return answers


def add_operations(app: FastAPI, router: Router) -> None:
    """The seed's /api/v1/experiments endpoints. /analyze answers the intelligence server's analysis,
    in this process or behind the gateway (remote); the registry's descriptive view on request."""

    async def postgres() -> Any:  # async: FastAPI would run a plain def in a worker thread
        service = router.services.get("postgres")
        if service is None:
            raise ApiError(503, "backend_unavailable",
                           "the REST API serves the postgres server in-process; it runs remotely or failed to open here")
        return service

    Service = Annotated[Any, Depends(postgres)]  # mcp_servers.postgres.ExperimentService
    op = partial(app.api_route, response_description="Success.")

    def collection(method: str, **spec: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """PREFIX/, and PREFIX without the slash (served, not documented)."""
        def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
            op(f"{PREFIX}/", methods=[method], **spec)(endpoint)
            return op(PREFIX, methods=[method], include_in_schema=False, **spec)(endpoint)

        return register

    @collection(
        "POST", status_code=201, response_model=Experiment, operation_id="createExperiment",
        summary="Create an experiment (as a draft)",
        description="Define an experiment: unique key, type, primary metric and variants (exactly one control; "
        "weights as fractions summing to 1, or omit all weights for an equal split). It assigns nobody "
        "until started. A metric may be given as a bare name instead of {name, direction}.",
        responses=_responses(400, 409, 413, 422, success={201: {"headers": {"Location": {
            "schema": {"type": "string"}, "description": "URL of the new experiment."}}}}),
        openapi_extra={"requestBody": {"content": {"application/json": {"example": CREATE_EXAMPLE}}}},
    )
    async def create(body: ExperimentCreate, q: Annotated[ActorQuery, Query()], service: Service,
                     response: Response) -> Experiment:
        experiment = await service.create_experiment(body, actor=q.actor)
        response.headers["Location"] = f"{PREFIX}/{experiment.key}"
        return experiment

    @collection(
        "GET", response_model=ExperimentPage, operation_id="listExperiments", summary="List experiments",
        description="Newest first, with filters and pagination (`next_offset` is null on the last page). "
        "Archived experiments are listed only when asked for by status.",
        responses=_responses(422),
    )
    async def list_(q: Annotated[ListQuery, Query()], service: Service) -> ExperimentPage:
        return await service.list_experiments(status=q.status, type=q.type, owner=q.owner, tag=q.tag,
                                              search=q.search, limit=q.limit, offset=q.offset)

    @op(
        f"{PREFIX}/get-variant", methods=["POST"], response_model=VariantAssignment, operation_id="getVariant",
        summary="Assign a user to a variant",
        description="Deterministic and sticky (GrowthBook-compatible hashing): the first assignment is recorded and "
        "wins forever. Only running experiments assign; a concluded one serves its declared winner. When "
        "`in_experiment` is false, serve your default experience. The user's first request with `exposed` true "
        "(the default) is their exposure: it reaches the event store the analysis reads (`newly_exposed`).",
        responses=_responses(400, 404, 413, 422),
    )
    async def get_variant(body: GetVariantRequest, service: Service) -> VariantAssignment:
        return await service.get_variant(body.experiment, body.user_id, body.attributes, exposed=body.exposed)

    @op(
        f"{PREFIX}/get-variant/batch", methods=["POST"], response_model=BatchAssignment,
        operation_id="getVariantBatch", summary="Assign many users at once",
        description="The batch form of get-variant for one experiment (same rules): `assigned` maps each user id to "
        "its variant key, or null when the user is not in the experiment.",
        responses=_responses(400, 404, 413, 422),
    )
    async def get_variant_batch(body: BatchGetVariantRequest, service: Service) -> BatchAssignment:
        return await service.assign_many(body.experiment, body.user_ids, body.attributes, record=body.record,
                                         exposed=body.exposed)

    @op(
        f"{PREFIX}/record-result", methods=["POST"], status_code=201, response_model=ResultRecorded,
        operation_id="recordResult", summary="Record a metric value for an assigned user",
        description="Attributed to the user's recorded variant. The metric must be declared on the experiment. "
        "The value also reaches the event store the analysis reads, once per `event_id`. "
        "201 when recorded; 200 when `event_id` was seen before (nothing added, the first record is returned).",
        responses=_responses(400, 404, 409, 413, 422,
                             success={200: {"model": ResultRecorded, "description": "Success (see the description)."}}),
    )
    async def record_result(body: RecordResultRequest, service: Service, response: Response) -> ResultRecorded:
        result = await service.record_result(body.experiment, body.user_id, body.metric, body.value,
                                             event_id=body.event_id, metadata=body.metadata)
        response.status_code = 200 if result.duplicate else 201
        return result

    @op(
        f"{PREFIX}/{{id}}", methods=["GET"], response_model=ExperimentDetail, operation_id="getExperiment",
        summary="Get one experiment",
        description="Definition, variants with their configs, status, users assigned per variant, and optionally "
        "the change log.",
        responses=_responses(404, 422),
    )
    async def get(id: Ref, q: Annotated[GetQuery, Query()], service: Service) -> ExperimentDetail:
        return await service.get_experiment(id, include_change_log=q.include_change_log)

    @op(
        f"{PREFIX}/{{id}}", methods=["DELETE"], response_model=Experiment, operation_id="archiveExperiment",
        summary="Archive an experiment",
        description="Archives (never deletes: the registry keeps every experiment for the audit trail) a draft, "
        "stopped or concluded experiment: hidden from lists unless asked for by status, frozen, results no longer "
        "accepted; GET still answers it, with status archived. A running experiment must be stopped first "
        "(409). Idempotent.",
        responses=_responses(404, 409, 422),
    )
    async def archive(id: Ref, q: Annotated[ActorQuery, Query()], service: Service) -> Experiment:
        return await service.archive_experiment(id, actor=q.actor, reason=q.reason)

    @op(
        f"{PREFIX}/{{id}}/start", methods=["POST"], response_model=Experiment, operation_id="startExperiment",
        summary="Start a draft",
        description="From now on get-variant assigns users. Refused (409) unless the experiment is a draft with at "
        "least 2 variants, exactly one control and weights summing to 1.",
        responses=_responses(404, 409, 422),
    )
    async def start(id: Ref, q: Annotated[ActorQuery, Query()], service: Service) -> Experiment:
        return await service.start_experiment(id, actor=q.actor, reason=q.reason)

    @op(
        f"{PREFIX}/{{id}}/stop", methods=["POST"], response_model=Experiment, operation_id="stopExperiment",
        summary="Stop, and optionally declare the winner",
        description="running -> stopped: nobody is assigned any more, results are still accepted. With "
        "`winner=<variant key>` the experiment is concluded (also from stopped) and get-variant "
        "serves the winner's config to everyone.",
        responses=_responses(404, 409, 422),
    )
    async def stop(id: Ref, q: Annotated[StopQuery, Query()], service: Service) -> Experiment:
        return await service.stop_experiment(id, winner=q.winner, actor=q.actor, reason=q.reason)

    from mcp_servers.intelligence.models import AnalysisOptions
    from mcp_servers.intelligence.models import ExperimentAnalysis as EngineAnalysis

    query_model = analyze_query()  # the query parameters: a model class FastAPI reads from the signature

    @op(
        f"{PREFIX}/{{id}}/analyze", methods=["GET"], response_model=EngineAnalysis | ExperimentAnalysis,
        operation_id="analyzeExperiment", summary="Analyse an experiment: the statistics engine's verdict",
        description="By default the full analysis of the statistics engine over the event store (ClickHouse), the "
        "same computation as the MCP tool analyze_experiment_performance: per metric and arm the lift with fixed "
        "and always-valid (sequential) intervals and p-values, chance to win, CUPED when a pre-period covariate "
        "exists, sample ratio mismatch, multiple testing, power and days left, guardrails, and a verdict (ship, "
        "roll_back, keep_running, needs_review) with the rule that produced it. An experiment nobody has been "
        "exposed to yet answers the no_data verdict with its reason. Options as query parameters; a GET writes "
        "nothing to the audit trail. `source=registry` is a secondary, descriptive view: users assigned and per "
        "metric the count, mean, std and lift of the results recorded in PostgreSQL (`metrics`, `aggregation`), "
        "with no test, no interval and no verdict.",
        responses=_responses(404, 422, 400),
    )
    async def analyze(id: Ref, q: Annotated[query_model, Query()], service: Service) -> Any:
        given = q.model_fields_set - {"source"}
        if q.source == "registry":
            if given - REGISTRY_ONLY:
                raise ApiError(422, "invalid_input", f"{', '.join(sorted(given - REGISTRY_ONLY))}: options of the "
                               "statistics engine; source=registry takes only metrics and aggregation")
            return await service.analyze_experiment_data(id, metrics=q.metrics, aggregation=q.aggregation)
        if given & REGISTRY_ONLY:
            raise ApiError(422, "invalid_input", f"{', '.join(sorted(given & REGISTRY_ONLY))}: only for "
                           "source=registry; the engine analyses every metric the experiment declares")
        # Resolve the experiment here: across the intelligence server's tool hop a NotFound arrives as a plain 400.
        experiment = await service.get_experiment(id)
        options = {name: getattr(q, name) for name in given if name in AnalysisOptions.model_fields}
        options["record_decision"] = False
        intelligence = router.services.get("intelligence")
        if intelligence is not None:
            return await intelligence.analyze_experiment_performance(experiment.key, options)
        backend = router.backends.get("intelligence")  # a remote intelligence server behind the gateway
        if backend is None:
            raise ApiError(503, "backend_unavailable", "the intelligence server is not connected to this router; "
                           "source=registry gives the registry's descriptive statistics (no test, no verdict)")
        return await backend.call("analyze_experiment_performance", {
            "experiment": experiment.key, "options": AnalysisOptions.model_validate(options).model_dump(mode="json")})

    @op(
        f"{PREFIX}/{{id}}/summary", methods=["GET"], response_model=ExperimentSummary,
        operation_id="getExperimentSummary", summary="Human-readable summary",
        description="A short markdown report from the registry: status, hypothesis, per-variant table on the "
        "primary metric (per assigned user), the current leader (descriptive, not a significance claim) and "
        "whether every arm has the planned sample - min_sample_size, or when that is 0 the size that detects a 5% "
        "relative change at the control's value so far - with the numbers. GET /analyze tests and decides.",
        responses=_responses(404, 422),
    )
    async def summary(id: Ref, service: Service) -> ExperimentSummary:
        return await service.get_experiment_summary(id)

    app.router.routes[:] = _answer_405(app.router.routes)


def _answer_405(routes: list[BaseRoute]) -> list[BaseRoute]:
    """After each path's operations, a route that answers any other method 405 with its Allow header,
    so that a fixed path such as /get-variant never falls through to /{id} (the key "get-variant"
    stays reachable by numeric id)."""
    by_path: dict[str, list[BaseRoute]] = {}
    for route in routes:
        by_path.setdefault(getattr(route, "path", ""), []).append(route)
    answered: list[BaseRoute] = []
    for path, group in by_path.items():
        answered += group
        methods = {m for r in group if isinstance(r, JsonRoute) for m in r.methods}
        if methods:
            answered.append(Route(path, _NotAllowed(methods | ({"HEAD"} if "GET" in methods else set()))))
    return answered


class _NotAllowed:
    """An ASGI endpoint, so Starlette routes every method to it."""

    def __init__(self, methods: set[str]) -> None:
        self.allow = ", ".join(sorted(methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise ApiError(405, "method_not_allowed", f"{scope['method']} is not allowed here; use {self.allow}",
                       headers={"Allow": self.allow})


__all__ = ["MAX_BODY_BYTES", "PREFIX", "ApiError", "JsonRoute", "add_operations"]
