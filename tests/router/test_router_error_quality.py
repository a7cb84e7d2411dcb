"""Every refusal is one line an agent can act on, and its kind survives the router (issue 19).

Over 1,000 bad calls, generated with hypothesis from each tool's inputSchema, go through the router
holding every server in-process (the full catalogue): wrong types, missing required arguments,
out-of-range numbers and lengths, a wrong type deep inside an object argument, huge strings,
NaN-ish strings for numbers, and unknown experiments. Each must answer isError with one line
that names the argument at fault (or, for an unknown experiment, says it does not exist), with no
traceback, link, pydantic model name, SDK wrapper, backend prefix, engine text or SQL, and with
its kind in `_meta`. The router is healthy afterwards.

Tools that take no arguments (router_status, describe_schema, list_tables, collection_stats)
cannot be called badly by their schema and are left out of the generation.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_calls import readable  # type: ignore[import-not-found]

from mcp_router.runtime.serving import open_router
from schemas.errors import KINDS, Conflict, InvalidInput, NotFound, QueryRefused
from schemas.refusals import ERROR_META
from schemas.settings import Settings

CALLS_PER_TOOL = 28  # x 40 tools with arguments: about 1,100 calls
EXPERIMENT_ARGS = ("experiment", "experiment_id")
KNOWN = "fuzz-target"  # a running experiment: valid arguments reach the service, so the bad one is the reason
# Counts from the event store, which answers zero for a key it never saw (the analysis reads that as
# "no data yet"): an unknown experiment is no error there.
EVENT_STORE_COUNTS = {"get_exposures_by_period"}
QUERY_TOOLS = {"postgres_query", "clickhouse_query"}  # the caller's own SQL may be quoted back to it
# A refusal must show none of these (case-insensitive where it matters).
FORBIDDEN = [
    (re.compile(r"Traceback|File \"|line \d+, in "), "a traceback"),
    (re.compile(r"https?://|errors\.pydantic\.dev|For further information"), "a link"),
    (re.compile(r"validation errors? for|\w+Arguments\b|\[type=|input_value=|input_type="), "a pydantic dump"),
    (re.compile(r"Error executing tool"), "the SDK's wrapper"),
    (re.compile(r"\b(?:postgres|clickhouse|chromadb|intelligence|router)\.\w", re.I), "a backend prefix"),
    (re.compile(r"chdb|DB::Exception|\bCode:\s*\d+|Stack trace|\([A-Z]+_[A-Z_]+\)", re.I), "engine text"),
    (re.compile(r"\b(?:ExperimentCreate|ExperimentUpdate|VariantSpec|MetricSpec|DecisionCreate|JourneyRecord|"
                r"PatternRecord|ExperimentRecord|AnalysisOptions|ExperimentConfig|Baseline|SegmentFilter)\b"),
     "a model name"),
]
INTERNAL_SQL = re.compile(r"\b(?:SELECT|INSERT|UPDATE|DELETE)\b.+\b(?:FROM|INTO|SET|WHERE)\b|\$\d\b", re.S)
WORDS = ["abc", "maybe", "five", "not a number", "{x", "[", "n/a"]  # not JSON, not a boolean word
NAN_ISH = ["NaN", "nan", "-NaN", "Infinity", "-Infinity", "inf", "-inf", "1e999", "-1e999"]


# -- reading the inputSchema ------------------------------------------------------------------------

def resolve(node: Any, defs: dict[str, Any]) -> dict[str, Any]:
    while isinstance(node, dict) and "$ref" in node:
        node = {**defs[node["$ref"].removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    return node if isinstance(node, dict) else {}


def branches(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a schema (itself when it is no union)."""
    alts = node.get("anyOf") or node.get("oneOf")
    if not alts:
        return [node]
    return [b for a in alts for b in branches(resolve(a, defs), defs) if b.get("type") != "null"]


def json_types(node: Any, defs: dict[str, Any]) -> set[str] | None:
    """The JSON types a schema accepts (None: any)."""
    node = resolve(node, defs)
    alts = node.get("anyOf") or node.get("oneOf")
    if alts:
        types: set[str] = set()
        for alt in alts:
            found = json_types(alt, defs)
            if found is None:
                return None
            types |= found
        return types
    kind = node.get("type")
    if isinstance(kind, list):
        return set(kind)
    if kind:
        return {kind}
    return {"string"} if "enum" in node or "const" in node else None


# -- valid values (so that the one bad thing is the reason) -----------------------------------------

