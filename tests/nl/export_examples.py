"""Write mcp_router/gateway/nl/examples.yaml from the train split of tests/nl/corpus.yaml.

Run after editing the corpus: `.venv/bin/python tests/nl/export_examples.py`. The test split never
reaches the classifier (tests/nl/test_nl_corpus.py checks both files agree).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).parent
TARGET = HERE.parents[1] / "mcp_router" / "gateway" / "nl" / "examples.yaml"
HEADER = """\
# The intent classifier's labelled examples: the train split of tests/nl/corpus.yaml, masked (the
# words naming a demo experiment become "experiment", as route_query masks the live ones), written
# by tests/nl/export_examples.py (edit the corpus, then run it). Intents are defined in intents.py.
"""


def demo_index():
    from nl_env import CORPUS_EXPERIMENTS  # the five experiments the corpus is labelled against

    from mcp_router.apps.demo import portfolio
    from mcp_router.gateway.nl.experiments import ExperimentIndex

    return ExperimentIndex([dict(e.definition) for e in portfolio(0.05) if e.key in CORPUS_EXPERIMENTS])


def train_split() -> dict[str, list[str]]:
    corpus = yaml.safe_load((HERE / "corpus.yaml").read_text(encoding="utf-8"))["questions"]
    index = demo_index()
    intents: dict[str, list[str]] = {}
    for item in corpus:
        if item["split"] == "train":
            masked = index.mask(item["q"])
            if masked not in intents.get(item["intent"], []):
                intents.setdefault(item["intent"], []).append(masked)
    return intents


def fitted_temperature(intents: dict[str, list[str]]) -> float:
    """The classifier's temperature on these examples (5-fold out-of-fold log loss; needs the model)."""
    from mcp_router.gateway.nl.classifier import IntentClassifier

    classifier = IntentClassifier(tuple((q, intent) for intent, qs in intents.items() for q in qs))
    classifier.fit()
    return round(classifier.temperature, 4)


def render() -> str:
    intents = train_split()
    return HEADER + yaml.safe_dump({"temperature": fitted_temperature(intents), "intents": intents},
                                   sort_keys=False, allow_unicode=True, width=120)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET} ({sum(len(v) for v in train_split().values())} examples)")
