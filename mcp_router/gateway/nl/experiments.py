"""Which experiments a question names, found against the registry's live definitions.

People name experiments by key ("checkout-1step"), by name ("the one-step checkout"), by what they
change ("the premium price point", "the support bot prompt test"), by a variant ("users who saw the
premium price") or by topic ("pricing experiments"). Each experiment is indexed by the words of
its key, name, tags, variants, type, description and hypothesis, weighted in that order of how
much they identify it; a word of the type, metrics or description is further weighted by how few
experiments share it (idf), while a word of the key, name or tags names every experiment it is in
("pricing experiments"). A
question word matches an indexed word when equal, when one is a prefix of the other ("price" /
"pricing", "onboard" / "onboarding"), or, from five letters, when it is a likely typo of it
(difflib ratio ≥ 0.85: "chekout").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from mcp_router.gateway.nl.entities import STOPWORDS, words

# A variant word alone does not name an experiment (variants are often plain words: "table", "short").
FIELD_WEIGHTS = {"key": 3.0, "name": 3.0, "tag": 2.0, "variant": 1.5, "type": 1.0, "metric": 0.5,
                 "description": 1.0}
_EXPERIMENT_NOUNS = frozenset({"experiment", "experiments", "test", "tests", "one", "ones", "variant",
                               "variants", "arm", "arms", "flow", "flows"})
_NAMING_FIELDS = frozenset({"key", "name", "tag"})
STRONG = 2.0  # at least this score names an experiment: one rare word of its key, name or tags
_DIGITS = {"1": "one", "2": "two", "3": "three", "4": "four"}
# Words that say what to do with an experiment, never which one.
ACTION_WORDS = frozenset("""
analyse analyze analysis result results significant significance winner winning won win lift doing perform
performing performance status statistic statistics ship rolled roll back stop start started archive archived
plot chart graph forecast predict prediction trend trends guardrail guardrails safe hurt hurting harm segment
segments recommend recommendation recommendations optimise optimize optimization strategy strategies next
should would could variant variants arm arms version versions traffic split allocate allocation weight
weights autopilot decide decided decision decisions user users people saw seen see exposed exposure exposures
how many count number total data events event metric metrics rate conversion revenue improve improved
check checks checking
improvement better worse best worst compare comparison versus report summary summarize summarise describe
detail details config configuration hypothesis happening going progress far currently current latest
""".split())


@dataclass(frozen=True)
class Match:
    key: str
    name: str
    score: float
    words: tuple[str, ...]  # the question's words that matched
    variant: str | None  # a variant the question named, if any
    naming: tuple[str, ...] = ()  # the matched words that name it (key, name, tag, variant): masked


@dataclass
class _Indexed:
    key: str
    name: str
    status: str
    fields: dict[str, set[str]] = field(default_factory=dict)
    variants: dict[str, set[str]] = field(default_factory=dict)  # variant key -> its words
    variant_words: dict[str, set[str]] = field(default_factory=dict)  # the same, stop words kept


def _split(text: str) -> list[str]:
    out = []
    text = re.sub(r"\b([a-z])/([a-z])\b", r"\1\2", text.lower())  # "A/A" is one word, "aa"
    for word in words(text):
        out.append(word)
        if m := re.fullmatch(r"(\d)([a-z]+)", word):  # "1step" -> one, step
            out.extend([_DIGITS.get(m.group(1), m.group(1)), m.group(2)])
    return [w for w in out if w not in STOPWORDS]


_SUFFIXES = frozenset({"", "s", "es", "e", "ing", "ings", "ed", "er", "ers", "ion", "ions", "ise", "ize",
                       "ised", "ized", "al", "ly", "y", "ies"})


def metric_specs(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    """An experiment's metrics, as the registry gives them: primary, secondary, guardrails ({name, direction…})."""
    return [m for m in [experiment.get("primary_metric") or {}, *(experiment.get("secondary_metrics") or []),
                        *(experiment.get("guardrail_metrics") or [])] if isinstance(m, dict)]


def similar(a: str, b: str) -> bool:
    """One word for the other: equal, the same stem with an inflection ("price" / "pricing",
    "onboard" / "onboarding", never "check" / "checkout"), or from five letters a likely typo."""
    if a == b:
        return True
    shorter = min(len(a), len(b))
    if shorter >= 4:
        prefix = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            prefix += 1
        if prefix >= max(4, shorter - 1) and a[prefix:] in _SUFFIXES and b[prefix:] in _SUFFIXES:
            return True
    return shorter >= 5 and abs(len(a) - len(b)) <= 2 and SequenceMatcher(None, a, b).ratio() >= 0.85


