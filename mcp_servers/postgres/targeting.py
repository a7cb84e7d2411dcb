"""Targeting conditions on user attributes: a small Mongo/GrowthBook-style language.

A condition is a JSON object. Each key is either an attribute path (dots reach
into nested objects: `"address.country"`) or a logical operator:

    {"country": {"$in": ["US", "CA"]}, "device": "mobile", "age": {"$gte": 18}}
    {"$or": [{"plan": "pro"}, {"beta_tester": true}]}
    {"$not": {"country": "FR"}}

Field tests:
- a bare value means equality (`"device": "mobile"`); `null` matches a missing
  or null attribute.
- `$eq` / `$ne`: equality / inequality (a missing attribute is "not equal").
- `$in` / `$nin`: the value is (not) in a list. If the attribute is itself a
  list, `$in` passes when any element is in the list and `$nin` when none is.
- `$gt` / `$gte` / `$lt` / `$lte`: numbers compare with numbers and strings
  with strings; a missing attribute or a type mismatch fails the test (Mongo
  semantics; GrowthBook's SDKs instead coerce numeric strings).
- `$exists`: true/false.
Logical operators: `$and` and `$or` take a non-empty list of conditions, `$not`
one condition. All keys of one object must hold (implicit AND); `{}` matches
everyone.

`validate_condition` is run when an experiment is created or updated, so a bad
condition is refused with a message naming the offending path instead of
silently matching nobody at assignment time.
"""

from __future__ import annotations

import re
from typing import Any

FIELD_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"})
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$not"})
MAX_DEPTH = 8
MAX_NODES = 500
MAX_LIST = 1000
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")
_MISSING = object()


class ConditionError(ValueError):
    """The condition is malformed; the message names where."""


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_condition(condition: Any, where: str = "targeting") -> None:
    """Raise ConditionError (message names the path) unless `condition` is well formed."""
    counter = [0]
    _validate(condition, where, 0, counter)


def _validate(condition: Any, where: str, depth: int, counter: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise ConditionError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(condition, dict):
        raise ConditionError(f"{where}: a condition must be an object, got {type(condition).__name__}")
    for key, value in condition.items():
        counter[0] += 1
        if counter[0] > MAX_NODES:
            raise ConditionError(f"{where}: more than {MAX_NODES} tests in one condition")
        path = f"{where}.{key}"
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise ConditionError(f"{path}: expected a non-empty list of conditions")
            for index, item in enumerate(value):
                _validate(item, f"{path}[{index}]", depth + 1, counter)
        elif key == "$not":
            _validate(value, path, depth + 1, counter)
        elif key.startswith("$"):
            raise ConditionError(
                f"{path}: unknown logical operator {key!r} (allowed at this level: $and, $or, $not)"
            )
        else:
            if not _PATH.match(key):
                raise ConditionError(f"{path}: {key!r} is not a valid attribute path (letters, digits, _ - and dots)")
            _validate_field_test(value, path)


def _validate_field_test(test: Any, where: str) -> None:
    if not isinstance(test, dict):
        if not _is_scalar(test):
            raise ConditionError(f"{where}: equality needs a string, number, boolean or null")
        return
    keys = list(test)
    if not keys:
        raise ConditionError(f"{where}: empty operator object (use a value for equality)")
    if not all(k.startswith("$") for k in keys):
        raise ConditionError(f"{where}: mixes operators and field names; object equality is not supported")
    for op, operand in test.items():
        path = f"{where}.{op}"
        if op not in FIELD_OPERATORS:
            allowed = ", ".join(sorted(FIELD_OPERATORS))
            raise ConditionError(f"{path}: unknown operator {op!r} (allowed: {allowed})")
        if op in ("$in", "$nin"):
            if not isinstance(operand, list):
                raise ConditionError(f"{path}: expected a list of values, got {type(operand).__name__}")
            if len(operand) > MAX_LIST:
                raise ConditionError(f"{path}: more than {MAX_LIST} values")
            if not all(_is_scalar(item) for item in operand):
                raise ConditionError(f"{path}: list items must be strings, numbers, booleans or null")
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            if not (_is_number(operand) or isinstance(operand, str)):
                raise ConditionError(f"{path}: expected a number or a string, got {type(operand).__name__}")
        elif op == "$exists":
            if not isinstance(operand, bool):
                raise ConditionError(f"{path}: expected true or false")
        elif not _is_scalar(operand):  # $eq, $ne
            raise ConditionError(f"{path}: expected a string, number, boolean or null")


def evaluate(condition: dict[str, Any] | None, attributes: dict[str, Any] | None) -> bool:
    """True when `attributes` satisfy the (validated) condition. No condition matches everyone."""
    if not condition:
        return True
    return _evaluate(condition, attributes or {})


def explain(condition: dict[str, Any] | None, attributes: dict[str, Any] | None) -> list[str]:
    """The top-level tests that fail, as readable strings (empty when the condition passes)."""
    if not condition:
        return []
    attributes = attributes or {}
    failed = []
    for key, value in condition.items():
        if not _evaluate({key: value}, attributes):
            actual = _get_path(attributes, key) if not key.startswith("$") else None
            shown = "missing" if actual is _MISSING else repr(actual)
            failed.append(f"{key} {value!r}" + ("" if key.startswith("$") else f" (attribute is {shown})"))
    return failed


def _evaluate(condition: dict[str, Any], attributes: dict[str, Any]) -> bool:
    for key, value in condition.items():
        if key == "$and":
            if not all(_evaluate(item, attributes) for item in value):
                return False
        elif key == "$or":
            if not any(_evaluate(item, attributes) for item in value):
                return False
        elif key == "$not":
            if _evaluate(value, attributes):
                return False
        elif not _test_field(value, _get_path(attributes, key)):
            return False
    return True


def _get_path(attributes: dict[str, Any], path: str) -> Any:
    current: Any = attributes
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python; in JSON they are different types.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _test_field(test: Any, actual: Any) -> bool:
    if not isinstance(test, dict):
        if test is None:
            return actual is _MISSING or actual is None
        return actual is not _MISSING and _equal(actual, test)
    return all(_test_operator(op, operand, actual) for op, operand in test.items())


def _test_operator(op: str, operand: Any, actual: Any) -> bool:
    if op == "$exists":
        return (actual is not _MISSING and actual is not None) == operand
    if op == "$eq":
        return _test_field(operand, actual) if operand is not None else actual is _MISSING or actual is None
    if op == "$ne":
        return not _test_operator("$eq", operand, actual)
    if op in ("$in", "$nin"):
        if actual is _MISSING:
            return op == "$nin"
        values = actual if isinstance(actual, list) else [actual]
        hit = any(_equal(v, item) for v in values for item in operand)
        return hit if op == "$in" else not hit
    # ordering comparisons: same kind only
    if actual is _MISSING or actual is None:
        return False
    if _is_number(operand) and _is_number(actual) or isinstance(operand, str) and isinstance(actual, str):
        if op == "$gt":
            return actual > operand
        if op == "$gte":
            return actual >= operand
        if op == "$lt":
            return actual < operand
        return actual <= operand
    return False
