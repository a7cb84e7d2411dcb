"""The OpenAPI 3.1 document of the REST API, generated from the operation table and the
pydantic models (request bodies in validation mode, responses in serialization mode).

Built once at startup and served as bytes at /openapi.json. OpenAPI 3.1 schemas are JSON
Schema 2020-12, which is what pydantic emits, so the models' schemas are used as they are;
their `$defs` become `components/schemas`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from mcp_servers.postgres.models import METRIC_NAME_PATTERN, Experiment, ExperimentCreate

from .models import MAX_BATCH_USERS, ErrorBody
from .routes import _REF, MAX_BODY_BYTES, OPERATIONS, Operation

REF = "#/components/schemas/{model}"
VERSION = "0.1.0"

ERRORS = {
    400: "Malformed JSON body (`invalid_json`).",
    401: "Missing or wrong bearer token (`unauthorized`).",
    404: "No experiment with this key or id (`not_found`).",
    409: "Refused in the experiment's current state, or the key is taken (`conflict`).",
    413: f"Request body over {MAX_BODY_BYTES} bytes (`payload_too_large`).",
    422: "Invalid input (`invalid_input`); `errors` lists the field paths, e.g. [\"body\", \"variants\", 0, \"key\"].",
    429: "Over the per-client rate limit (`rate_limited`); retry after the Retry-After header.",
    503: "The postgres server is not available in this process (`backend_unavailable`).",
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
EXAMPLE_REF = "checkout-1step"

DESCRIPTION = f"""\
NeonBlue's experiment endpoints for application backends: define and run experiments, assign
users to variants, record results, read per-variant statistics. The same service functions as
the MCP tools at /mcp, behind the same bearer token.

`{{id}}` is the experiment key (e.g. `checkout-1step`) or its numeric id. Every error answers
`{{"error": <kind>, "detail": <reason>}}`; 422 adds `errors` with the field paths. Batch
get-variant takes up to {MAX_BATCH_USERS} users."""


def _metric_shorthand(schema: dict[str, Any]) -> None:
    """ExperimentCreate's before-validator accepts a bare metric name for any metric object;
    schema generation cannot see validators, so the document says so here."""
    name = {"type": "string", "pattern": METRIC_NAME_PATTERN, "description": "Shorthand for {name: <this>}."}
    props = schema["properties"]
    props["primary_metric"] = {"anyOf": [props["primary_metric"], name],
                               "description": props["primary_metric"].pop("description", "")}
    for key in ("secondary_metrics", "guardrail_metrics"):
        items = props[key]["items"]
        props[key]["items"] = {"anyOf": [items, name]}


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is optional by being absent, never by being null: drop the null branch."""
    prop = {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}
    branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" in prop and len(branches) == 1:
        del prop["anyOf"]
        prop = {**branches[0], **prop}
    return prop


def _models(response: type[BaseModel] | tuple[type[BaseModel], ...]) -> tuple[type[BaseModel], ...]:
    return response if isinstance(response, tuple) else (response,)


def _short_names(refs: dict[Any, dict[str, str]], components: dict[str, Any]) -> tuple[dict[Any, dict[str, str]], dict[str, Any]]:
    """Two servers' models of one name (ExperimentAnalysis) get module-path names from pydantic,
    mcp_servers__intelligence__models__ExperimentAnalysis; call it IntelligenceExperimentAnalysis."""
    renames = {}
    for name in components:
        parts = name.split("__")
        if len(parts) >= 3 and parts[0] == "mcp_servers":
            renames[name] = parts[1].capitalize() + parts[-1]
    if not renames:
        return refs, components
    prefix = REF.split("{")[0]

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (prefix + renames.get(v[len(prefix):], v[len(prefix):])
                        if k == "$ref" and isinstance(v, str) and v.startswith(prefix) else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return ({key: rewrite(ref) for key, ref in refs.items()},
            {renames.get(name, name): rewrite(schema) for name, schema in components.items()})


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if "{id}" in op.path:
        params.append({"name": "id", "in": "path", "required": True, "schema": _REF.json_schema(),
                       "description": "Experiment key or numeric id.", "example": EXAMPLE_REF})
    if op.query is not None:
        schema = op.query.model_json_schema(ref_template=REF)
        required = set(schema.get("required", []))
        for name, prop in schema["properties"].items():
            prop = _without_null(prop)
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop.pop("description")
            params.append(param)
    return params


def _json(ref: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": ref}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def build_openapi(operations: Iterable[Operation] = OPERATIONS) -> bytes:
    """The OpenAPI 3.1 document as JSON bytes."""
    operations = list(operations)
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in operations:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(model, "serialization") for model in _models(op.response)]
    wanted = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(wanted, ref_template=REF)
    refs, components = _short_names(refs, dict(top.get("$defs", {})))
    create_ref = refs.get((ExperimentCreate, "validation"))
    if create_ref is not None:
        _metric_shorthand(components[create_ref["$ref"].rsplit("/", 1)[1]])

    paths: dict[str, dict[str, Any]] = {}
    error_ref = refs[(ErrorBody, "serialization")]
    for op in operations:
        answers = [refs[(model, "serialization")] for model in _models(op.response)]
        success = answers[0] if len(answers) == 1 else {"anyOf": answers}
        responses: dict[str, Any] = {
            str(code): {"description": "Success." if code == op.status else "Success (see the description).",
                        "content": _json(success)}
            for code in (op.status, *op.extra_statuses)
        }
        if op.status == 201 and op.response is Experiment:
            responses["201"]["headers"] = {"Location": {"schema": {"type": "string"},
                                                        "description": "URL of the new experiment."}}
        for code in sorted({*op.errors, *ALWAYS}):
            responses[str(code)] = {"description": ERRORS[code], "content": _json(error_ref)}
        entry: dict[str, Any] = {
            "operationId": op.operation_id, "summary": op.summary, "description": op.description,
            "parameters": _parameters(op), "responses": responses,
        }
        if op.body is not None:
            example = CREATE_EXAMPLE if op.body is ExperimentCreate else None
            entry["requestBody"] = {"required": True, "content": _json(refs[(op.body, "validation")], example)}
        paths.setdefault(op.path, {})[op.method.lower()] = entry

    document = {
        "openapi": "3.1.0",
        "info": {"title": "NeonBlue REST API", "version": VERSION, "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "NEONBLUE_HTTP_TOKEN (or run/http_token of `neonblue up`)."}},
        },
    }
    return orjson.dumps(document)


__all__ = ["build_openapi"]