class ExperimentIndex:
    """Built from get_experiment results (the registry's full definitions)."""

    def __init__(self, experiments: list[dict[str, Any]]) -> None:
        self.experiments = {e["key"]: e for e in experiments}
        self._indexed: list[_Indexed] = []
        for e in experiments:
            item = _Indexed(e["key"], e.get("name") or e["key"], e.get("status", ""))
            item.fields["key"] = set(_split(e["key"]))
            item.fields["name"] = set(_split(e.get("name") or ""))
            item.fields["tag"] = {w for tag in e.get("tags") or [] for w in _split(tag)} - {"demo"}
            item.fields["type"] = set(_split(e.get("type") or ""))
            item.fields["metric"] = {w for m in metric_specs(e) for w in _split(m.get("name", ""))}
            item.fields["description"] = set(_split(f"{e.get('description', '')} {e.get('hypothesis', '')}"))
            for v in e.get("variants") or []:
                item.variants[v["key"]] = set(_split(v["key"])) | set(_split(v.get("name") or ""))
                item.variant_words[v["key"]] = set(words(v["key"])) | set(words(v.get("name") or ""))
            item.fields["variant"] = set().union(*item.variants.values()) if item.variants else set()
            self._indexed.append(item)
        # idf over experiments: a word every experiment has ("conversion") identifies none.
        n = max(len(self._indexed), 1)
        vocabulary = {w for item in self._indexed for ws in item.fields.values() for w in ws}
        self._idf = {w: math.log(1 + n / sum(1 for item in self._indexed
                                             if any(w in ws for ws in item.fields.values())))
                     for w in vocabulary}
        self._max_idf = math.log(1 + n)

    def __len__(self) -> int:
        return len(self._indexed)

    def metric_names(self) -> set[str]:
        return {m["name"] for e in self.experiments.values() for m in metric_specs(e) if m.get("name")}

    def match(self, question: str, ignore: frozenset[str] = frozenset()) -> list[Match]:
        """Experiments the question names, best first (only those with a positive score). Words in
        `ignore` (segment values the question filters on: "on mobile") do not count."""
        text = question.lower()
        asked = [w for w in _split(question) if w not in ACTION_WORDS and w not in ignore]
        out = []
        for item in self._indexed:
            exact = re.search(rf"(?<![\w-]){re.escape(item.key.lower())}(?![\w-])", text) is not None
            score, matched, naming = 0.0, [], []
            for word in dict.fromkeys(asked):
                best, best_field = 0.0, ""
                for field_name, indexed in item.fields.items():
                    hit = next((w for w in indexed if similar(word, w)), None)
                    if hit is not None:
                        weight = FIELD_WEIGHTS[field_name]
                        if field_name not in _NAMING_FIELDS:  # a name word names; a common description word does not
                            weight *= self._idf.get(hit, 0.0) / self._max_idf
                        if weight > best:
                            best, best_field = weight, field_name
                if best > 0:
                    score += best
                    matched.append(word)
                    if best_field in _NAMING_FIELDS:
                        naming.append(word)
            for variant_key in item.variants:  # a variant key written out ("step_by_step") names it
                if re.search(r"[_-]", variant_key) and len(variant_key) >= 5 and re.search(
                        rf"(?<![\w-]){re.escape(variant_key.lower())}(?![\w-])", text):
                    score += FIELD_WEIGHTS["key"]
                    matched.append(variant_key)
            if exact:
                score = 100.0
            if score > 0:
                out.append(Match(item.key, item.name, round(score, 3), tuple(matched), self._variant(item, question),
                                 tuple(naming)))
        return sorted(out, key=lambda m: (-m.score, m.key))

    def mask(self, question: str) -> str:
        """The question with the words that name an experiment replaced by "experiment": what is left
        says what is asked ("is the checkout experiment significant?" → "is the experiment
        significant?"), which is what the intent classifier compares (its examples are masked alike)."""
        matches = [m for m in self.match(question) if m.score >= STRONG]
        if not matches:
            return question
        text = question
        for m in matches:
            text = re.sub(rf"(?<![\w-]){re.escape(m.key)}(?![\w-])", " EXPERIMENTKEY ", text, flags=re.I)
        drop = {w for m in matches for w in m.naming}
        tokens = re.findall(r"[\w'/-]+|[?!.,]", text)
        out: list[str] = []
        run = False
        for _i, token in enumerate(tokens):
            named = token == "EXPERIMENTKEY" or bool(_split(token)) and all(w in drop for w in _split(token))
            if named:
                run = True
                continue
            if run:
                if token.lower() not in _EXPERIMENT_NOUNS:
                    out.append("experiment")
                run = False
            out.append(token)
        if run:
            out.append("experiment")
        return re.sub(r"\s+([?!.,])", r"\1", " ".join(out)).strip()

    @staticmethod
    def _variant(item: _Indexed, question: str) -> str | None:
        """The variant the question names best: most of its words in the question (stop words count
        here: "one step" names one_step, not two_step)."""
        asked = set(words(question))
        best, best_share = None, 0.0
        for key, variant_words in item.variant_words.items():
            hits = sum(1 for v in variant_words if any(similar(w, v) for w in asked))
            share = hits / max(len(variant_words), 1)
            if hits and share > best_share:
                best, best_share = key, share
        return best


def metrics_named(question: str, known: set[str]) -> list[str]:
    """Metric names the question mentions ('latency' → latency_ms, 'conversion rate' → conversion)."""
    asked = words(question)
    aliases = {"resolution": "resolved", "resolve": "resolved", "resolves": "resolved", "tickets": "resolved",
               "latency": "latency_ms", "slower": "latency_ms", "faster": "latency_ms", "speed": "latency_ms",
               "tokens": "output_tokens", "converting": "conversion", "converts": "conversion",
               "sales": "revenue", "money": "revenue", "aov": "revenue", "activation": "conversion"}
    found: list[str] = []
    for name in sorted(known, key=len, reverse=True):
        parts = [p for p in words(name) if p not in ("ms", "count", "rate")] or words(name)
        if all(any(similar(p, w) for w in asked) for p in parts[:1]) and name not in found:
            found.append(name)
    for word in asked:
        target = aliases.get(word)
        if target in known and target not in found:
            found.append(target)
    return found
