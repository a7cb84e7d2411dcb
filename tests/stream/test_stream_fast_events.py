"""The fast event decoder (schemas/fast_events.py) against the pydantic `Event` model.

A differential property: for any input bytes, the fast path accepts only what `Event` accepts and
yields the same values (and the same stream record); what it declines goes to pydantic, so the
processor's decision and dead-letter text are pydantic's. The Structs mirror the models' fields and
constraints (a drift check over the two JSON Schemas), and the fast path is not vacuous: the events
producers send (the generator's, the outbox relay's) take it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mcp_servers.postgres.assignment import AssignmentSpec
from schemas.events import Event, EventType
from schemas.fast_events import MIRRORS, MODEL_EVENT_TYPES, decode_batch, decode_event, decode_record
from stream_processor.generator import ArmTruth, TrafficPlan, generate_events
from stream_processor.outbox import encode_event
from stream_processor.processor import StreamProcessor
from stream_processor.sinks import Record

SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def pydantic_event(raw: bytes) -> Event | None:
    try:
        return Event.model_validate_json(raw)
    except ValidationError:
        return None


def same(a: Any, b: Any) -> bool:
    """Equal values of the same JSON kinds (1 is not 1.0, -0.0 is not 0.0, and offsets count)."""
    if isinstance(a, BaseModel) or isinstance(b, BaseModel):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, datetime) or isinstance(b, datetime):
        return (isinstance(a, datetime) and isinstance(b, datetime) and a == b
                and a.utcoffset() == b.utcoffset() and a.replace(tzinfo=None) == b.replace(tzinfo=None))
    if isinstance(a, str) and isinstance(b, str):
        return str(a) == str(b)  # EventType is a StrEnum
    return type(a) is type(b) and a == b


def check(raw: bytes) -> None:
    """The property, for one input."""
    fast = decode_event(raw)
    event = pydantic_event(raw)
    if fast is None:
        return
    assert event is not None, f"the fast path accepted what pydantic refuses: {raw!r}"
    struct, when = fast
    values = msgspec.to_builtins(struct)
    values["timestamp"] = when
    values["event_type"] = struct.event_type
    expected = event.model_dump()
    assert same(values, expected), (raw, values, expected)
    record = decode_record(raw, Record, "t", 3, 7)
    if event.event_type in MODEL_EVENT_TYPES:
        assert record is None
    else:
        assert same(tuple(record), tuple(Record.of(event, raw, "t", 3, 7))), raw
    check_batch([raw])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def check_batch(raws: list[bytes]) -> None:
    """The columnar decoder gives, for a batch, exactly `decode_record`'s verdicts and values."""
    columns = decode_batch(raws)
    expected = [decode_record(raw, Record, "t", 0, position) for position, raw in enumerate(raws)]
    assert columns.declined == [p for p, r in enumerate(expected) if r is None], raws
    accepted = [r for r in expected if r is not None]
    assert columns.position == [r.offset for r in accepted]
    for index, record in enumerate(accepted):
        row = columns.row(index)
        assert same(row, tuple(record)[:len(row)]), (row, record)
        assert int(columns.timestamp[index]) == (record.timestamp - _EPOCH) // timedelta(milliseconds=1)


# ----------------------------------------------------------------------------- strategies

unicode_text = st.text(st.characters(codec="utf-8"), max_size=6)
ids = st.one_of(
    st.sampled_from(["u1", "exp-a", "control", "", "ü", "日本", "😀" * 128, "a" * 128, "a" * 129, "😀" * 129,
                     "\x00", " ", "x\n"]),
    unicode_text,
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([2**64, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5e-324]), unicode_text,
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(unicode_text, inner, max_size=3)), max_leaves=6)

_BASE = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


@st.composite
def timestamps(draw: Any) -> Any:
    moment = _BASE + timedelta(microseconds=draw(st.integers(-10**15, 10**15)))
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return moment.timestamp()
    if kind == 1:
        return draw(st.integers(-10**12, 10**14))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.integers(0, 9))
    if digits:
        text += "." + f"{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    offset = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-11:00", "+14:00", "+23:59", "+24:00",
                                   "+99:99", "+0530", "+05", "", " UTC", "-12:60"]))
    text += offset
    if kind == 2:
        text = text.replace("T", " ")
    if kind == 3:
        text = text.replace("T", "t")
    if kind == 4:
        text = draw(st.sampled_from(["2026-02-30T10:00:00Z", "2026-13-01T10:00:00Z", "2026-01-01T24:00:00Z",
                                     "2026-01-01T23:59:60Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
                                     "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999-01:00",
                                     "2026-01-01", "2026-01-01T10:00Z", "20260101T100000Z", "2026-W01-1T10:00:00Z",
                                     "２０２６-01-01T10:00:00Z", "2026-01-01T10:00:00.Z", "2026-01-01T10:00:00,5Z"]))
    return text


