"""The REST routes: one table of operations, from which both the Starlette routes and the
OpenAPI document are built, so the two cannot drift apart.

Each route is thin: validate the path, query and body with pydantic models, call ONE
ExperimentService method (the same one the MCP tool calls), answer its return model as
JSON. Errors: a ServiceError answers its `status_code` as {"error", "detail"}; malformed
JSON is 400; a validation error is 422 with the field paths in `errors`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from mcp_router.router import Router
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
    ActorQuery,
    AnalyzeQuery,
    BatchGetVariantRequest,
    ErrorBody,
    FieldError,
    GetQuery,
    GetVariantRequest,
    ListQuery,
    RecordResultRequest,
    StopQuery,
)

log = logging.getLogger("neonblue.rest")

PREFIX = "/api/v1/experiments"
OPENAPI_PATH = "/openapi.json"
MAX_BODY_BYTES = 1_048_576
JSON = "application/json"

_REF = TypeAdapter(ExperimentRef)


class ApiError(Exception):
    """An answer other than success, raised anywhere in a request and rendered once."""

    def __init__(self, status: int, kind: str, detail: str, errors: list[FieldError] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail, self.errors, self.headers = status, kind, detail, errors, headers

    def response(self) -> Response:
        body = ErrorBody(error=self.kind, detail=self.detail, errors=self.errors)
        return Response(body.model_dump_json(exclude_none=True), status_code=self.status, media_type=JSON,
                        headers=self.headers)


def _kind(exc: ServiceError) -> str:
    """NotFound -> not_found, Conflict -> conflict, InvalidInput -> invalid_input, ..."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _invalid(exc: ValidationError, where: str) -> ApiError:
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    if where == "body" and any(p["type"] == "json_invalid" for p in problems):
        return ApiError(400, "invalid_json", f"request body is not valid JSON: {problems[0]['msg']}")
    errors = [FieldError(loc=[where, *p["loc"]], msg=p["msg"], type=p["type"]) for p in problems]
    detail = "; ".join(f"{'.'.join(str(part) for part in e.loc)}: {e.msg}" for e in errors)
    return ApiError(422, "invalid_input", detail, errors)


# ---------------------------------------------------------------- one request, parsed


@dataclass
class Call:
    """What a handler gets: the service, the router, and the validated path, query and body."""

    router: Router
    service: Any  # mcp_servers.postgres.ExperimentService
    ref: str | None = None
    query: Any = None
    body: Any = None