def valid(node: Any, defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    node = resolve(node, defs)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    alts = branches(node, defs)
    if len(alts) > 1 or alts[0] is not node:
        return st.one_of([valid(a, defs, depth) for a in alts]) if alts else st.none()
    kind = node.get("type")
    if kind == "string":
        if node.get("format") == "date-time":
            return st.integers(0, 300).map(lambda d: f"2026-{1 + d % 12:02d}-{1 + d % 28:02d}T10:00:00Z")
        if node.get("format") == "date":
            return st.integers(0, 300).map(lambda d: f"2026-{1 + d % 12:02d}-{1 + d % 28:02d}")
        low, high = node.get("minLength", 1), min(node.get("maxLength", 24), 24)
        if "pattern" in node:
            pattern = re.compile(node["pattern"])
            return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= max(high, low)
                                                                 and "\n" not in s)
        return st.text(string.ascii_lowercase + string.digits + "-", min_size=max(low, 1), max_size=max(high, low, 1))
    if kind in ("integer", "number"):
        low = node.get("minimum", node.get("exclusiveMinimum", -1000))
        high = node.get("maximum", node.get("exclusiveMaximum", 1000))
        if kind == "integer":
            return st.integers(math.ceil(low) + ("exclusiveMinimum" in node), math.floor(high) - ("exclusiveMaximum" in node))
        return st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_min="exclusiveMinimum" in node,
                         exclude_max="exclusiveMaximum" in node)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        low = node.get("minItems", 0)
        high = max(low, min(node.get("maxItems", 3), 3))
        return st.lists(valid(node.get("items", {}), defs, depth + 1), min_size=low, max_size=high)
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        if not props or depth > 3:
            return st.just({})
        return st.fixed_dictionaries({p: valid(props[p], defs, depth + 1) for p in node.get("required", [])})
    if kind == "null":
        return st.none()
    return st.just("x")


def valid_arguments(schema: dict[str, Any], defs: dict[str, Any], leave_out: str | None = None
                    ) -> st.SearchStrategy[dict[str, Any]]:
    """The required arguments, valid; an experiment argument names the seeded, running experiment."""
    props = schema.get("properties", {})
    return st.fixed_dictionaries({
        p: st.just(KNOWN) if p in EXPERIMENT_ARGS and is_string(props[p], defs) else valid(props[p], defs)
        for p in schema.get("required", []) if p != leave_out})


def is_string(node: Any, defs: dict[str, Any]) -> bool:
    return json_types(node, defs) == {"string"}


# -- bad values -------------------------------------------------------------------------------------

