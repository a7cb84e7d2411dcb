"""Assignment hashing is GrowthBook-compatible: their published SDK test vectors,
and random cross-checks against the `growthbook` PyPI SDK's own functions.

The vectors below are transcribed from GrowthBook's SDK test suite,
growthbook/growthbook `packages/sdk-js/test/cases.json` (spec version 0.5.4,
sections "hash", "getBucketRange", "chooseVariation", "inNamespace" and "run").
"""

from __future__ import annotations

import growthbook.core as gb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_servers.postgres.assignment import (
    AssignmentSpec,
    assign,
    assign_batch,
    bucket_ranges,
    choose_variation,
    choose_variation_batch,
    fnv1a32,
    fnv1a32_batch,
    gb_hash,
    hash_batch,
    in_namespace,
    in_namespace_batch,
)

# cases.json "hash": [seed, value, version, expected]
HASH_CASES = [
    ("", "a", 1, 0.22),
    ("", "b", 1, 0.077),
    ("b", "a", 1, 0.946),
    ("ef", "d", 1, 0.652),
    ("asdf", "8952klfjas09ujk", 1, 0.549),
    ("", "123", 1, 0.011),
    ("", '___)((*":&', 1, 0.563),
    ("seed", "a", 2, 0.0505),
    ("seed", "b", 2, 0.2696),
    ("foo", "ab", 2, 0.2575),
    ("foo", "def", 2, 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 2, 0.124),
    ("90850943850283058242805", "123", 2, 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 2, 0.0128),
    ("abc", "def", 99, None),
]

# cases.json "getBucketRange": [name, (numVariations, coverage, weights), expected ranges]
BUCKET_RANGE_CASES = [
    ("normal 50/50", (2, 1, None), [(0, 0.5), (0.5, 1)]),
    ("reduced coverage", (2, 0.5, None), [(0, 0.25), (0.5, 0.75)]),
    ("zero coverage", (2, 0, None), [(0, 0), (0.5, 0.5)]),
    ("4 variations", (4, 1, None), [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]),
    ("uneven weights", (2, 1, [0.4, 0.6]), [(0, 0.4), (0.4, 1)]),
    ("uneven weights, 3 variations", (3, 1, [0.2, 0.3, 0.5]), [(0, 0.2), (0.2, 0.5), (0.5, 1)]),
    ("uneven weights, reduced coverage, 3 variations", (3, 0.2, [0.2, 0.3, 0.5]), [(0, 0.04), (0.2, 0.26), (0.5, 0.6)]),
    ("negative coverage", (2, -0.2, None), [(0, 0), (0.5, 0.5)]),
    ("coverage above 1", (2, 1.5, None), [(0, 0.5), (0.5, 1)]),
    ("weights sum below 1", (2, 1, [0.4, 0.1]), [(0, 0.5), (0.5, 1)]),
    ("weights sum above 1", (2, 1, [0.7, 0.6]), [(0, 0.5), (0.5, 1)]),
    ("weights.length not equal to num variations", (4, 1, [0.4, 0.4, 0.2]), [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]),
    ("weights sum almost equals 1", (2, 1, [0.4, 0.5999]), [(0, 0.4), (0.4, 0.9999)]),
]

# cases.json "chooseVariation": [name, n, ranges, expected]
EVEN = [(0, 0.5), (0.5, 1)]
REDUCED = [(0, 0.25), (0.5, 0.75)]
CHOOSE_VARIATION_CASES = [
    ("even range, 0.2", 0.2, EVEN, 0),
    ("even range, 0.4", 0.4, EVEN, 0),
    ("even range, 0.6", 0.6, EVEN, 1),
    ("even range, 0.8", 0.8, EVEN, 1),
    ("even range, 0", 0, EVEN, 0),
    ("even range, 0.5", 0.5, EVEN, 1),
    ("reduced range, 0.2", 0.2, REDUCED, 0),
    ("reduced range, 0.4", 0.4, REDUCED, -1),
    ("reduced range, 0.6", 0.6, REDUCED, 1),
    ("reduced range, 0.8", 0.8, REDUCED, -1),
    ("reduced range, 0.25", 0.25, REDUCED, -1),
    ("reduced range, 0.5", 0.5, REDUCED, 1),
    ("zero range", 0.5, [(0, 0.5), (0.5, 0.5), (0.5, 1)], 2),
]

