"""Intent by meaning: a small classifier trained on labelled examples, with a calibrated confidence.

Features: the question embedded with the shipped MiniLM model (all-MiniLM-L6-v2, 384 dimensions,
weighted ×2) beside its TF-IDF word uni- and bigrams and character 2-5-grams (typos keep most); the questions are masked first (the words
naming an experiment become "experiment", see `ExperimentIndex.mask`), so the classifier learns
what is asked, not about which experiment. Model: multinomial logistic regression (scikit-learn).

Confidence: the regression's probabilities, temperature-scaled: the temperature minimises the log
loss of 5-fold out-of-fold predictions on the examples (fitted when examples.yaml is written), so a 0.8 means right about 8 times in 10 on
questions like the examples. The planner declines below `MIN_CONFIDENCE`, when no example is
closer than `MIN_SIMILARITY` (cosine) — the question is about something else — or when the answer
is `decline` (questions labelled out of scope).

Without the embedding model (a build without it) only the word features are used, and the
classification says so in `method`.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

if TYPE_CHECKING:  # scikit-learn loads on the first question, not when a server starts
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

C = 10.0
EMBEDDING_WEIGHT = 2.0
MIN_CONFIDENCE = 0.30
MIN_SIMILARITY = 0.35
FOLDS = 5
_TEMPERATURES = tuple(0.3 + 0.05 * i for i in range(55))


@cache
def _examples_file() -> dict[str, Any]:
    text = resources.files("mcp_router.gateway.nl").joinpath("examples.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_examples() -> tuple[tuple[str, str], ...]:
    """(question, intent) pairs of examples.yaml: the train split of tests/nl/corpus.yaml, masked."""
    data = _examples_file()
    return tuple((question, intent) for intent, questions in data["intents"].items() for question in questions)


def shipped_temperature() -> float | None:
    """The temperature fitted when examples.yaml was written (tests/nl/export_examples.py): fitting it
    takes five extra regressions (≈5 s), so a router fits only the one it uses."""
    value = _examples_file().get("temperature")
    return float(value) if value is not None else None


@dataclass(frozen=True)
class Classification:
    intent: str
    confidence: float  # calibrated probability of `intent`, 0..1
    similarity: float  # cosine similarity to the nearest example (word overlap without the model)
    nearest: str  # that example
    ranked: tuple[tuple[str, float], ...]  # (intent, probability), best first
    method: str  # "embedding" or "keywords"


def _embed(texts: list[str]) -> np.ndarray:
    from mcp_servers.chroma.embeddings import embed_texts

    return np.asarray(embed_texts(texts), dtype=np.float64)


@cache
def shared_classifier() -> IntentClassifier:
    """One classifier per process, fitted on the first question (every router of the process shares it)."""
    return IntentClassifier()


class IntentClassifier:
    def __init__(self, examples: tuple[tuple[str, str], ...] | None = None, temperature: float | None = None) -> None:
        shipped = examples is None
        self.examples = examples if examples is not None else load_examples()
        self._given_temperature = temperature if temperature is not None else (
            shipped_temperature() if shipped else None)
        self.questions = [q for q, _ in self.examples]
        self.labels = np.array([intent for _, intent in self.examples])
        self.method = "embedding"
        self.temperature = 1.0
        self._vectors: np.ndarray | None = None
        self._words: tuple[TfidfVectorizer, TfidfVectorizer] | None = None
        self._model: LogisticRegression | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ fitting

    def fit(self) -> IntentClassifier:
        """Embed the examples, fit the regression and its temperature (≈1-2 s on CPU; the model loads
        once per process)."""
        with self._lock:
            if self._model is None:
                self._fit()
        return self

    def _fit(self) -> None:
        try:
            self._vectors = _embed(self.questions)
        except Exception as exc:  # noqa: BLE001 - no model in this build: the word features still classify
            log.warning("route_query falls back to word features: the embedding model is unavailable (%s)", exc)
            self._vectors, self.method = None, "keywords"
        self.temperature = self._given_temperature or self.fit_temperature()
        self._words, self._model = self._train(np.arange(len(self.questions)))

    def _features(self, words: tuple[TfidfVectorizer, TfidfVectorizer], texts: list[str], vectors: np.ndarray | None) -> csr_matrix:
        from scipy.sparse import csr_matrix, hstack

        word_features, char_features = words
        parts: list[Any] = [word_features.transform(texts), char_features.transform(texts)]
        if vectors is not None:
            parts.append(csr_matrix(vectors * EMBEDDING_WEIGHT))
        return hstack(parts).tocsr()

    def _train(self, rows: np.ndarray) -> tuple[tuple[TfidfVectorizer, TfidfVectorizer], LogisticRegression]:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        texts = [self.questions[i] for i in rows]
        words = (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"[a-z0-9]+").fit(texts),
                 TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True).fit(texts))
        vectors = self._vectors[rows] if self._vectors is not None else None
        model = LogisticRegression(C=C, max_iter=5000).fit(self._features(words, texts, vectors), self.labels[rows])
        return words, model

    def fit_temperature(self) -> float:
        """The temperature minimising the log loss of out-of-fold predictions (k-fold on the examples)."""
        from sklearn.model_selection import StratifiedKFold

        folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)
        logits, truth = [], []
        counts = {label: int((self.labels == label).sum()) for label in set(self.labels)}
        usable = np.array([counts[label] >= FOLDS for label in self.labels])
        rows = np.flatnonzero(usable)
        for train, held in folds.split(rows, self.labels[rows]):
            words, model = self._train(rows[train])
            held_rows = rows[held]
            vectors = self._vectors[held_rows] if self._vectors is not None else None
            scores = model.decision_function(self._features(words, [self.questions[i] for i in held_rows], vectors))
            classes = list(model.classes_)
            for row, i in zip(scores, held_rows, strict=True):
                if self.labels[i] in classes:
                    logits.append(row)
                    truth.append(classes.index(self.labels[i]))
        if not logits:
            return 1.0
        return min(_TEMPERATURES, key=lambda t: _log_loss(logits, truth, t))

    # ------------------------------------------------------------ classifying

    def classify_many(self, questions: list[str]) -> list[Classification]:
        self.fit()
        assert self._model is not None and self._words is not None
        vectors = _embed(questions) if self._vectors is not None else None
        scores = self._model.decision_function(self._features(self._words, questions, vectors))
        if self._vectors is not None and vectors is not None:
            similarities = vectors @ self._vectors.T
        else:
            asked = self._words[0].transform(questions)
            similarities = (asked @ self._words[0].transform(self.questions).T).toarray()
        classes = list(self._model.classes_)
        out = []
        for row, sims in zip(np.atleast_2d(scores), similarities, strict=True):
            probabilities = _softmax(row, self.temperature)
            order = np.argsort(-probabilities)
            best = classes[int(order[0])]
            nearest = int(np.argmax(sims))
            out.append(Classification(
                intent=best, confidence=round(float(probabilities[order[0]]), 4),
                similarity=round(float(sims[nearest]), 4), nearest=self.questions[nearest],
                ranked=tuple((classes[int(i)], round(float(probabilities[int(i)]), 4)) for i in order[:5]),
                method=self.method))
        return out

    def classify(self, question: str) -> Classification:
        return self.classify_many([question])[0]


def _softmax(row: np.ndarray, temperature: float) -> np.ndarray:
    z = (row - row.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


def _log_loss(logits: list[np.ndarray], truth: list[int], temperature: float) -> float:
    total = 0.0
    for row, label in zip(logits, truth, strict=True):
        total -= math.log(max(float(_softmax(row, temperature)[label]), 1e-12))
    return total / len(truth)