@st.composite
def events(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from([t.value for t in EventType] + ["Exposure", "unknown", ""]))
    event: dict[str, Any] = {"event_id": draw(ids), "event_type": kind, "timestamp": draw(timestamps()),
                             "user_id": draw(ids)}
    optional = {
        "experiment_id": ids, "variant": ids, "metric": ids, "session_id": ids,
        "value": st.one_of(st.floats(), st.integers(-(2**80), 2**80), st.sampled_from(["1.5", True, 10**400, None])),
        "segment": st.one_of(st.none(), st.fixed_dictionaries(
            {}, optional={"device": st.one_of(st.none(), unicode_text, st.just("d" * 65), st.just("d" * 64)),
                          "country": unicode_text, "source": st.one_of(st.none(), st.integers()),
                          "plan": st.just("pro"), "extra": st.just(1)})),
        "properties": st.one_of(
            st.dictionaries(unicode_text, json_scalars, max_size=5),
            st.dictionaries(st.text(min_size=3, max_size=4), st.just(1), min_size=63, max_size=66),
            json_values),
        "ai_context": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
            "behavioral_score": st.one_of(st.floats(), st.integers(-2, 2), st.sampled_from(["0.5", True])),
            "user_journey_stage": unicode_text, "segment": st.one_of(unicode_text, st.integers()),
            "other": st.just(1)})),
        "semantic_context": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
            "text": st.one_of(unicode_text, st.just("x" * 8193), st.just("😀" * 8192)),
            "context_keywords": st.one_of(st.lists(unicode_text, max_size=3), st.lists(st.just("k"), min_size=64,
                                                                                       max_size=65), json_values),
            "sentiment_score": st.one_of(st.floats(), st.sampled_from([-1, 1, -1.0000001, "0.1"]))})),
        "routing_metadata": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
            "priority": st.sampled_from(["high", "medium", "low", "high\n", "HIGH", " low", "", None, 1]),
            "source": st.one_of(st.just("neonblue.outbox"), unicode_text), "trace_id": unicode_text})),
        "unexpected": json_values,
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0 or (name in ("experiment_id", "variant") and draw(st.booleans())):
            event[name] = draw(strategy)
    if draw(st.integers(0, 5)) == 0:  # a required field missing or of a wrong type
        name = draw(st.sampled_from(["event_id", "event_type", "timestamp", "user_id"]))
        if draw(st.booleans()):
            event.pop(name)
        else:
            event[name] = draw(json_values)
    return event


def serialize(event: Any, style: int) -> bytes:
    if style == 0:
        return json.dumps(event).encode()  # ASCII escapes; NaN/Infinity tokens for non-finite floats
    if style == 1:
        return json.dumps(event, ensure_ascii=False, indent=1).encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(event)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(event).encode()


@st.composite
def inputs(draw: Any) -> bytes:
    raw = serialize(draw(events()), draw(st.integers(0, 2)))
    mutation = draw(st.integers(0, 6))
    if mutation == 0 and raw:  # a byte changed
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1:]
    elif mutation == 1 and raw:  # cut short, or garbage after it
        raw = raw[:draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw + draw(st.binary(max_size=3))
    elif mutation == 2:  # a key repeated (pydantic keeps the last value)
        raw = raw.replace(b'"user_id"', b'"user_id": 1, "user_id"', 1)
    return raw


@SETTINGS
@given(inputs())
@example(b'{"event_id":"e","event_type":"click","timestamp":"2026-01-01T10:00:00Z","user_id":"u"}')
@example(b'{"event_id":"e","event_type":"click","timestamp":"2026-01-01T10:00:00Z","user_id":"\\ud800"}')
@example(b'{"event_id":"e","event_type":"click","timestamp":"2026-01-01T10:00:00Z","user_id":"\xff"}')
@example(b'{"event_id":"e","event_type":"metric","timestamp":"2026-01-01T10:00:00Z","user_id":"u",'
         b'"experiment_id":"x","metric":"m","value":1e400}')
@example(b'{"event_id":"e","event_type":"click","timestamp":"2026-01-01T10:00:00Z","user_id":"u",'
         b'"properties":{"n":100000000000000000000000000,"f":1e400}}')
def test_fast_path_accepts_only_what_pydantic_accepts_with_the_same_record(raw: bytes) -> None:
    check(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(inputs(), max_size=12))
def test_a_batch_decodes_as_its_events_one_by_one(raws: list[bytes]) -> None:
    """Mixed batches (the timestamps are checked for the whole batch at once): the same verdicts."""
    check_batch(raws)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(timestamps().filter(lambda t: isinstance(t, str)), min_size=1, max_size=8))
