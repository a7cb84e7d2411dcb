"""schemas.refusals: how a failure becomes one line an agent can act on, with its kind."""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import BaseModel, Field, ValidationError

from mcp_servers.tool_server import ToolServer
from schemas.errors import BackendUnavailable, Conflict, InternalError, InvalidInput, NotFound, ServiceError
from schemas.refusals import ERROR_META, normalized, one_line, refusal, refusal_of, refusal_result


class Variant(BaseModel):
    key: str = Field(pattern=r"^[a-z]+$")
    weight: float = Field(ge=0, le=1)


class Spec(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    variants: list[Variant] = Field(min_length=2)
    kind: Literal["a", "b"] = "a"


def _server() -> ToolServer:
    mcp = ToolServer("t")

    @mcp.tool()
    async def create(spec: Spec, limit: Annotated[int, Field(ge=1, le=500)] = 50) -> dict:
        """Create."""
        return {"ok": True}

    @mcp.tool()
    async def find(key: str) -> dict:
        """Find."""
        raise NotFound(f"no experiment with key or id {key!r} (list_experiments shows what exists)")

    @mcp.tool()
    async def crash() -> dict:
        """Crash."""
        raise KeyError("secret internal detail")

    @mcp.tool()
    async def grouped() -> dict:
        """A refusal inside a task group."""
        async def refuse() -> None:
            raise Conflict("experiment 'x' is running already; stop it first")

        async with anyio.create_task_group() as tg:
            tg.start_soon(refuse)
        return {}

    return mcp


async def test_argument_errors_name_the_argument_what_came_and_what_is_expected() -> None:
    async with Client(_server()) as client:
        missing = await client.call_tool("create", {})
        nested = await client.call_tool("create", {"spec": {"name": "n", "variants": [
            {"key": "a", "weight": 0.5}, {"key": "B!", "weight": 2}]}, "limit": 9999})
    assert missing.is_error and missing.meta[ERROR_META] == {"kind": "invalid_input"}
    assert missing.content[0].text == (
        "argument 'spec': missing; expected an object with required name, variants; optional kind")
    text = nested.content[0].text
    assert text == (
        "argument 'spec.variants[1].key': string should match pattern '^[a-z]+$', got \"B!\"; expected a string "
        "matching ^[a-z]+$ | argument 'spec.variants[1].weight': should be less than or equal to 1, got 2; "
        "expected a finite number from 0 to 1 | argument 'limit': should be less than or equal to 500, got 9999; "
        "expected an integer from 1 to 500"), text
    assert "Arguments" not in text and "pydantic" not in text and "Variant" not in text


async def test_a_refusal_keeps_its_kind_and_words_and_a_crash_keeps_its_secret() -> None:
    async with Client(_server()) as client:
        found = await client.call_tool("find", {"key": "nope"})
        crashed = await client.call_tool("crash", {})
        grouped = await client.call_tool("grouped", {})
    assert found.content[0].text == "no experiment with key or id 'nope' (list_experiments shows what exists)"
    assert found.meta[ERROR_META] == {"kind": "not_found"}
    assert isinstance(refusal_of(found), NotFound) and refusal_of(found).status_code == 404
    assert crashed.meta[ERROR_META] == {"kind": "internal"} and "secret" not in crashed.content[0].text
    assert grouped.meta[ERROR_META] == {"kind": "conflict"}
    assert grouped.content[0].text == "experiment 'x' is running already; stop it first"


def test_the_sdk_wrappers_and_exception_groups_are_unwrapped() -> None:
    inner = NotFound("no such thing")
    wrapped = ToolError("Error executing tool a: Error executing tool b: no such thing")
    wrapped.__cause__ = inner
    assert type(refusal(wrapped)) is NotFound and str(refusal(wrapped)) == "no such thing"
    group = ExceptionGroup("g", [BackendUnavailable("store down"), BackendUnavailable("other")])
    crash = UnexpectedToolError("Error executing tool a")
    crash.__cause__ = group
    assert type(refusal(crash)) is BackendUnavailable and str(refusal(crash)) == "store down"
    mixed = UnexpectedToolError("Error executing tool a")
    mixed.__cause__ = ExceptionGroup("g", [NotFound("x"), ValueError("bug")])
    assert type(refusal(mixed)) is InternalError
    try:
        Variant.model_validate({"key": "a", "weight": 3})
    except ValidationError as exc:
        output_bug = UnexpectedToolError("Error executing tool a")  # the tool's own model failed: a bug
        output_bug.__cause__ = exc
        assert type(refusal(output_bug)) is InternalError


@pytest.mark.parametrize(("raw", "clean"), [
    ("Error executing tool allocate_traffic: postgres.get_experiment: Error executing tool get_experiment: "
     "no experiment with key or id 'x'", "no experiment with key or id 'x'"),
    ("ClickHouse (chdb) failed: Code: 131. DB::Exception: Too large string size. (TOO_LARGE_STRING_SIZE)\n"
     "Stack trace: 0. DB::Exception...", "ClickHouse failed: Too large string size."),
    ("1 validation error for get_variantArguments\nexperiment\n  Field required [type=missing, "
     "input_value={}, input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.14/v/missing",
     "invalid arguments: experiment Field required"),
    ("boom\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>", "boom"),
])
def test_one_line_strips_wrappers_engine_text_and_dumps(raw: str, clean: str) -> None:
    assert one_line(raw) == clean


def test_a_result_without_a_kind_is_cleaned_and_raises_the_base_class() -> None:
    foreign = refusal_result(ServiceError("x")).model_copy(update={"meta": None})
    foreign.content[0].text = "Error executing tool t: line one\nline two"
    cleaned = normalized(foreign)
    assert cleaned.content[0].text == "line one line two" and cleaned.meta is None
    assert type(refusal_of(cleaned)) is ServiceError
    assert type(refusal_of(refusal_result(InvalidInput("bad")))) is InvalidInput
