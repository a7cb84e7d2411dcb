"""The FastAPI app of the REST API, mounted into the router's HTTP app by `rest_routes(router)`.

It renders every error as ErrorBody and serves /openapi.json (OpenAPI 3.1, built once at startup
from the path operations and pydantic models, with a few touches FastAPI does not make) and /docs.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Receive, Scope, Send

from mcp_router.gateway.router import Router
from mcp_servers.postgres.models import METRIC_NAME_PATTERN

from .models import MAX_BATCH_USERS, ErrorBody, FieldError
from .routes import ApiError, JsonRoute, add_operations

VERSION = "0.1.0"
REF = "#/components/schemas/"
KINDS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}

DESCRIPTION = f"""\
NeonBlue's experiment endpoints for application backends: define and run experiments, assign
users to variants, record results, read per-variant statistics. The same service functions as
the MCP tools at /mcp, behind the same bearer token.

`{{id}}` is the experiment key (e.g. `checkout-1step`) or its numeric id. Every error answers
`{{"error": <kind>, "detail": <reason>}}`; 422 adds `errors` with the field paths. Batch
get-variant takes up to {MAX_BATCH_USERS} users."""


def _error(status: int, kind: str, detail: str, errors: list[FieldError] | None = None,
           headers: dict[str, str] | None = None) -> Response:
    body = ErrorBody(error=kind, detail=detail, errors=errors)
    return Response(body.model_dump_json(exclude_none=True), status_code=status, media_type="application/json",
                    headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        return _error(exc.status_code, exc.kind, exc.detail, headers=exc.headers)
    # Starlette's own: no route for the path (404), or a body it could not parse (400).
    detail = f"no API route {request.url.path}" if exc.status_code == 404 else exc.detail
    return _error(exc.status_code, KINDS.get(exc.status_code, "error"), detail, headers=exc.headers)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = exc.errors()
    if any(p["type"] == "json_invalid" for p in problems):
        reason = problems[0].get("ctx", {}).get("error") or problems[0]["msg"]
        return _error(400, "invalid_json", f"request body is not valid JSON: Invalid JSON: {reason}")
    errors = [FieldError(loc=list(p["loc"]), msg=p["msg"], type=p["type"]) for p in problems]
    detail = "; ".join(f"{'.'.join(str(part) for part in e.loc)}: {e.msg}" for e in errors)
    return _error(422, "invalid_input", detail, errors)


def build_api(router: Router) -> FastAPI:
    """The REST API and its OpenAPI document (built here, once) for the router's in-process services."""
    app = FastAPI(
        title="NeonBlue REST API", version=VERSION, description=DESCRIPTION, servers=[{"url": "/"}],
        openapi_url="/openapi.json", docs_url="/docs", redoc_url=None, redirect_slashes=False,
        strict_content_type=False,  # the HTTP app's middleware decides which content types reach here
        exception_handlers={HTTPException: _http_error, RequestValidationError: _invalid},
    )
    app.router.route_class = JsonRoute
    add_operations(app, router)
    document = _touch_up(get_openapi(title=app.title, version=app.version, description=app.description,
                                     routes=app.routes, servers=app.servers))
    app.openapi = lambda: document  # type: ignore[method-assign]
    return app


# ---------------------------------------------------------------- the OpenAPI document


def _touch_up(doc: dict[str, Any]) -> dict[str, Any]:
    """What FastAPI leaves to us: the bearer scheme (enforced by the HTTP app's middleware),
    readable names for same-named models, the metric shorthand, plain query parameters."""
    doc["security"] = [{"bearerAuth": []}]
    doc["components"]["securitySchemes"] = {"bearerAuth": {
        "type": "http", "scheme": "bearer", "description": "NEONBLUE_HTTP_TOKEN (or run/http_token of `neonblue up`)."}}
    doc = _short_names(doc)
    schemas = doc["components"]["schemas"]
    _metric_shorthand(schemas["ExperimentCreate"])
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                param["schema"] = _without_null(param["schema"])
            for code, answer in op["responses"].items():
                if code.startswith("2"):
                    answer["content"]["application/json"]["schema"].pop("title", None)
    return doc


def _short_names(doc: dict[str, Any]) -> dict[str, Any]:
    """Two servers' models of one name (ExperimentAnalysis) get module-path names from pydantic,
    mcp_servers__intelligence__models__ExperimentAnalysis; call it IntelligenceExperimentAnalysis."""
    schemas = doc["components"]["schemas"]
    renames = {name: parts[1].capitalize() + parts[-1] for name in schemas
               if len(parts := name.split("__")) >= 3 and parts[0] == "mcp_servers"}
    if not renames:
        return doc
    doc["components"]["schemas"] = {renames.get(name, name): schema for name, schema in schemas.items()}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: REF + renames.get(v[len(REF):], v[len(REF):]) if k == "$ref" else rewrite(v)
                    for k, v in node.items()}
        return [rewrite(v) for v in node] if isinstance(node, list) else node

    return rewrite(doc)


def _metric_shorthand(schema: dict[str, Any]) -> None:
    """ExperimentCreate's before-validator accepts a bare metric name for any metric object;
    schema generation cannot see validators, so the document says so here."""
    name = {"type": "string", "pattern": METRIC_NAME_PATTERN, "description": "Shorthand for {name: <this>}."}
    props = schema["properties"]
    props["primary_metric"] = {"anyOf": [props["primary_metric"], name],
                               "description": props["primary_metric"].pop("description", "")}
    for key in ("secondary_metrics", "guardrail_metrics"):
        props[key]["items"] = {"anyOf": [props[key]["items"], name]}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is optional by being absent, never by being null: drop the null branch
    (and the title and description FastAPI repeats from the parameter)."""
    branches = [b for b in schema.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" in schema and len(branches) == 1:
        schema = {**branches[0], **{k: v for k, v in schema.items() if k != "anyOf"}}
    return {k: v for k, v in schema.items() if k not in ("title", "description") and not (k == "default" and v is None)}


# ---------------------------------------------------------------- mounting


class _ApiPaths(BaseRoute):
    """Hands /api/... and the document's paths, scope untouched, to the FastAPI app (a Mount would
    move /api into root_path and out of the document's paths)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.paths = {p for p in (app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url) if p}

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (scope["path"].startswith("/api/") or scope["path"] in self.paths):
            return Match.FULL, {}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        return self.app.url_path_for(name, **path_params)


def rest_routes(router: Router) -> list[BaseRoute]:
    """The REST API, /openapi.json and /docs, for build_http_app(extra_routes=...). Auth, rate
    limiting and content-type checks come from the HTTP app's middleware (the same bearer token as /mcp)."""
    return [_ApiPaths(build_api(router))]


__all__ = ["build_api", "rest_routes"]
