"""Validate a metadata filter (`where`) before Chroma sees it.

Chroma's own errors are terse or arrive late; here every field is checked
against the collection's known metadata, every operator against the allowed
set, and every value against the field's type, and the message says what to
write instead. The accepted form is Chroma's:

    {"outcome": "success"}                                  # equality shorthand
    {"lift": {"$gte": 0.1}}                                 # one operator per field
    {"industry": "ecommerce", "sample_size": {"$gt": 1000}} # several fields = $and
    {"$or": [{"experiment_type": "ui"}, {"experiment_type": "feature"}]}
    {"applied_to_segments": {"$contains": "mobile"}}         # list fields
    {"created_at": {"$gte": "2025-01-01"}}                  # timestamps: ISO date/time or Unix seconds

Several fields in one object are rewritten as an explicit `$and` (Chroma wants
one key per object); integers given for float fields are sent as floats.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from schemas.errors import InvalidInput

from .documents import epoch_seconds

FieldType = Literal["str", "int", "float", "bool", "timestamp", "str_list"]

COMPARISON = ("$gt", "$gte", "$lt", "$lte")
EQUALITY = ("$eq", "$ne")
MEMBERSHIP = ("$in", "$nin")
CONTAINS = ("$contains", "$not_contains")
LOGICAL = ("$and", "$or")
OPERATORS = EQUALITY + COMPARISON + MEMBERSHIP + CONTAINS
MAX_DEPTH = 8
MAX_LIST = 200

# The metadata each collection stores (see documents.py); only these can be filtered.
FIELDS: dict[str, dict[str, FieldType]] = {
    "experiments": {
        "experiment_key": "str", "name": "str", "experiment_type": "str", "status": "str", "industry": "str",
        "user_segment": "str", "platform": "str", "primary_metric": "str", "metric_direction": "str",
        "winner": "str", "outcome": "str", "lift": "float", "p_value": "float",
        "statistical_significance": "float", "conversion_rate": "float", "sample_size": "int",
        "variant_count": "int", "tags": "str_list", "created_at": "timestamp", "concluded_at": "timestamp",
    },
    "user_journeys": {
        "journey_id": "str", "user_id": "str", "user_segment": "str", "device_type": "str", "traffic_source": "str",
        "conversion_outcome": "str", "journey_length": "int", "session_duration": "float", "value": "float",
        "experiment_key": "str", "variant": "str", "first_step": "str", "last_step": "str", "steps": "str_list",
        "started_at": "timestamp",
    },
    "optimization_patterns": {
        "pattern_id": "str", "optimization_type": "str", "outcome": "str", "improvement": "float",
        "metric": "str", "applied_to_segments": "str_list", "industry": "str", "implementation_effort": "str",
        "source_experiments": "str_list", "created_at": "timestamp",
    },
}


def validate_where(collection: str, where: Any) -> dict[str, Any] | None:
    """The filter normalised for Chroma, or None for no filter. Raises InvalidInput with the reason."""
    if where is None or where == {}:
        return None
    return _node(FIELDS[collection], where, "where", 0)


def _node(fields: dict[str, FieldType], node: Any, path: str, depth: int) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{path}: filter nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict) or not node:
        raise InvalidInput(f"{path}: expected a non-empty object like {{\"outcome\": \"success\"}}, got {node!r}")
    clauses: list[dict[str, Any]] = []
    for key, value in node.items():
        if key in LOGICAL:
            if not isinstance(value, list) or not value:
                raise InvalidInput(f"{path}.{key}: expected a non-empty list of conditions")
            subs = [_node(fields, item, f"{path}.{key}[{i}]", depth + 1) for i, item in enumerate(value)]
            clauses.append(subs[0] if len(subs) == 1 else {key: subs})
        elif key.startswith("$"):
            raise InvalidInput(
                f"{path}: unknown operator {key!r} at this level; use $and or $or here, "
                f"or a field name (one of: {', '.join(sorted(fields))})"
            )
        else:
            clauses.append(_field(fields, key, value, f"{path}.{key}"))
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _field(fields: dict[str, FieldType], name: str, condition: Any, path: str) -> dict[str, Any]:
    kind = fields.get(name)
    if kind is None:
        raise InvalidInput(f"{path}: unknown field {name!r}; filterable fields are: {', '.join(sorted(fields))}")
    if not isinstance(condition, dict):
        condition = {"$contains" if kind == "str_list" else "$eq": condition}
    if len(condition) != 1:
        raise InvalidInput(
            f"{path}: give exactly one operator per field (got {sorted(condition)}); combine several with $and"
        )
    ((operator, value),) = condition.items()
    if operator not in OPERATORS:
        raise InvalidInput(f"{path}: unknown operator {operator!r}; allowed: {', '.join(OPERATORS)}")
    if kind == "str_list":
        if operator not in CONTAINS:
            raise InvalidInput(f"{path}: {name!r} is a list; filter it with $contains or $not_contains")
        return {name: {operator: _value(name, "str", value, path)}}
    if operator in CONTAINS:
        raise InvalidInput(f"{path}: {operator} works on list fields only; {name!r} holds a single {kind}")
    if operator in COMPARISON and kind in ("str", "bool"):
        raise InvalidInput(f"{path}: {operator} needs a numeric or timestamp field; {name!r} is a {kind} (use $eq/$in)")
    if operator in MEMBERSHIP:
        if not isinstance(value, list) or not value:
            raise InvalidInput(f"{path}.{operator}: expected a non-empty list of values")
        if len(value) > MAX_LIST:
            raise InvalidInput(f"{path}.{operator}: at most {MAX_LIST} values")
        return {name: {operator: [_value(name, kind, item, f"{path}.{operator}") for item in value]}}
    return {name: {operator: _value(name, kind, value, f"{path}.{operator}")}}


def _value(name: str, kind: FieldType, value: Any, path: str) -> Any:
    def wrong(expected: str) -> InvalidInput:
        return InvalidInput(f"{path}: {name!r} is a {kind} field; expected {expected}, got {value!r}")

    if kind == "str":
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if isinstance(value, bool):
        raise wrong("a number")
    if kind == "float":
        if not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise wrong("an integer")
        return value
    # timestamp: Unix seconds, or an ISO-8601 date / date-time (UTC unless an offset is given)
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
            except ValueError:
                raise wrong("Unix seconds or an ISO date such as '2025-01-31' or '2025-01-31T12:00:00Z'") from None
        return epoch_seconds(parsed)
    raise wrong("Unix seconds or an ISO date such as '2025-01-31'")