Handler = Callable[[Call], Awaitable[BaseModel | tuple[BaseModel, int]]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI path; `{id}` is the experiment key or numeric id
    operation_id: str
    summary: str
    description: str
    handler: Handler
    response: type[BaseModel] | tuple[type[BaseModel], ...]  # a tuple: any one of them (anyOf)
    status: int = 200
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = (422,)
    extra_statuses: tuple[int, ...] = ()  # other success codes the handler may answer
    aliases: tuple[str, ...] = field(default=())  # extra paths served but not documented (no trailing slash)


# ---------------------------------------------------------------- handlers: one service call each


async def _create(c: Call) -> tuple[BaseModel, int]:
    return await c.service.create_experiment(c.body, actor=c.query.actor), 201


async def _start(c: Call) -> BaseModel:
    return await c.service.start_experiment(c.ref, actor=c.query.actor, reason=c.query.reason)


async def _stop(c: Call) -> BaseModel:
    return await c.service.stop_experiment(c.ref, winner=c.query.declare_winner, actor=c.query.actor,
                                           reason=c.query.reason)


async def _list(c: Call) -> BaseModel:
    q: ListQuery = c.query
    return await c.service.list_experiments(status=q.status, type=q.type, owner=q.owner, tag=q.tag, search=q.search,
                                            limit=q.limit, offset=q.offset)


async def _get(c: Call) -> BaseModel:
    return await c.service.get_experiment(c.ref, include_change_log=c.query.include_change_log)


async def _archive(c: Call) -> BaseModel:
    return await c.service.archive_experiment(c.ref, actor=c.query.actor, reason=c.query.reason)


async def _get_variant(c: Call) -> BaseModel:
    b: GetVariantRequest = c.body
    return await c.service.get_variant(b.experiment, b.user_id, b.attributes)


async def _get_variant_batch(c: Call) -> BaseModel:
    b: BatchGetVariantRequest = c.body
    return await c.service.assign_many(b.experiment, b.user_ids, b.attributes, record=b.record)


async def _record_result(c: Call) -> tuple[BaseModel, int]:
    b: RecordResultRequest = c.body
    result = await c.service.record_result(b.experiment, b.user_id, b.metric, b.value, event_id=b.event_id,
                                           metadata=b.metadata)
    return result, 200 if result.duplicate else 201


async def _analyze(c: Call) -> BaseModel:
    q: AnalyzeQuery = c.query
    intelligence = c.router.services.get("intelligence")
    if q.source == "registry" or (q.source == "auto" and intelligence is None):
        return await c.service.analyze_experiment_data(c.ref, metrics=q.metrics, aggregation=q.aggregation)
    if intelligence is None:
        raise ApiError(503, "backend_unavailable", "the intelligence server does not run in this process; "
                       "use source=registry for the registry's descriptive statistics")
    # Resolve the experiment here: across the intelligence server's tool hop a NotFound arrives as a plain 400.
    experiment = await c.service.get_experiment(c.ref)
    from mcp_servers.intelligence.models import AnalysisOptions

    options = {name: getattr(q, name) for name in q.model_fields_set if name in AnalysisOptions.model_fields}
    return await intelligence.analyze_experiment_performance(experiment.key, {**options, "record_decision": False})


async def _summary(c: Call) -> BaseModel:
    return await c.service.get_experiment_summary(c.ref)


def operations(intelligence: bool = False) -> tuple[Operation, ...]:
    """The table; /analyze's parameters and answer depend on whether the intelligence server runs here."""
    return (
        Operation(
            "POST", f"{PREFIX}/", "createExperiment", "Create an experiment (as a draft)",
            "Define an experiment: unique key, type, primary metric and variants (exactly one control; "
            "weights as fractions summing to 1, or omit all weights for an equal split). It assigns nobody "
            "until started. A metric may be given as a bare name instead of {name, direction}.",
            _create, Experiment, status=201, body=ExperimentCreate, query=ActorQuery, errors=(400, 409, 413, 422),
            aliases=(PREFIX,),
        ),
        Operation(
            "GET", f"{PREFIX}/", "listExperiments", "List experiments",
            "Newest first, with filters and pagination (`next_offset` is null on the last page). "
            "Archived experiments are listed only when asked for by status.",
            _list, ExperimentPage, query=ListQuery, aliases=(PREFIX,),
        ),
        Operation(
            "POST", f"{PREFIX}/get-variant", "getVariant", "Assign a user to a variant",
            "Deterministic and sticky (GrowthBook-compatible hashing): the first assignment is recorded and wins "
            "forever. Only running experiments assign; a concluded one serves its declared winner. When "
            "`in_experiment` is false, serve your default experience.",
            _get_variant, VariantAssignment, body=GetVariantRequest, errors=(400, 404, 413, 422),
        ),
        Operation(
            "POST", f"{PREFIX}/get-variant/batch", "getVariantBatch", "Assign many users at once",
            "The batch form of get-variant for one experiment (same rules): `assigned` maps each user id to "
            "its variant key, or null when the user is not in the experiment.",
            _get_variant_batch, BatchAssignment, body=BatchGetVariantRequest, errors=(400, 404, 413, 422),
        ),
        Operation(
            "POST", f"{PREFIX}/record-result", "recordResult", "Record a metric value for an assigned user",
            "Attributed to the user's recorded variant. The metric must be declared on the experiment. "
            "201 when recorded; 200 when `event_id` was seen before (nothing added, the first record is returned).",
            _record_result, ResultRecorded, status=201, body=RecordResultRequest, errors=(400, 404, 409, 413, 422),
            extra_statuses=(200,),
        ),
        Operation(
            "GET", f"{PREFIX}/{{id}}", "getExperiment", "Get one experiment",
            "Definition, variants with their configs, status, users assigned per variant, and optionally the change log.",
            _get, ExperimentDetail, query=GetQuery, errors=(404, 422),
        ),
        Operation(
            "DELETE", f"{PREFIX}/{{id}}", "archiveExperiment", "Archive an experiment",
            "Archives (never deletes: the registry keeps every experiment for the audit trail) a draft, stopped or "
            "concluded experiment: hidden from lists unless asked for by status, frozen, results no longer "
            "accepted; GET still answers it, with status archived. A running experiment must be stopped first "
            "(409). Idempotent.",
            _archive, Experiment, query=ActorQuery, errors=(404, 409, 422),
        ),
        Operation(
            "POST", f"{PREFIX}/{{id}}/start", "startExperiment", "Start a draft",
            "From now on get-variant assigns users. Refused (409) unless the experiment is a draft with at least "
            "2 variants, exactly one control and weights summing to 1.",
            _start, Experiment, query=ActorQuery, errors=(404, 409, 422),
        ),
        Operation(
            "POST", f"{PREFIX}/{{id}}/stop", "stopExperiment", "Stop, and optionally declare the winner",
            "running -> stopped: nobody is assigned any more, results are still accepted. With "
            "`declare_winner=<variant key>` the experiment is concluded (also from stopped) and get-variant "
            "serves the winner's config to everyone.",
            _stop, Experiment, query=StopQuery, errors=(404, 409, 422),
        ),
        _analyze_operation(intelligence),
        Operation(
            "GET", f"{PREFIX}/{{id}}/summary", "getExperimentSummary", "Human-readable summary",
            "A short markdown report: status, hypothesis, per-variant table on the primary metric, the current "
            "leader (descriptive, not a significance claim) and whether the sample size is reached.",
            _summary, ExperimentSummary, errors=(404, 422),
        ),
    )


def _analyze_operation(intelligence: bool) -> Operation:
    registry = ("registry: users assigned and observed traffic share per variant, and per metric the users with data, "
                "mean, std, sum, sum of squares, conversion rate and lift vs control, from the results recorded "
                "with record-result (QA-forced users excluded); descriptive, no significance claim.")
    if not intelligence:
        return Operation(
            "GET", f"{PREFIX}/{{id}}/analyze", "analyzeExperiment", "Analyse an experiment",
            f"{registry} (The intelligence server does not run in this process, so that is the only source.)",
            _analyze, ExperimentAnalysis, query=AnalyzeQuery, errors=(404, 422),
        )
    from mcp_servers.intelligence.models import ExperimentAnalysis as PerformanceAnalysis

    from .models import intelligence_analyze_query

    return Operation(
        "GET", f"{PREFIX}/{{id}}/analyze", "analyzeExperiment", "Analyse an experiment",
        "intelligence (the default here): the Experiment Intelligence analysis over the event store - per metric "
        "and arm lifts with intervals, fixed and sequential p-values, chance to win, CUPED, SRM, multiple testing, "
        "power, guardrails, and a verdict with the rule that produced it; options as query parameters. The verdict "
        f"is not written to the audit trail (the MCP tool analyze_experiment_performance does that). {registry}",
        _analyze, (PerformanceAnalysis, ExperimentAnalysis), query=intelligence_analyze_query(), errors=(400, 404, 422),
    )


OPERATIONS = operations()  # the table when only the registry runs in-process


# ---------------------------------------------------------------- parsing


@cache
def _array_fields(model: type[BaseModel]) -> frozenset[str]:
    """Query fields that repeat (`?status=running&status=stopped`): arrays in the model's schema."""
    def is_array(schema: dict[str, Any]) -> bool:
        return schema.get("type") == "array" or any(is_array(s) for s in schema.get("anyOf", []))

    return frozenset(n for n, s in model.model_json_schema()["properties"].items() if is_array(s))


def _query(model: type[BaseModel], params: QueryParams) -> BaseModel:
    arrays = _array_fields(model)
    raw = {name: params.getlist(name) if name in arrays else params[name]
           for name in model.model_fields if name in params}
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc, "query") from None