# cases.json "inNamespace": [name, user id, namespace, expected]
IN_NAMESPACE_CASES = [
    ("user 1, namespace1, 1", "1", ("namespace1", 0, 0.4), False),
    ("user 1, namespace1, 2", "1", ("namespace1", 0.4, 1), True),
    ("user 1, namespace2, 1", "1", ("namespace2", 0, 0.4), False),
    ("user 1, namespace2, 2", "1", ("namespace2", 0.4, 1), True),
    ("user 2, namespace1, 1", "2", ("namespace1", 0, 0.4), False),
    ("user 2, namespace1, 2", "2", ("namespace1", 0.4, 1), True),
    ("user 3, namespace1, 1", "3", ("namespace1", 0, 0.4), False),
    ("user 3, namespace2, 1", "3", ("namespace2", 0, 0.4), True),
    ("user 3, namespace2, 2", "3", ("namespace2", 0.4, 1), False),
    ("user 4, namespace1, 2", "4", ("namespace1", 0.4, 1), True),
    ("user 4, namespace2, 1", "4", ("namespace2", 0, 0.4), True),
    ("user 4, namespace2, 2", "4", ("namespace2", 0.4, 1), False),
]

# cases.json "run" (experiment key is the seed; the SDK default hash version there is 1):
# [name, user id, experiment options, expected variation index or -1 when not in the experiment]
RUN_CASES = [
    ("default weights - 1", "1", {}, 1),
    ("default weights - 2", "2", {}, 0),
    ("default weights - 3", "3", {}, 0),
    ("default weights - 4", "4", {}, 1),
    ("default weights - 7", "7", {}, 0),
    ("uneven weights - 1", "1", {"weights": (0.1, 0.9)}, 1),
    ("uneven weights - 3", "3", {"weights": (0.1, 0.9)}, 0),
    ("uneven weights - 7", "7", {"weights": (0.1, 0.9)}, 0),
    ("coverage - 1", "1", {"coverage": 0.4}, -1),
    ("coverage - 2", "2", {"coverage": 0.4}, 0),
    ("coverage - 5", "5", {"coverage": 0.4}, 1),
    ("coverage - 9", "9", {"coverage": 0.4}, -1),
    ("three way test - 1", "1", {"weights": (1 / 3, 1 / 3, 1 / 3)}, 2),
    ("three way test - 5", "5", {"weights": (1 / 3, 1 / 3, 1 / 3)}, 1),
    ("three way test - 8", "8", {"weights": (1 / 3, 1 / 3, 1 / 3)}, 1),
    ("Experiment namespace - pass", "1", {"namespace": ("namespace", 0.1, 1)}, 1),
    ("Experiment namespace - fail", "1", {"namespace": ("namespace", 0, 0.1)}, -1),
    ("Uses seed with default weights/coverage (v2)", "1", {"seed": "foo", "hash_version": 2}, 1),
    ("Uses seed with weights/coverage (v2)", "1", {"seed": "foo", "hash_version": 2, "coverage": 0.99}, 1),
]


@pytest.mark.parametrize(("seed", "value", "version", "expected"), HASH_CASES)
def test_hash_matches_growthbook_vectors(seed, value, version, expected):
    assert gb_hash(seed, value, version) == expected


@pytest.mark.parametrize(("name", "args", "expected"), BUCKET_RANGE_CASES, ids=[c[0] for c in BUCKET_RANGE_CASES])
def test_bucket_ranges_match_growthbook_vectors(name, args, expected):
    got = bucket_ranges(*args)
    assert [(round(a, 6), round(b, 6)) for a, b in got] == [(float(a), float(b)) for a, b in expected]


@pytest.mark.parametrize(("name", "n", "ranges", "expected"), CHOOSE_VARIATION_CASES, ids=[c[0] for c in CHOOSE_VARIATION_CASES])
def test_choose_variation_matches_growthbook_vectors(name, n, ranges, expected):
    assert choose_variation(n, ranges) == expected
    assert choose_variation_batch(np.array([n], dtype=float), ranges).tolist() == [expected]


@pytest.mark.parametrize(("name", "user_id", "namespace", "expected"), IN_NAMESPACE_CASES, ids=[c[0] for c in IN_NAMESPACE_CASES])
def test_in_namespace_matches_growthbook_vectors(name, user_id, namespace, expected):
    assert in_namespace(user_id, namespace) is expected
    assert in_namespace_batch([user_id], namespace).tolist() == [expected]


