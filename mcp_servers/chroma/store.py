"""The vector store behind the service: Chroma, embedded or a server.

`ChromaStore.open()` picks `chromadb.PersistentClient(<NEONBLUE_HOME>/chroma)`
by default and `chromadb.HttpClient` when CHROMA_URL is set, then makes sure
the three collections exist with cosine space, the tuned HNSW parameters and
the configured embedding function recorded in their configuration. A
collection recorded with another embedding function (or space) is refused with
a Conflict, never silently mixed.

All methods block (Chroma and the model are synchronous): the service calls
them through `anyio.to_thread.run_sync`.

A PersistentClient must have one owner process (its SQLite and HNSW files are
not process-safe), so the embedded store takes an exclusive `flock` on
`<dir>/neonblue.lock`; a second process gets BackendUnavailable naming the
holder instead of corrupting the index. Opens within one process share the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import chromadb
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Documents, EmbeddingFunction
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError, UniqueConstraintError

from schemas.errors import BackendUnavailable, Conflict

from .embeddings import embedding_identity, identity_of
from .filters import FIELDS

log = logging.getLogger(__name__)

COLLECTIONS: dict[str, str] = {
    "experiments": "Experiments with hypothesis, variants, metrics and results, for search by meaning.",
    "user_journeys": "User journeys (ordered steps, device, session length, outcome).",
    "optimization_patterns": "Optimizations tried and what they did (success, failure, neutral).",
}
assert set(COLLECTIONS) == set(FIELDS)

# Tuned with bench/bench_chroma.py. Chroma's defaults (max_neighbors=16,
# ef_construction=100, ef_search=100) give recall@10 ≈ 0.52 on 10k random unit
# vectors (the worst case); max_neighbors=32 with ef_search=400 gives ≈ 0.99 there
# and 1.0 on 100k embedding-like vectors, for a few ms per search. ef_construction
# above 100 bought < 0.01 recall for a ~1.8x slower build, so it stays at 100.
# ef_search can be changed on an existing collection (it takes effect when the
# collection is next opened); max_neighbors and ef_construction are fixed at creation.
DEFAULT_HNSW: dict[str, Any] = {"space": "cosine", "max_neighbors": 32, "ef_construction": 100, "ef_search": 400}

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Hit:
    id: str
    distance: float
    document: str
    metadata: dict[str, Any]


class VectorStore(Protocol):
    """What the service needs from a vector store."""

    backend: str
    embedding_identity: str

    def get(self, collection: str, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]: ...

    def upsert(self, collection: str, ids: list[str], documents: list[str],
               metadatas: list[dict[str, Any]]) -> None: ...

    def query(self, collection: str, text: str, where: dict[str, Any] | None, n_results: int) -> list[Hit]: ...

    def describe(self, collection: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- the process lock of an embedded store

_locks: dict[Path, tuple[int, int]] = {}  # path -> (fd, open count in this process)
_locks_guard = threading.Lock()


def _acquire_dir_lock(directory: Path) -> Path:
    lock_path = (directory / "neonblue.lock").resolve()
    with _locks_guard:
        if lock_path in _locks:
            fd, count = _locks[lock_path]
            _locks[lock_path] = (fd, count + 1)
            return lock_path
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BackendUnavailable(
                f"The Chroma data directory {directory} is in use by another process (pid {holder}). "
                "An embedded PersistentClient must have a single owner: attach to the running stack "
                "(`neonblue up`) or point CHROMA_URL at a Chroma server."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _locks[lock_path] = (fd, 1)
        return lock_path


def _release_dir_lock(lock_path: Path) -> None:
    with _locks_guard:
        fd, count = _locks.get(lock_path, (None, 0))
        if fd is None:
            return
        if count > 1:
            _locks[lock_path] = (fd, count - 1)
            return
        del _locks[lock_path]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- Chroma


def _client_settings() -> ChromaSettings:
    return ChromaSettings(anonymized_telemetry=False)


def http_client(url: str) -> ClientAPI:
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BackendUnavailable(f"CHROMA_URL must look like http://host:8000, got {url!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 8000)
    try:
        return chromadb.HttpClient(host=parsed.hostname, port=port, ssl=parsed.scheme == "https",
                                   settings=_client_settings())
    except Exception as exc:  # chromadb checks the server on construction
        raise BackendUnavailable(f"Chroma server at {url} is unreachable: {exc}") from exc


class ChromaStore:
    """The three NeonBlue collections in one Chroma database."""

    def __init__(self, client: ClientAPI, backend: str, embedding_function: EmbeddingFunction[Documents],
                 hnsw: dict[str, Any], lock_path: Path | None = None) -> None:
        self.client = client
        self.backend = backend
        self.embedding_function = embedding_function
        self.embedding_identity = identity_of(embedding_function)
        self.hnsw = {**DEFAULT_HNSW, **hnsw, "space": "cosine"}
        self._lock_path = lock_path
        self._collections: dict[str, Collection] = {}
        self._closed = False

    @classmethod
    def open(cls, *, embedding_function: EmbeddingFunction[Documents], path: Path | str | None = None,
             url: str | None = None, hnsw: dict[str, Any] | None = None) -> ChromaStore:
        """Connect (server if `url`, else the directory `path`) and ensure the collections."""
        lock_path = None
        if url:
            client, backend = http_client(url), f"http:{url}"
        else:
            if path is None:
                raise ValueError("ChromaStore.open needs a path or a url")
            directory = Path(path)
            directory.mkdir(parents=True, exist_ok=True)
            lock_path = _acquire_dir_lock(directory)
            try:
                client = chromadb.PersistentClient(path=str(directory), settings=_client_settings())
            except Exception:
                _release_dir_lock(lock_path)
                raise
            backend = f"persistent:{directory}"
        store = cls(client, backend, embedding_function, hnsw or {}, lock_path)
        try:
            for name in COLLECTIONS:
                store._collections[name] = store._ensure_collection(name)
        except BaseException:
            store.close()
            raise
        return store

    def _ensure_collection(self, name: str) -> Collection:
        ef = self.embedding_function
        try:
            existing = self.client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            existing = None
        if existing is None:
            try:
                log.info("creating Chroma collection %s (%s, %s)", name, self.embedding_identity, self.hnsw)
                return self.client.create_collection(
                    name,
                    configuration={"hnsw": dict(self.hnsw), "embedding_function": ef},
                    metadata={"description": COLLECTIONS[name], "embedding_function": self.embedding_identity,
                              "neonblue_schema": SCHEMA_VERSION},
                    embedding_function=ef,
                )
            except UniqueConstraintError:  # created meanwhile by another client of the same server
                existing = self.client.get_collection(name, embedding_function=None)
        self._check_compatible(existing)
        return self.client.get_collection(name, embedding_function=ef)

    def _check_compatible(self, collection: Collection) -> None:
        config = collection.configuration_json or {}
        recorded = recorded_identity(collection)
        if recorded is None:
            raise Conflict(
                f"Chroma collection {collection.name!r} has no recorded embedding function, so its vectors "
                f"cannot be trusted to match {self.embedding_identity}. Store NeonBlue data in a fresh "
                "Chroma directory or server, or delete that collection."
            )
        if recorded != self.embedding_identity:
            raise Conflict(
                f"Chroma collection {collection.name!r} holds vectors from {recorded}, but this process embeds "
                f"with {self.embedding_identity}. Mixing two models in one index makes similarities meaningless: "
                "set EMBEDDING_PROVIDER back to the one the collection was built with, or re-embed into a fresh "
                "Chroma directory (NEONBLUE_HOME) or server (CHROMA_URL)."
            )
        space = (config.get("hnsw") or {}).get("space") or (collection.metadata or {}).get("hnsw:space")
        if space not in (None, "cosine"):
            raise Conflict(f"Chroma collection {collection.name!r} uses {space} distance; NeonBlue needs cosine.")

    def collection(self, name: str) -> Collection:
        """The Chroma collection `name` (for benchmarks and maintenance; the service uses the methods below)."""
        if self._closed:
            raise BackendUnavailable("the Chroma store is closed")
        return self._collections[name]

    # ------------------------------------------------------------ data

    def get(self, collection: str, ids: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        if not ids:
            return {}
        got = self.collection(collection).get(ids=ids, include=["documents", "metadatas"])
        return {
            id_: (doc or "", dict(meta or {}))
            for id_, doc, meta in zip(got["ids"], got["documents"] or [], got["metadatas"] or [], strict=True)
        }

    def upsert(self, collection: str, ids: list[str], documents: list[str], metadatas: list[dict[str, Any]]) -> None:
        if ids:
            # Chroma embeds the documents with the collection's embedding function, in one batch.
            self.collection(collection).upsert(ids=ids, documents=documents, metadatas=metadatas)

    def query(self, collection: str, text: str, where: dict[str, Any] | None, n_results: int) -> list[Hit]:
        col = self.collection(collection)
        result = col.query(query_texts=[text], n_results=n_results, where=where,
                           include=["documents", "metadatas", "distances"])
        ids = result["ids"][0] if result["ids"] else []
        distances = (result.get("distances") or [[]])[0]
        documents = (result.get("documents") or [[]])[0]
        metadatas = (result.get("metadatas") or [[]])[0]
        return [
            Hit(id_, float(dist), doc or "", dict(meta or {}))
            for id_, dist, doc, meta in zip(ids, distances, documents, metadatas, strict=True)
        ]

    def describe(self, collection: str) -> dict[str, Any]:
        col = self.collection(collection)
        hnsw = dict((col.configuration_json or {}).get("hnsw") or {})
        return {
            "name": collection,
            "count": col.count(),
            "embedding_function": recorded_identity(col) or "unknown",
            "space": hnsw.get("space"),
            "hnsw": hnsw,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._collections.clear()
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # pragma: no cover - best effort on shutdown
                log.warning("closing the Chroma client failed", exc_info=True)
        if self._lock_path is not None:
            _release_dir_lock(self._lock_path)


def recorded_identity(collection: Collection) -> str | None:
    """The '<function>:<model>' recorded in a collection's configuration (or our metadata), if any."""
    ef = (collection.configuration_json or {}).get("embedding_function") or {}
    if ef.get("type") == "known" and ef.get("name"):
        return embedding_identity(ef["name"], ef.get("config"))
    return (collection.metadata or {}).get("embedding_function")