async def _body(model: type[BaseModel], request: Request) -> BaseModel:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdecimal() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "payload_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        # Strict, so the behaviour is what the document says: "5" is not an integer, nor "true" a boolean.
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        if not all(p["type"] == "int_type" and isinstance(p.get("input"), float) and p["input"].is_integer()
                   for p in problems):
            raise _invalid(exc, "body") from None
    # JSON Schema's integer includes 5.0, which strict mode refuses: that alone is validated again, laxly.
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc, "body") from None


def _ref(request: Request) -> str:
    try:
        return _REF.validate_python(request.path_params["id"])
    except ValidationError as exc:
        raise ApiError(422, "invalid_input", f"path.id: {exc.errors()[0]['msg']}",
                       [FieldError(loc=["path", "id"], msg=exc.errors()[0]["msg"], type=exc.errors()[0]["type"])]) from None


def _endpoint(router: Router, op: Operation) -> Callable[[Request], Awaitable[Response]]:
    has_ref = "{id}" in op.path

    async def endpoint(request: Request) -> Response:
        try:
            service = router.services.get("postgres")
            if service is None:
                raise ApiError(503, "backend_unavailable",
                               "the REST API serves the postgres server in-process; it runs remotely or failed to open here")
            call = Call(router, service)
            if has_ref:
                call.ref = _ref(request)
            if op.query is not None:
                call.query = _query(op.query, request.query_params)
            if op.body is not None:
                call.body = await _body(op.body, request)
            result = await op.handler(call)
        except ApiError as exc:
            return exc.response()
        except Exception as exc:
            refusal = _service_error(exc)
            if refusal is not None:
                return ApiError(refusal.status_code, _kind(refusal), str(refusal)).response()
            log.exception("%s %s failed", op.method, request.url.path)  # a bug: the details stay in the log
            return ApiError(500, "internal_error", "internal error; the server log has the details").response()
        model, status = result if isinstance(result, tuple) else (result, op.status)
        headers = None
        if status == 201 and isinstance(model, Experiment):
            headers = {"Location": f"{PREFIX}/{model.key}"}
        return Response(type(model).__pydantic_serializer__.to_json(model), status_code=status, media_type=JSON,
                        headers=headers)

    endpoint.__name__ = op.operation_id
    return endpoint


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