@pytest.mark.parametrize(("name", "user_id", "options", "expected"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_full_assignment_matches_growthbook_run_vectors(name, user_id, options, expected):
    options = dict(options)
    spec = AssignmentSpec(
        seed=options.pop("seed", "my-test"),
        weights=options.pop("weights", (0.5, 0.5)),
        coverage=options.pop("coverage", 1.0),
        hash_version=options.pop("hash_version", 1),
        namespace=options.pop("namespace", None),
    )
    assert assign(spec, user_id).variation == expected
    assert assign_batch(spec, [user_id])[0].tolist() == [expected]


def test_an_unknown_hash_version_is_refused_by_the_spec():
    with pytest.raises(ValueError, match="hash_version"):
        AssignmentSpec(seed="s", weights=(0.5, 0.5), hash_version=3)


def test_assignment_is_a_pure_function_of_seed_and_user():
    spec = AssignmentSpec(seed="checkout-1step", weights=(0.5, 0.5))
    first = [assign(spec, f"user-{i}").variation for i in range(200)]
    again = [assign(AssignmentSpec(seed="checkout-1step", weights=(0.5, 0.5)), f"user-{i}").variation for i in range(200)]
    assert first == again
    other_seed = [assign(AssignmentSpec(seed="other", weights=(0.5, 0.5)), f"user-{i}").variation for i in range(200)]
    assert first != other_seed


def test_raising_coverage_never_moves_a_user_who_was_already_in():
    low = AssignmentSpec(seed="ramp", weights=(0.3, 0.7), coverage=0.2)
    high = AssignmentSpec(seed="ramp", weights=(0.3, 0.7), coverage=0.9)
    users = [f"u{i}" for i in range(3000)]
    low_v, _ = assign_batch(low, users)
    high_v, _ = assign_batch(high, users)
    enrolled = low_v >= 0
    assert enrolled.sum() > 300
    assert (high_v[enrolled] == low_v[enrolled]).all()
    assert (high_v >= 0).sum() > 2 * enrolled.sum()


def test_traffic_follows_the_weights():
    spec = AssignmentSpec(seed="weights", weights=(0.2, 0.3, 0.5))
    variations, _ = assign_batch(spec, [f"user-{i}" for i in range(60_000)])
    shares = np.bincount(variations, minlength=3) / len(variations)
    assert np.allclose(shares, [0.2, 0.3, 0.5], atol=0.01)


def test_batch_equals_scalar_on_awkward_ids():
    ids = ["", "a", "é", "日本語", "😀x", "ab\x00", "\x00", "x" * 300, "user-1", "123", "ÿ"]
    for version in (1, 2):
        assert hash_batch("seed", ids, version).tolist() == [gb_hash("seed", i, version) for i in ids]
    assert fnv1a32_batch(ids, prefix="p", suffix="s").tolist() == [fnv1a32("p" + i + "s") for i in ids]
    spec = AssignmentSpec(seed="s", weights=(0.25, 0.75), coverage=0.6, namespace=("ns", 0.2, 0.9))
    variations, _ = assign_batch(spec, ids)
    assert variations.tolist() == [assign(spec, i).variation for i in ids]


def test_batch_of_nothing_is_empty():
    assert hash_batch("s", [], 2).tolist() == []


# ---- random cross-checks against the growthbook PyPI SDK

ids = st.text(max_size=40)
seeds = st.text(max_size=30)


@settings(max_examples=300, deadline=None)
@given(text=ids)
def test_fnv1a32_agrees_with_growthbook_sdk(text):
    assert fnv1a32(text) == gb.fnv1a32(text)


@settings(max_examples=300, deadline=None)
@given(seed=seeds, value=ids, version=st.sampled_from([1, 2]))
def test_hash_agrees_with_growthbook_sdk(seed, value, version):
    assert gb_hash(seed, value, version) == gb.gbhash(seed, value, version)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, values=st.lists(ids, min_size=1, max_size=40), version=st.sampled_from([1, 2]))
def test_batch_hash_agrees_with_growthbook_sdk(seed, values, version):
    assert hash_batch(seed, values, version).tolist() == [gb.gbhash(seed, v, version) for v in values]


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(0, 1), min_size=1, max_size=6),
    coverage=st.floats(-0.5, 1.5),
    n=st.floats(0, 1, exclude_max=True),
)
def test_ranges_and_choice_agree_with_growthbook_sdk(weights, coverage, n):
    ours = bucket_ranges(len(weights), coverage, weights)
    theirs = gb.getBucketRanges(len(weights), coverage, weights)
    assert ours == [tuple(r) for r in theirs]
    assert choose_variation(n, ours) == gb.chooseVariation(n, theirs)


@settings(max_examples=200, deadline=None)
@given(user=ids, name=st.text(min_size=1, max_size=20), start=st.floats(0, 1), width=st.floats(0, 1))
def test_namespace_agrees_with_growthbook_sdk(user, name, start, width):
    namespace = (name, start, min(start + width, 1.0))
    assert in_namespace(user, namespace) == gb.inNamespace(user, namespace)
