"""One vocabulary for agents (issue 19): an LLM agent reads the tool list as its whole manual, so every
tool of the full router catalogue (in-process, every server) must speak one dialect
(schemas/vocabulary.py, docs/CONVENTIONS.md "Vocabulary"):

- the experiment argument is `experiment` everywhere; no tool takes `experiment_id` (the event's own wire
  format, the `event`/`events` of classify_event and ingest_events, is the seed's and is left out);
- a result names the experiment's key `experiment_key`; `experiment_id` in a result is the numeric id;
- metric names share one rule (one pattern, one maximum length);
- fractions are fractions: no `*_pct` argument; weights, coverage and alpha lie in 0..1; lift, mde and
  improvement are documented as fractions (0.05 = 5%);
- one paging convention: `limit` (+ `offset` for lists), never max_rows / n_results / n_neighbors / top_segments;
- read-style tools (get_/list_/find_/search/describe/predict_/plot_/semantic_) are annotated read-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcp import Client

from mcp_router.runtime.serving import open_router
from schemas.settings import Settings
from schemas.vocabulary import METRIC_NAME_MAX_LENGTH, METRIC_NAME_PATTERN

EVENT_ARGUMENTS = {"event", "events"}  # the seed's event wire format (schemas/events.py), not a tool's vocabulary
OLD_PAGING = {"max_rows", "n_results", "n_neighbors", "top_segments", "top_k", "page", "page_size", "per_page"}
METRIC_FIELDS = {"metric", "metrics", "primary_metric", "secondary_metrics", "numerator", "denominator"}
UNIT_FRACTIONS = {"weight", "coverage", "alpha"}
RELATIVE_FRACTIONS = {"lift", "mde", "improvement"}
READ_PREFIXES = ("get_", "list_", "find_", "search_", "describe_", "predict_", "plot_", "semantic_")
# Named like a read, but the caller's call changes state: get_variant assigns the user (and is annotated so).
WRITES_BY_DESIGN = {"get_variant"}


def resolve(node: Any, defs: dict[str, Any]) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    return node


def properties(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, name, node) for every property at any depth (through $ref, anyOf, items), event wire format left out."""
    defs = schema.get("$defs", {})
    seen: set[int] = set()

    def walk(node: Any, path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        node = resolve(node, defs)
        if not isinstance(node, dict) or id(node) in seen:
            return
        seen.add(id(node))
        for name, sub in (node.get("properties") or {}).items():
            if name in EVENT_ARGUMENTS:
                continue
            yield f"{path}.{name}", name, resolve(sub, defs)
            yield from walk(sub, f"{path}.{name}")
        for key in ("anyOf", "oneOf", "allOf"):
            for branch in node.get(key) or []:
                yield from walk(branch, path)
        if "items" in node:
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{path}{{}}")

    yield from walk(schema, "")


def leaves(node: dict[str, Any], defs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The non-null alternatives of a property (anyOf branches, array items)."""
    node = resolve(node, defs)
    if not isinstance(node, dict):
        return
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        for branch in branches:
            yield from leaves(branch, defs)
    elif node.get("type") == "array" and "items" in node:
        yield from leaves(node["items"], defs)
    elif node.get("type") != "null":
        yield node


async def catalogue(neonblue_home: Path, pg_dsn: str, ch_database: str) -> list[Any]:
    settings = Settings(_env_file=None, neonblue_home=neonblue_home, database_url=pg_dsn,
                        clickhouse_database=ch_database, tool_profile="full")
    async with open_router(settings) as router, Client(router.server) as client:
        return list((await client.list_tools()).tools)


async def test_every_tool_speaks_one_vocabulary(neonblue_home: Path, pg_dsn: str, ch_database: str) -> None:
    tools = await catalogue(neonblue_home, pg_dsn, ch_database)
    assert len(tools) >= 40, [t.name for t in tools]
    problems: list[str] = []
    experiment_tools = 0
    for tool in tools:
        schema = tool.input_schema or {}
        defs = schema.get("$defs", {})
        top = set(schema.get("properties") or {})
        experiment_tools += "experiment" in top
        if {"experiment_id", "experiment_key", "experiment_ref"} & top:
            problems.append(f"{tool.name}: the experiment argument is called {sorted(top & {'experiment_id', 'experiment_key'})}")
        if "offset" in top and "limit" not in top:
            problems.append(f"{tool.name}: offset without limit")
        for path, name, node in properties(schema):
            where = f"{tool.name} input{path}"
            if name == "experiment_id":
                problems.append(f"{where}: takes experiment_id (call it experiment)")
            if name.endswith("_pct") or name.endswith("_percent") or name.endswith("_percentage"):
                problems.append(f"{where}: a percent argument (use a fraction)")
            if name in OLD_PAGING:
                problems.append(f"{where}: paging is limit/offset")
            if name in METRIC_FIELDS:
                for leaf in leaves(node, defs):
                    if leaf.get("type") == "string" and "enum" not in leaf and (
                            leaf.get("pattern") != METRIC_NAME_PATTERN
                            or leaf.get("maxLength", METRIC_NAME_MAX_LENGTH) != METRIC_NAME_MAX_LENGTH):
                        problems.append(f"{where}: metric name rule {leaf.get('pattern')!r}/{leaf.get('maxLength')}")
            numeric = [leaf for leaf in leaves(node, defs) if leaf.get("type") in ("number", "integer")]
            if name in UNIT_FRACTIONS:
                for leaf in numeric:
                    high = leaf.get("maximum", leaf.get("exclusiveMaximum"))
                    if high is None or high > 1 or leaf.get("minimum", leaf.get("exclusiveMinimum", -1)) < 0:
                        problems.append(f"{where}: a fraction must lie within 0..1 ({leaf})")
            if name in RELATIVE_FRACTIONS:
                for leaf in numeric:
                    text = (node.get("description") or "") + (leaf.get("description") or "")
                    if "fraction" not in text and "0.05 = 5%" not in text:
                        problems.append(f"{where}: say it is a fraction (0.05 = 5%)")
        for path, name, node in properties(tool.output_schema or {}):
            if name == "experiment_id" and any(leaf.get("type") == "string"
                                               for leaf in leaves(node, (tool.output_schema or {}).get("$defs", {}))):
                problems.append(f"{tool.name} output{path}: the key is experiment_key (experiment_id is the numeric id)")
        if tool.name.startswith(READ_PREFIXES) and tool.name not in WRITES_BY_DESIGN:
            hints = tool.annotations
            if hints is None or hints.read_only_hint is not True:
                problems.append(f"{tool.name}: a read-style tool not annotated read-only")
    assert experiment_tools >= 20
    assert not problems, "\n".join(problems)