def test_a_batchs_timestamps_read_as_fromisoformat_reads_them(stamps: list[str]) -> None:
    check_batch([orjson.dumps({"event_id": "e", "event_type": "click", "timestamp": t, "user_id": "u"})
                 for t in stamps])


PROCESSOR = StreamProcessor(bootstrap="unused:1", topics=["t"], group_id="g", sinks={})


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(inputs())
def test_the_processors_verdict_is_pydantics(raw: bytes) -> None:
    """Through the processor: accepted events are the same records, refused ones the same reason."""
    assume(len(raw) <= PROCESSOR.max_event_bytes)
    record, reason = PROCESSOR._parse(raw, None, "t", 0, 5)  # noqa: SLF001
    try:
        event = Event.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "event"
        expected = f"bad JSON: {err['msg']}" if err["type"] == "json_invalid" else f"invalid event: {where}: {err['msg']}"
        assert record is None
        assert reason == expected
        return
    assert same(tuple(record)[:-1], tuple(Record.of(event, raw, "t", 0, 5))[:-1])
    assert (record.event is None) == (event.event_type not in MODEL_EVENT_TYPES)


def test_the_events_producers_send_take_the_fast_path() -> None:
    spec = AssignmentSpec(seed="exp-a", weights=(0.5, 0.5), coverage=1.0, hash_version=2, namespace=None)
    plan = TrafficPlan("exp-a", ["control", "treatment"], spec, {"control": ArmTruth(0.1, 40),
                       "treatment": ArmTruth(0.11, 40)}, 300, datetime.now(UTC) - timedelta(days=3))
    generated = [raw for _topic, _key, raw in generate_events(plan)]
    relayed = [encode_event({"event_id": "0b6f0c0e-1a1a-4c55-9b7e-0a0b0c0d0e0f", "event_type": "exposure",
                             "occurred_at": datetime.now(UTC), "user_id": "u1", "experiment_key": "exp-a",
                             "variant_key": "control", "metric": None, "value": None})]
    assert len(generated) > 300
    for raw in generated + relayed:
        check(raw)
        if pydantic_event(raw).event_type not in MODEL_EVENT_TYPES:
            assert decode_record(raw, Record, "t", 0, 0) is not None, raw
    assert decode_record(relayed[0], Record, "t", 0, 0).origin == "neonblue.outbox"


# ----------------------------------------------------------------------------- drift

# Differences the fast path handles in Python or leaves to pydantic (see schemas/fast_events.py).
KNOWN = {
    ("Event", "timestamp"): "checked after decoding (RFC 3339 subset + fromisoformat), others go to pydantic",
    ("RoutingMetadata", "priority"): "a Literal instead of the ^(high|medium|low)$ pattern",
}


def _normalize(schema: Any, defs: dict[str, Any], renames: dict[str, str]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            return {"ref": renames.get(name, name)}
        # pydantic's schema omits a default_factory's value (the empty list or dict msgspec shows)
        out = {k: _normalize(v, defs, renames) for k, v in schema.items()
               if k not in ("title", "description") and not (k == "default" and v in ([], {}))}
        if "enum" in out:
            out = {"enum": sorted(out["enum"])}
        if out.get("required") == []:
            out.pop("required")
        if "anyOf" in out:
            out["anyOf"] = sorted(out["anyOf"], key=lambda s: json.dumps(s, sort_keys=True))
        return out
    if isinstance(schema, list):
        return [_normalize(x, defs, renames) for x in schema]
    return schema


def test_the_structs_mirror_the_models() -> None:
    ours = msgspec.json.schema(MIRRORS["Event"])
    theirs = Event.model_json_schema()
    renames = {struct.__name__: name for name, struct in MIRRORS.items()}
    ours_defs = {renames.get(k, k): _normalize(v, {}, renames) for k, v in ours["$defs"].items()}
    theirs_defs = {k: _normalize(v, {}, {}) for k, v in theirs.pop("$defs").items()}
    theirs_defs["Event"] = _normalize(theirs, {}, {})
    assert set(ours_defs) == set(theirs_defs)
    for model, schema in theirs_defs.items():
        mine = ours_defs[model]
        if model == "EventType":
            assert mine["enum"] == schema["enum"]
            continue
        assert set(mine["properties"]) == set(schema["properties"]), model
        assert sorted(mine.get("required", [])) == sorted(schema.get("required", [])), model
        assert mine["additionalProperties"] is schema["additionalProperties"] is False, model
        for field, spec in schema["properties"].items():
            if (model, field) in KNOWN:
                continue
            assert mine["properties"][field] == spec, (model, field, mine["properties"][field], spec)
