"""The front door on the labelled corpus: route_query plans scored on tool and arguments.

The test split (questions the classifier never saw) must score ≥ 95%; bench/bench_nl.py prints the
same figures with every miss.
"""

from __future__ import annotations

import yaml
from export_examples import TARGET, demo_index, fitted_temperature, train_split  # type: ignore[import-not-found]
from mcp_calls import call  # type: ignore[import-not-found]
from nl_env import CORPUS, demo_router  # type: ignore[import-not-found]

from mcp_router.gateway.nl.evaluation import load_corpus, score, summary
from mcp_router.gateway.nl.intents import INTENTS


def test_the_shipped_examples_are_the_corpus_train_split_and_never_a_test_question() -> None:
    shipped_file = yaml.safe_load(TARGET.read_text(encoding="utf-8"))
    assert shipped_file["intents"] == train_split(), "run tests/nl/export_examples.py after editing the corpus"
    # The shipped temperature is the one the examples give (the grid's step is 0.05).
    assert abs(shipped_file["temperature"] - fitted_temperature(train_split())) <= 0.051
    corpus = load_corpus(CORPUS)
    assert len(corpus) >= 150
    shipped = {q for questions in train_split().values() for q in questions}
    index = demo_index()
    tests = [item["q"] for item in corpus if item["split"] == "test"]
    assert tests and not shipped & ({*tests} | {index.mask(q) for q in tests})
    # Every intent has examples, and every labelled intent exists.
    assert set(yaml.safe_load(TARGET.read_text())["intents"]) == set(INTENTS)
    assert {i for item in corpus for i in item["intent"].split("+")} <= set(INTENTS)


async def test_the_test_split_scores_at_least_95_percent_on_tool_and_arguments(nl_settings, chroma_path) -> None:
    corpus = load_corpus(CORPUS)
    async with demo_router(nl_settings(), chroma_path) as client:
        scores = {split: [] for split in ("train", "test")}
        for item in corpus:
            plan = await call(client, "route_query", {"query": item["q"]})
            scores[item["split"]].append(score(item, plan))
    misses = [f"{s.question!r}: {s.why}" for s in scores["test"] if not s.ok]
    rate = sum(s.ok for s in scores["test"]) / len(scores["test"])
    assert rate >= 0.95, f"test split: {summary(scores['test'])}\n" + "\n".join(misses)
    train_rate = sum(s.ok for s in scores["train"]) / len(scores["train"])
    assert train_rate >= 0.95, "train split: " + summary(scores["train"]) + "\n" + "\n".join(
        f"{s.question!r}: {s.why}" for s in scores["train"] if not s.ok)