def wrong_type(node: Any, defs: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    """A value of a JSON type the schema does not accept, and none pydantic would coerce into it
    (no 0/1 for a boolean, no integral float for an integer, no JSON text for a list)."""
    types = json_types(node, defs)
    if types is None:
        return None
    options: list[st.SearchStrategy[Any]] = []
    if "string" not in types:
        options.append(st.sampled_from(WORDS))
    if not types & {"integer", "number"}:
        options.append(st.one_of(st.integers(2, 10**6), st.integers(-10**6, -1)))
    if "number" not in types:
        options.append(st.sampled_from([1.5, -2.25, 0.1]))
    if not types & {"boolean", "integer", "number"}:
        options.append(st.booleans())
    if "array" not in types:
        options.append(st.just([1, "x"]))
    if "object" not in types:
        options.append(st.just({"a": 1}))
    if "null" not in types:
        options.append(st.none())
    return st.one_of(options) if options else None


def out_of_range(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    alts = branches(resolve(node, defs), defs)
    if len(alts) != 1:
        return None
    b = alts[0]
    kind = b.get("type")
    if kind in ("integer", "number"):
        bad: list[float] = []
        if "minimum" in b:
            bad += [b["minimum"] - 1, b["minimum"] - 1000]
        if "exclusiveMinimum" in b:
            bad += [b["exclusiveMinimum"], b["exclusiveMinimum"] - 5]
        if "maximum" in b:
            bad += [b["maximum"] + 1, b["maximum"] * 10 + 1000]
        if "exclusiveMaximum" in b:
            bad += [b["exclusiveMaximum"], b["exclusiveMaximum"] + 5]
        return st.sampled_from([int(v) if kind == "integer" else v for v in bad]) if bad else None
    if "enum" in b:
        return st.just("not-one-of-the-choices")
    if kind == "string" and "format" not in b:
        bad_s = []
        if b.get("minLength", 0) >= 1:
            bad_s.append("")
        if "maxLength" in b:
            bad_s.append("x" * (b["maxLength"] + 1))
        return st.sampled_from(bad_s) if bad_s else None
    if kind == "array":
        items = valid(b.get("items", {}), defs, 1)
        options = []
        if b.get("minItems", 0) >= 1:
            options.append(st.lists(items, max_size=b["minItems"] - 1))
        if "maxItems" in b and b["maxItems"] <= 200:
            options.append(st.lists(items, min_size=b["maxItems"] + 1, max_size=b["maxItems"] + 1))
        return st.one_of(options) if options else None
    return None


def huge_string(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    limits = [b.get("maxLength") for b in branches(resolve(node, defs), defs) if b.get("type") == "string"]
    if not limits or None in limits:
        return None
    return st.tuples(st.sampled_from("aZ9 é-"), st.integers(100_000, 400_000)).map(lambda c: c[0] * c[1])


def nan_ish(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    types = json_types(node, defs)
    if not types or "string" in types or not types & {"integer", "number"}:
        return None
    return st.sampled_from(NAN_ISH)


def nested_wrong_type(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any] | None:
    """A valid object argument with one required field of the wrong type."""
    objects = [b for b in branches(resolve(node, defs), defs) if b.get("properties") and b.get("required")]
    if len(objects) != 1:
        return None
    obj = objects[0]
    # A metric object also takes a bare metric name (the documented shorthand), so a string there is not wrong.
    fields = [(f, wrong_type(obj["properties"][f], defs)) for f in obj["required"] if not f.endswith("metric")]
    fields = [(f, s) for f, s in fields if s is not None]
    if not fields:
        return None

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        value = draw(valid(obj, defs))
        field, bad = draw(st.sampled_from(fields))
        value[field] = draw(bad)
        return value

    return build()


MUTATIONS = {"wrong_type": wrong_type, "out_of_range": out_of_range, "huge_string": huge_string,
             "nan_ish": nan_ish, "nested_wrong_type": nested_wrong_type}


def bad_calls(tool: str, schema: dict[str, Any]) -> st.SearchStrategy[tuple[str, str, dict[str, Any]]]:
    """(category, argument, arguments): arguments valid but for one bad thing, in `argument`."""
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    options: list[st.SearchStrategy[tuple[str, str, dict[str, Any]]]] = []
    for name, node in props.items():
        for category, mutation in MUTATIONS.items():
            bad = mutation(node, defs)
            if bad is None:
                continue
            options.append(st.tuples(st.just(category), st.just(name), valid_arguments(schema, defs), bad).map(
                lambda c: (c[0], c[1], {**c[2], c[1]: c[3]})))
    for name in schema.get("required", []):
        options.append(valid_arguments(schema, defs, leave_out=name).map(lambda a, n=name: ("missing", n, a)))
    for name in EXPERIMENT_ARGS:
        if name in props and is_string(props[name], defs) and tool not in EVENT_STORE_COUNTS:
            unknown = st.from_regex(r"never-[a-z0-9]{4,12}", fullmatch=True)
            options.append(st.tuples(valid_arguments(schema, defs), unknown).map(
                lambda c, n=name: ("unknown_experiment", n, {**c[0], n: c[1]})))
    return st.one_of(options)


def generate(tools: list[Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """The bad calls, drawn by hypothesis (generation only: the calls run afterwards, in the router's task)."""
    calls: list[tuple[str, str, str, dict[str, Any]]] = []
    for tool in tools:
        @settings(max_examples=CALLS_PER_TOOL, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(st.just(tool.name), bad_calls(tool.name, tool.input_schema))
        def draw(name: str, case: tuple[str, str, dict[str, Any]]) -> None:
            calls.append((name, *case))

        draw()
    return calls


# -- the check ---------------------------------------------------------------------------------------

def problems_with(tool: str, category: str, argument: str, result: Any) -> list[str]:
    if not result.is_error:
        return ["answered success"]
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    text = " ".join(texts)
    found = []
    if len(texts) != 1 or "\n" in text or "\r" in text:
        found.append("not one line")
    if not text.strip() or len(text) > 2000:
        found.append(f"{len(text)} characters")
    found += [what for pattern, what in FORBIDDEN if pattern.search(text)]
    if tool not in QUERY_TOOLS and INTERNAL_SQL.search(text):
        found.append("SQL")
    kind = ((result.meta or {}).get(ERROR_META) or {}).get("kind")
    if kind not in KINDS:
        found.append(f"no kind in _meta ({kind!r})")
    if category == "unknown_experiment":
        # not_found; or invalid_input when another generated argument breaks a rule no schema states
        # (e.g. boundaries that do not increase), which a service checks first.
        if kind not in ("not_found", "invalid_input"):
            found.append(f"kind {kind} for an unknown experiment")
    else:
        if kind != "invalid_input":
            found.append(f"kind {kind}")
        if f"'{argument}" not in text and f"{argument}" not in text:
            found.append(f"does not name {argument!r}")
    return found


def _short(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, default=str)[:200]


@readable
async def test_a_thousand_bad_calls_each_get_one_actionable_line_with_its_kind(
        neonblue_home: Path, pg_dsn: str, ch_database: str) -> None:
    settings_ = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                         clickhouse_database=ch_database)
    async with open_router(settings_) as router, Client(router.server) as client:
        tools = [t for t in (await client.list_tools()).tools if t.input_schema.get("properties")]
        assert len(tools) >= 40, [t.name for t in tools]
        created = await client.call_tool("create_experiment", {"experiment": {
            "key": KNOWN, "name": "Fuzz target", "type": "feature", "primary_metric": "conversion",
            "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}})
        started = await client.call_tool("start_experiment", {"experiment": KNOWN})
        assert not created.is_error and not started.is_error, (created.content, started.content)
        calls = generate(tools)
        failures: list[str] = []
        outcomes: Counter[str] = Counter()
        for tool, category, argument, arguments in calls:
            result = await client.call_tool(tool, arguments)
            kind = ((result.meta or {}).get(ERROR_META) or {}).get("kind")
            outcomes[f"{category}->{kind}"] += 1
            for problem in problems_with(tool, category, argument, result):
                text = " ".join(getattr(c, "text", "") for c in result.content)[:300]
                failures.append(f"{tool} [{category} {argument}] {problem}: {text!r} <- {_short(arguments)}")
        status = (await client.call_tool("router_status", {})).structured_content

    assert len(calls) >= 1000, len(calls)
    assert {t.name for t in tools} == {c[0] for c in calls}  # every tool with arguments got bad calls
    assert not failures, f"{len(failures)} of {len(calls)} bad calls:\n" + "\n".join(failures[:60])
    assert status["healthy"], status
    # The unknown experiments were mostly refused as such, not for some other argument.
    unknown = {k: v for k, v in outcomes.items() if k.startswith("unknown_experiment")}
    assert unknown.get("unknown_experiment->not_found", 0) > sum(unknown.values()) / 2, outcomes


@readable
async def test_a_peers_refusal_keeps_its_kind_and_its_words_through_every_hop(
        neonblue_home: Path, pg_dsn: str, ch_database: str) -> None:
    """intelligence -> postgres NotFound is a NotFound for the agent (in `_meta`) and for Backend.call
    (the class REST maps to 404), with postgres' own sentence and no backend prefix."""
    settings_ = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                         clickhouse_database=ch_database)
    async with open_router(settings_) as router, Client(router.server) as client:
        own = "no experiment with key or id 'nowhere' (list_experiments shows what exists)"
        for tool in ("allocate_traffic", "analyze_experiment_performance", "recommend_experiment_optimization",
                     "evaluate_guardrails", "run_autopilot", "plot_experiment"):
            result = await client.call_tool(tool, {"experiment": "nowhere"})
            assert result.is_error and result.content[0].text == own, (tool, result.content)
            assert result.meta[ERROR_META] == {"kind": "not_found"}, (tool, result.meta)
        with pytest.raises(NotFound, match=r"^no experiment with key or id 'nowhere'"):
            await router.backends["intelligence"].call("allocate_traffic", {"experiment": "nowhere"})
        with pytest.raises(InvalidInput, match=r"^argument 'experiment': should be a valid string, got 5;"):
            await router.backends["postgres"].call("get_experiment", {"experiment": 5})
        await client.call_tool("create_experiment", {"experiment": {
            "key": "twice", "name": "Twice", "type": "feature", "primary_metric": "conversion",
            "variants": [{"key": "control", "is_control": True}, {"key": "treatment"}]}})
        await router.backends["postgres"].call("start_experiment", {"experiment": "twice"})
        with pytest.raises(Conflict):
            await router.backends["postgres"].call("start_experiment", {"experiment": "twice"})
        with pytest.raises(QueryRefused):
            await router.backends["postgres"].call("postgres_query", {"sql": "DELETE FROM experiments"})
