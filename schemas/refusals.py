"""Refusals an agent can act on: one line, the reason kept, the kind carried across every hop.

Every tool error NeonBlue answers is made here, whether a server's tool layer
(`mcp_servers.tool_server.ToolServer`) or the router's gateway produces it:

- `refusal(exc, input_schema)` turns whatever a tool call raised into the ServiceError to answer,
  of the right kind, with one readable line. Argument validation errors read
  `argument 'limit': should be less than or equal to 500, got 9999; expected an integer from 1 to 500`
  (no pydantic model names or links); the SDK's "Error executing tool X: " wrapper and exception
  groups are unwrapped; a crash says only that it was one (its details stay in the server's log).
- `refusal_result(err)` is the isError CallToolResult: the line as text, the kind in
  `_meta["neonblue/error"]["kind"]`.
- `refusal_of(result)` reads a peer's isError result back as that ServiceError subclass, so a
  NotFound stays a NotFound through the router, the intelligence server and the REST API.
- `one_line(text)` is the last pass over any refusal text: one line, bounded, without engine
  codes (`Code: 131. DB::Exception:`), backend prefixes (`postgres.get_experiment:`) or tracebacks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import mcp.types as types
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import ValidationError

from schemas.errors import KINDS, ConfirmationRequired, InternalError, InvalidInput, ServiceError

ERROR_META = "neonblue/error"
MAX_CHARS = 1000  # a refusal is a sentence or two, never a dump
MAX_PROBLEMS = 6  # argument problems listed in one refusal; the rest are counted
CRASH = "the tool failed on an internal error (the server log has the details); retry, and report it if it persists"

_SCRUB: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?s)\s*Traceback \(most recent call last\).*$"), ""),
    (re.compile(r"(?s)\.?\s*Stack trace:.*$"), ""),
    (re.compile(r"\s*For further information visit \S+"), ""),
    (re.compile(r"\s*\[type=[^\]]*\]"), ""),
    (re.compile(r"\b\d+ validation errors? for \S+"), "invalid arguments:"),
    (re.compile(r"(?:Error executing tool [\w.-]+(?::\s*|$))+"), ""),
    (re.compile(r"\b(?:postgres|clickhouse|chromadb|intelligence)\.[A-Za-z_]\w*(?::\s*|\s+(?=returned))"), ""),
    (re.compile(r"\bCode:\s*\d+\.\s*"), ""),
    (re.compile(r"\bDB::Exception:\s*"), ""),
    (re.compile(r"\s*\((?:chdb|chDB|server)\)"), ""),
    (re.compile(r"\s*\([A-Z]+(?:_[A-Z]+)+\)"), ""),  # ClickHouse error names: (UNKNOWN_IDENTIFIER)
]


def one_line(text: str, limit: int = MAX_CHARS) -> str:
    """`text` as one bounded line without engine codes, backend prefixes, tracebacks or pydantic links."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split()).strip(" :;")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or "refused without a reason"


# -- what a tool call raised -> the refusal to answer ---------------------------------------------

def refusal(exc: BaseException, input_schema: Mapping[str, Any] | None = None) -> ServiceError:
    """The ServiceError to answer for what a tool call raised, of the right kind, on one line.

    `input_schema` (the tool's inputSchema) lets an argument error say what was expected.
    """
    reason = _reason(exc)
    if isinstance(reason, ValidationError):
        return InvalidInput(render_validation_error(reason, input_schema))
    if isinstance(reason, ConfirmationRequired):
        return ConfirmationRequired(one_line(str(reason)), question=one_line(reason.question))
    if isinstance(reason, ServiceError):
        return KINDS.get(reason.kind, ServiceError)(one_line(str(reason)))
    if isinstance(reason, ToolError) and not isinstance(reason, UnexpectedToolError):
        return ServiceError(one_line(str(reason)))  # the SDK's own (an unknown tool) or a plain ToolError
    return InternalError(CRASH)


def _reason(exc: BaseException) -> BaseException:
    """The exception that says why: under the SDK's "Error executing tool X" wrappers and inside
    exception groups (a task group wraps a peer's refusal; the first one, when every leaf is one)."""
    for _ in range(16):  # wrappers nest once per tool hop; bounded in case of a cycle
        if isinstance(exc, (ServiceError, ValidationError)):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            leaves = [_reason(e) for e in exc.exceptions]
            if leaves and all(isinstance(leaf, ServiceError) for leaf in leaves):
                return leaves[0]
            return exc
        if isinstance(exc, ToolError) and exc.__cause__ is not None:
            # A ValidationError under a crash wrapper is the tool's own bug (its output), not the caller's input.
            if isinstance(exc, UnexpectedToolError) and isinstance(exc.__cause__, ValidationError):
                return exc
            exc = exc.__cause__
            continue
        return exc
    return exc


