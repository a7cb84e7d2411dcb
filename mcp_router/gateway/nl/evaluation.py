"""Scoring route_query plans against a labelled corpus (tests/nl/corpus.yaml; bench/bench_nl.py).

A question scores when its plan has the labelled intent and exactly the labelled calls: the same
tools (in any order for a fan-out over experiments), each labelled argument present with the
labelled value (numbers to 1e-6; a dict label is matched key by key; `name~: [words]` means the
argument contains each word). A question labelled with no calls scores when nothing is planned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def load_corpus(path: Path) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["questions"]


def _matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            _matches(e, a) for e, a in zip(expected, actual, strict=True))
    return expected == actual


def _arguments_match(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    for name, value in expected.items():
        if name.endswith("~"):
            text = str(actual.get(name[:-1], "")).lower()
            if not all(str(word).lower() in text for word in value):
                return False
        elif name not in actual or not _matches(value, actual[name]):
            return False
    return True


@dataclass(frozen=True)
class Score:
    question: str
    ok: bool
    intent_ok: bool
    why: str


def score(item: dict[str, Any], plan: dict[str, Any]) -> Score:
    """One labelled question against the plan route_query returned for it."""
    expected_intent = item["intent"]
    got_intent = plan.get("intent")
    intent_ok = got_intent == expected_intent or (expected_intent == "decline" and got_intent == "unknown")
    calls = [c for c in plan.get("calls", []) if not c.get("bind")]
    bound = [c for c in plan.get("calls", []) if c.get("bind")]
    expected = item.get("calls") or []
    if not intent_ok:
        return Score(item["q"], False, False, f"intent {got_intent}, labelled {expected_intent}")
    if bound:
        return Score(item["q"], False, True, f"resolved by a search step ({bound[0]['tool']}), labelled direct")
    if len(calls) != len(expected):
        return Score(item["q"], False, True, f"{len(calls)} calls {[c['tool'] for c in calls]}, labelled "
                     f"{len(expected)} {[c['tool'] for c in expected]}; missing {plan.get('missing')}")
    unmatched = list(calls)
    for want in expected:
        hit = next((c for c in unmatched if c["tool"] == want["tool"]
                    and _arguments_match(want.get("args") or {}, c["arguments"])), None)
        if hit is None:
            got = [(c["tool"], c["arguments"]) for c in unmatched if c["tool"] == want["tool"]]
            return Score(item["q"], False, True, f"no call {want['tool']} with {want.get('args')}; got {got or [c['tool'] for c in unmatched]}")
        unmatched.remove(hit)
    return Score(item["q"], True, True, "")


def summary(scores: list[Score]) -> str:
    n = len(scores)
    ok = sum(s.ok for s in scores)
    intents = sum(s.intent_ok for s in scores)
    return (f"{ok}/{n} = {ok / n:.1%} on tool and arguments; intent {intents}/{n} = {intents / n:.1%}"
            if n else "no questions")
