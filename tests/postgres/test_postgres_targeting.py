"""The targeting condition language: what matches, and what is refused at create time."""

from __future__ import annotations

import re

import pytest

from mcp_servers.postgres.targeting import ConditionError, evaluate, explain, validate_condition

# Cases shared with GrowthBook's evalCondition vectors (packages/sdk-js/test/cases.json),
# for the operators we support and where Mongo and GrowthBook semantics agree.
SHARED_WITH_GROWTHBOOK = [
    ("$exists - false pass", {"pets.dog.name": {"$exists": False}}, {"hello": "world"}, True),
    ("$exists - false fail", {"pets.dog.name": {"$exists": False}}, {"pets": {"dog": {"name": "fido"}}}, False),
    ("$exists - true fail", {"pets.dog.name": {"$exists": True}}, {"hello": "world"}, False),
    ("$exists - true pass", {"pets.dog.name": {"$exists": True}}, {"pets": {"dog": {"name": "fido"}}}, True),
    ("equals - multiple datatypes", {"str": "str", "num": 10, "flag": False}, {"str": "str", "num": 10, "flag": False}, True),
    ("$in - pass", {"num": {"$in": [1, 2, 3]}}, {"num": 2}, True),
    ("$in - fail", {"num": {"$in": [1, 2, 3]}}, {"num": 4}, False),
    ("$in - array pass 1", {"tags": {"$in": ["a", "b"]}}, {"tags": ["d", "e", "a"]}, True),
    ("$in - array fail 1", {"tags": {"$in": ["a", "b"]}}, {"tags": ["d", "e", "f"]}, False),
    ("$in - array fail 2", {"tags": {"$in": ["a", "b"]}}, {"tags": []}, False),
    ("$nin - pass", {"num": {"$nin": [1, 2, 3]}}, {"num": 4}, True),
    ("$nin - fail", {"num": {"$nin": [1, 2, 3]}}, {"num": 2}, False),
    ("$nin - array fail 1", {"tags": {"$nin": ["a", "b"]}}, {"tags": ["d", "e", "a"]}, False),
    ("$nin - array pass 1", {"tags": {"$nin": ["a", "b"]}}, {"tags": ["d", "e", "f"]}, True),
    ("$nin - array pass 2", {"tags": {"$nin": ["a", "b"]}}, {"tags": []}, True),
    ("missing attribute - fail", {"pets.dog.name": {"$in": ["fido"]}}, {"hello": "world"}, False),
    ("empty - pass", {}, {"hello": "world"}, True),
    ("$eq - pass", {"occupation": {"$eq": "engineer"}}, {"occupation": "engineer"}, True),
    ("$eq - fail", {"occupation": {"$eq": "engineer"}}, {"occupation": "civil engineer"}, False),
    ("$ne - pass", {"level": {"$ne": "senior"}}, {"level": "junior"}, True),
    ("$ne - fail", {"level": {"$ne": "senior"}}, {"level": "senior"}, False),
    ("$gt/$lt numbers - pass", {"age": {"$gt": 30, "$lt": 60}}, {"age": 50}, True),
    ("$gt/$lt numbers - fail $lt", {"age": {"$gt": 30, "$lt": 60}}, {"age": 60}, False),
    ("$gt/$lt numbers - fail $gt", {"age": {"$gt": 30, "$lt": 60}}, {"age": 30}, False),
    ("$gte/$lte numbers - pass $gte", {"age": {"$gte": 30, "$lte": 60}}, {"age": 30}, True),
    ("$gte/$lte numbers - pass $lte", {"age": {"$gte": 30, "$lte": 60}}, {"age": 60}, True),
    ("$gte/$lte numbers - fail $lte", {"age": {"$gte": 30, "$lte": 60}}, {"age": 61}, False),
    ("$gt/$lt strings - fail $gt", {"word": {"$gt": "alphabet", "$lt": "zebra"}}, {"word": "alphabet"}, False),
    ("$gt/$lt strings - pass", {"word": {"$gt": "alphabet", "$lt": "zebra"}}, {"word": "always"}, True),
    ("$gt/$lt strings - fail uppercase", {"word": {"$gt": "alphabet", "$lt": "zebra"}}, {"word": "AZL"}, False),
    ("nested value is null", {"address.state": "CA"}, {"address": None}, False),
    ("nested value is integer", {"address.state": "CA"}, {"address": 123}, False),
    ("$not - pass", {"$not": {"name": "hello"}}, {"name": "world"}, True),
    ("$not - fail", {"$not": {"name": "hello"}}, {"name": "hello"}, False),
    ("null condition - null attribute", {"userId": None}, {"userId": None}, True),
    ("null condition - missing attribute", {"userId": None}, {}, True),
    ("null condition - string attribute", {"userId": None}, {"userId": "123"}, False),
    ("null condition - zero attribute", {"userId": None}, {"userId": 0}, False),
]


