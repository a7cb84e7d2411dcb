"""Metadata filters: Chroma operators work on the stored metadata, and malformed
filters or inputs are refused with a message that says what to write instead."""

from __future__ import annotations

import pytest

from mcp_servers.chroma.filters import validate_where
from schemas.errors import InvalidInput

QUERY = "experiments that improved conversion"


async def keys(service, where, n=44) -> set[str]:
    result = await service.semantic_experiment_search(QUERY, where=where, n_results=n)
    return {hit.id for hit in result.hits}


def expected(corpus, predicate) -> set[str]:
    return {item["record"]["key"] for item in corpus["experiments"] if predicate(item["record"])}


async def test_equality_range_membership_and_logic_filters_select_exactly_the_matching_experiments(corpus_service, corpus):
    assert await keys(corpus_service, {"industry": "ecommerce"}) == expected(corpus, lambda r: r["industry"] == "ecommerce")
    assert await keys(corpus_service, {"lift": {"$gte": 0.1}}) == expected(corpus, lambda r: r["lift"] >= 0.1)
    assert await keys(corpus_service, {"sample_size": {"$lt": 3500}}) == expected(corpus, lambda r: r["sample_size"] < 3500)
    assert await keys(corpus_service, {"experiment_type": {"$in": ["prompt", "model"]}}) == expected(
        corpus, lambda r: r["type"] in ("prompt", "model"))
    assert await keys(corpus_service, {"experiment_type": {"$nin": ["ui", "feature", "workflow"]}}) == expected(
        corpus, lambda r: r["type"] not in ("ui", "feature", "workflow"))
    both = {"industry": "saas", "p_value": {"$lt": 0.05}}  # several fields in one object mean AND
    assert await keys(corpus_service, both) == expected(corpus, lambda r: r["industry"] == "saas" and r["p_value"] < 0.05)
    either = {"$or": [{"industry": "travel"}, {"industry": "gaming"}]}
    assert await keys(corpus_service, either) == expected(corpus, lambda r: r["industry"] in ("travel", "gaming"))


async def test_derived_outcome_list_and_timestamp_filters(corpus_service, corpus):
    # outcome is derived at store time: significant (p < 0.05) lift > 0 is a success for a higher-is-better metric
    successes = await keys(corpus_service, {"outcome": "success"})
    assert successes == expected(corpus, lambda r: r["p_value"] < 0.05 and r["lift"] > 0)
    failures = await keys(corpus_service, {"outcome": "failure"})
    assert "starter-price-increase" in failures  # -7% revenue per visitor at p = 0.03
    assert await keys(corpus_service, {"tags": {"$contains": "rag"}}) == {"rag-topk", "rag-chunk-size"}
    assert await keys(corpus_service, {"tags": "payments"}) == {"express-wallet-pay"}  # shorthand on a list field
    since = await keys(corpus_service, {"created_at": {"$gte": "2025-03-01"}})
    assert since == expected(corpus, lambda r: r["created_at"] >= "2025-03-01")
    assert await keys(corpus_service, {"created_at": {"$gte": 1740787200}}) == since  # Unix seconds work too


async def test_a_filter_narrows_the_ranking_without_reordering_it(corpus_service):
    unfiltered = await corpus_service.semantic_experiment_search("reduce checkout steps on mobile", n_results=44)
    filtered = await corpus_service.semantic_experiment_search(
        "reduce checkout steps on mobile", where={"user_segment": "mobile users"}, n_results=44)
    allowed = {hit.id for hit in filtered.hits}
    assert [hit.id for hit in unfiltered.hits if hit.id in allowed] == [hit.id for hit in filtered.hits]
    assert filtered.hits[0].id == "checkout-1step"


@pytest.mark.parametrize(("where", "message"), [
    ({"lift": {"$like": 0.1}}, "unknown operator '$like'"),
    ({"$not": [{"industry": "saas"}]}, "unknown operator '$not'"),
    ({"industri": "saas"}, "unknown field 'industri'"),
    ({"lift": {"$gte": "ten percent"}}, "expected a number"),
    ({"sample_size": {"$gt": 10.5}}, "expected an integer"),
    ({"industry": 3}, "expected a string"),
    ({"industry": {"$gt": "a"}}, "needs a numeric or timestamp field"),
    ({"industry": {"$in": []}}, "non-empty list"),
    ({"industry": {"$in": "saas"}}, "non-empty list"),
    ({"tags": {"$eq": "rag"}}, "filter it with $contains"),
    ({"industry": {"$contains": "saas"}}, "works on list fields only"),
    ({"lift": {"$gt": 0, "$lt": 1}}, "exactly one operator per field"),
    ({"$and": []}, "non-empty list"),
    ({"created_at": {"$gte": "last tuesday"}}, "ISO date"),
    ({"lift": {"$gte": True}}, "expected a number"),
    ("outcome = success", "expected a non-empty object"),
])
async def test_malformed_filters_are_refused_with_the_reason(corpus_service, where, message):
    with pytest.raises(InvalidInput, match=message.replace("$", r"\$").replace("(", r"\(")):
        await corpus_service.semantic_experiment_search(QUERY, where=where)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"query": ""}, "query must be non-empty"),
    ({"query": "   "}, "query must be non-empty"),
    ({"query": "x" * 10_001}, "at most 10000"),
    ({"query": QUERY, "n_results": 0}, "n_results must be an integer from 1 to 100"),
    ({"query": QUERY, "n_results": 101}, "n_results must be an integer from 1 to 100"),
    ({"query": QUERY, "n_results": "5"}, "n_results must be an integer"),
])
async def test_bad_query_or_result_count_is_refused(corpus_service, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        await corpus_service.semantic_experiment_search(**kwargs)


def test_filters_are_checked_against_each_collections_own_fields():
    assert validate_where("user_journeys", {"steps": {"$contains": "add_to_cart"}}) == {"steps": {"$contains": "add_to_cart"}}
    assert validate_where("optimization_patterns", {"improvement": {"$gt": 0.1}}) == {
        "improvement": {"$gt": 0.1}}
    with pytest.raises(InvalidInput, match="unknown field 'lift'"):
        validate_where("user_journeys", {"lift": {"$gt": 0}})
    assert validate_where("experiments", {}) is None
    assert validate_where("experiments", {"$and": [{"industry": "saas"}]}) == {"industry": {"$eq": "saas"}}