# -- MCP results ----------------------------------------------------------------------------------

def refusal_result(err: ServiceError) -> types.CallToolResult:
    """The isError result for a refusal: its one line as text, its kind in `_meta` (and, for a confirmation,
    the question to ask the user)."""
    entry: dict[str, Any] = {"kind": err.kind}
    if isinstance(err, ConfirmationRequired):
        entry["question"] = err.question
    return types.CallToolResult(content=[types.TextContent(type="text", text=one_line(str(err)))], is_error=True,
                                meta={ERROR_META: entry})


def kind_of(result: types.CallToolResult) -> str | None:
    """The kind an isError result carries, or None (a server that does not say)."""
    entry = (result.meta or {}).get(ERROR_META)
    kind = entry.get("kind") if isinstance(entry, Mapping) else None
    return kind if isinstance(kind, str) and kind in KINDS else None


def result_text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


def question_of(result: types.CallToolResult) -> str | None:
    """The question a `confirmation_required` refusal asks the user, or None."""
    entry = (result.meta or {}).get(ERROR_META)
    question = entry.get("question") if isinstance(entry, Mapping) else None
    return question if isinstance(question, str) and question else None


def refusal_of(result: types.CallToolResult) -> ServiceError:
    """A peer's isError result raised again as its kind's class (ServiceError when it names none)."""
    kind = kind_of(result) or ""
    if kind == ConfirmationRequired.kind:
        return ConfirmationRequired(one_line(result_text(result)), question=question_of(result))
    return KINDS.get(kind, ServiceError)(one_line(result_text(result)))


def normalized(result: types.CallToolResult) -> types.CallToolResult:
    """An isError result as every NeonBlue refusal reads: one clean line; its kind kept when it has one."""
    if not result.is_error:
        return result
    text = one_line(result_text(result))
    meta = dict(result.meta or {})
    kind = kind_of(result)
    if kind is not None:
        meta[ERROR_META] = {**meta[ERROR_META], "kind": kind}
    return result.model_copy(update={"content": [types.TextContent(type="text", text=text)], "meta": meta or None,
                                     "structured_content": None})


# -- argument validation errors -------------------------------------------------------------------

def render_validation_error(exc: ValidationError, input_schema: Mapping[str, Any] | None = None) -> str:
    """`argument 'x': <what is wrong>, got <what came>; expected <type and constraints>`, for each
    argument at fault (the first MAX_PROBLEMS), on one line."""
    schema = input_schema or {}
    defs = schema.get("$defs", {}) if isinstance(schema, Mapping) else {}
    problems: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        path, node = _locate(err.get("loc", ()), schema, defs)
        if path not in problems:  # a union reports once per branch: the first says enough
            problems[path] = _problem(err, path, node, defs)
    shown = list(problems.values())[:MAX_PROBLEMS]
    if len(problems) > len(shown):
        shown.append(f"and {len(problems) - len(shown)} more")
    return one_line(" | ".join(shown) or "invalid arguments", limit=MAX_CHARS * 2)


def _problem(err: Mapping[str, Any], path: str, node: Mapping[str, Any] | None, defs: Mapping[str, Any]) -> str:
    expected = f"; expected {_describe(node, defs)}" if node else ""
    kind = err.get("type", "")
    if kind == "missing":
        return f"argument {path!r}: missing{expected or '; it is required'}"
    if kind == "extra_forbidden":
        return f"argument {path!r}: not accepted here; leave it out"
    if kind in ("value_error", "assertion_error"):  # a validator's own sentence says what to do
        return f"argument {path!r}: {_what(err)}"
    got = "" if "input" not in err else f", got {_shown(err['input'])}"
    return f"argument {path!r}: {_what(err)}{got}{expected}"


_INSTANCE_OF = re.compile(r"(?:a valid dictionary or )?(?:an )?instance of [A-Za-z_][\w.\[\], ]*")