@pytest.mark.parametrize(("name", "condition", "attributes", "expected"), SHARED_WITH_GROWTHBOOK,
                         ids=[c[0] for c in SHARED_WITH_GROWTHBOOK])
def test_condition_matches_growthbook_where_semantics_agree(name, condition, attributes, expected):
    validate_condition(condition)
    assert evaluate(condition, attributes) is expected


def test_the_issue_example_targets_us_and_canadian_mobile_users():
    condition = {"country": {"$in": ["US", "CA"]}, "device": "mobile"}
    validate_condition(condition)
    assert evaluate(condition, {"country": "CA", "device": "mobile"})
    assert not evaluate(condition, {"country": "CA", "device": "desktop"})
    assert not evaluate(condition, {"country": "FR", "device": "mobile"})
    assert not evaluate(condition, {})


def test_missing_attributes_and_type_mismatches_fail_comparisons():
    # Mongo semantics; GrowthBook's SDKs would pass both (they coerce).
    assert not evaluate({"age": {"$gt": -10}}, {})
    assert not evaluate({"n": {"$gt": 5}}, {"n": "8"})
    assert not evaluate({"flag": 1}, {"flag": True})


def test_logical_operators_compose():
    condition = {"$or": [{"plan": "pro"}, {"$and": [{"beta": True}, {"country": {"$ne": "FR"}}]}]}
    validate_condition(condition)
    assert evaluate(condition, {"plan": "pro"})
    assert evaluate(condition, {"plan": "free", "beta": True, "country": "US"})
    assert not evaluate(condition, {"plan": "free", "beta": True, "country": "FR"})


def test_no_condition_matches_everyone():
    assert evaluate(None, None)
    assert evaluate({}, {"x": 1})


def test_explain_names_the_failing_tests():
    failed = explain({"country": {"$in": ["US"]}, "device": "mobile"}, {"country": "FR", "device": "mobile"})
    assert failed == ["country {'$in': ['US']} (attribute is 'FR')"]
    assert explain({"device": "mobile"}, {}) == ["device 'mobile' (attribute is missing)"]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (["country", "US"], "must be an object"),
        ({"country": {"$in": "US"}}, "targeting.country.$in: expected a list"),
        ({"country": {"$regex": ".*"}}, "unknown operator '$regex'"),
        ({"$where": "1"}, "unknown logical operator '$where'"),
        ({"age": {"$gt": [1]}}, "targeting.age.$gt: expected a number or a string"),
        ({"x": {"$exists": "yes"}}, "expected true or false"),
        ({"$or": []}, "non-empty list"),
        ({"$and": [{"a": 1}, "b"]}, "targeting.$and[1]: a condition must be an object"),
        ({"tags": {"$in": [["a"]]}}, "list items must be"),
        ({"profile": {"$eq": 1, "name": "x"}}, "mixes operators and field names"),
        ({"profile": {}}, "empty operator object"),
        ({"bad key!": 1}, "not a valid attribute path"),
        ({"x": {"a": 1}}, "mixes operators"),
        ({"x": [1, 2]}, "equality needs a string"),
    ],
)
def test_malformed_conditions_are_refused_with_the_path(condition, message):
    with pytest.raises(ConditionError, match=re.escape(message)):
        validate_condition(condition)


def test_deeply_nested_conditions_are_refused():
    condition: dict = {"a": 1}
    for _ in range(10):
        condition = {"$not": condition}
    with pytest.raises(ConditionError, match="nested deeper"):
        validate_condition(condition)