def _starlette_path(path: str) -> str:
    return path.replace("{id}", "{id:str}")


def rest_routes(router: Router) -> list[BaseRoute]:
    """The REST API and /openapi.json as Starlette routes, for build_http_app(extra_routes=...).

    The OpenAPI document is built once, here. Auth and rate limiting come from the app's
    middleware (the same bearer token as /mcp).
    """
    from .openapi import build_openapi

    table = operations(intelligence="intelligence" in router.services)
    document = build_openapi(table)
    by_path: dict[str, list[Operation]] = {}
    for op in table:
        for path in (op.path, *op.aliases):
            by_path.setdefault(path, []).append(op)
    routes: list[BaseRoute] = []
    # Per path, its operations and then a 405 for any other method, so that a fixed path such as
    # /get-variant never falls through to /{id} (the key "get-variant" stays reachable by numeric id).
    for path, ops in by_path.items():
        for op in ops:
            routes.append(Route(_starlette_path(path), _endpoint(router, op), methods=[op.method],
                                name=f"{op.operation_id}:{path}"))
        routes.append(Route(_starlette_path(path), _AnyMethod(_not_allowed({op.method for op in ops}))))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type=JSON)

    async def not_found(request: Request) -> Response:
        return ApiError(404, "not_found", f"no API route {request.url.path}").response()

    return [*routes, Route(OPENAPI_PATH, openapi, methods=["GET"]), Route("/api/{rest:path}", _AnyMethod(not_found))]


def _not_allowed(methods: set[str]) -> Callable[[Request], Awaitable[Response]]:
    if "GET" in methods:
        methods = methods | {"HEAD"}  # Starlette answers HEAD for every GET route
    allow = ", ".join(sorted(methods))

    async def endpoint(request: Request) -> Response:
        return ApiError(405, "method_not_allowed", f"{request.method} is not allowed here; use {allow}",
                        headers={"Allow": allow}).response()

    return endpoint


class _AnyMethod:
    """An ASGI endpoint: Starlette routes it for every method (a function endpoint gets GET only)."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


__all__ = ["OPERATIONS", "Operation", "operations", "rest_routes"]