def _what(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "is invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    msg = _INSTANCE_OF.sub("an object", msg).replace("a valid dictionary", "an object")
    msg = re.sub(r"^Input should\b", "should", msg)
    msg = re.sub(r"^Input\b", "value", msg)
    return msg[:1].lower() + msg[1:] if msg[:2] != msg[:2].upper() else msg


def _shown(value: Any) -> str:
    """The rejected value, briefly and on one line (never a huge string or a whole object)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def _resolve(node: Any, defs: Mapping[str, Any]) -> Mapping[str, Any]:
    for _ in range(8):
        if not isinstance(node, Mapping):
            return {}
        ref = node.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return node
        node = {**defs.get(ref.removeprefix("#/$defs/"), {}), **{k: v for k, v in node.items() if k != "$ref"}}
    return {}


def _child(node: Any, part: str | int, defs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The schema of `part` (a property, a list index, a mapping's key) inside `node`, if it has one."""
    node = _resolve(node, defs)
    for branch in node.get("anyOf", node.get("oneOf", [])):
        found = _child(branch, part, defs)
        if found is not None:
            return found
    if isinstance(part, int):
        items = node.get("items")
        return _resolve(items, defs) if isinstance(items, Mapping) else None
    props = node.get("properties")
    if isinstance(props, Mapping) and part in props:
        return _resolve(props[part], defs)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping) and node.get("type") == "object":
        return _resolve(extra, defs)
    return None


_TAG = re.compile(r"[\[\]\-<>]|^[A-Z]|^(?:str|int|float|bool|bytes|none|list|dict|tuple|set|decimal|date|datetime)$")


def _locate(loc: Sequence[str | int], schema: Mapping[str, Any], defs: Mapping[str, Any]
            ) -> tuple[str, Mapping[str, Any] | None]:
    """The argument path an agent reads (`experiment.variants[0].key`) and its schema. Parts the
    schema does not know are pydantic's union tags (type or model names): left out."""
    node: Mapping[str, Any] | None = schema or None
    path = ""
    for part in loc:
        found = _child(node, part, defs) if node is not None else None
        if found is None and (isinstance(part, str) and _TAG.search(part)):
            continue
        node = found
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "arguments", node


def _describe(node: Any, defs: Mapping[str, Any], depth: int = 0) -> str:
    """What a schema accepts, in a few words: type, bounds, length, pattern, choices."""
    node = _resolve(node, defs)
    if not node:
        return "any value"
    if "const" in node:
        return json.dumps(node["const"])
    if "enum" in node:
        values = [json.dumps(v) for v in node["enum"]]
        return "one of " + ", ".join(values[:12]) + (", …" if len(values) > 12 else "")
    branches = node.get("anyOf") or node.get("oneOf")
    if branches and depth < 3:
        kinds = [_resolve(b, defs) for b in branches]
        nullable = any(k.get("type") == "null" for k in kinds)
        text = " or ".join(dict.fromkeys(_describe(k, defs, depth + 1) for k in kinds if k.get("type") != "null"))
        return (text or "null") + (" or null" if nullable and text else "")
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(_describe({**node, "type": k}, defs, depth + 1) for k in kind)
    if kind == "string":
        text = {"date-time": "an ISO 8601 date-time", "date": "an ISO date (YYYY-MM-DD)", "uuid": "a UUID",
                "duration": "an ISO 8601 duration"}.get(node.get("format", ""), "a string")
        text += _bounds(node.get("minLength"), node.get("maxLength"), "characters")
        pattern = node.get("pattern")
        if isinstance(pattern, str) and len(pattern) <= 80:
            text += f" matching {pattern}"
        return text
    if kind in ("integer", "number"):
        return ("an integer" if kind == "integer" else "a finite number") + _range(node)
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "array":
        text = "a list" + _bounds(node.get("minItems"), node.get("maxItems"), "items")
        items = node.get("items")
        if isinstance(items, Mapping) and items and depth < 2:
            text += f", each {_describe(items, defs, depth + 1)}"
        return text
    if kind == "object" or "properties" in node:
        props = list(node.get("properties", {}))
        required = [p for p in node.get("required", []) if p in props]
        if props and depth < 2:
            text = "an object with " + _names("required", required)
            optional = [p for p in props if p not in required]
            return text + ("; " if required and optional else "") + _names("optional", optional)
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping) and extra and depth < 2:
            return f"an object mapping names to {_describe(extra, defs, depth + 1)}"
        return "an object"
    return "a value"


def _names(label: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
    return f"{label} {shown}"


def _bounds(low: Any, high: Any, unit: str) -> str:
    if low is not None and high is not None:
        return f" of {low} to {high} {unit}"
    if low:
        return f" of at least {low} {unit}"
    if high is not None:
        return f" of at most {high} {unit}"
    return ""


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(node: Mapping[str, Any]) -> str:
    low, high, xlow, xhigh = (None if node.get(k) is None else _number(node[k])
                              for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
    if low is not None and high is not None:
        return f" from {low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"≥ {low}")
    if xlow is not None:
        parts.append(f"> {xlow}")
    if high is not None:
        parts.append(f"≤ {high}")
    if xhigh is not None:
        parts.append(f"< {xhigh}")
    return (" " + " and ".join(parts)) if parts else ""
