"""Semantic memory of experiments, user journeys and optimization patterns.

Plain async methods over a `VectorStore`; no MCP types. Records become text and
metadata through the deterministic builders in documents.py, the store embeds
and indexes them, searches return the nearest documents with
similarity = 1 - cosine distance. Blocking store calls run in worker threads.

Writes are upserts keyed by the record's id (experiment key, journey id,
pattern id): storing the same record twice changes nothing, and a document
whose text and metadata are unchanged is not re-embedded.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from chromadb.errors import ChromaError, InvalidArgumentError
from pydantic import BaseModel, ValidationError

from schemas.errors import BackendUnavailable, InvalidInput, ServiceError

from .documents import (
    CONTENT_HASH_KEY,
    BuiltDocument,
    build_experiment_document,
    build_journey_document,
    build_pattern_document,
)
from .filters import validate_where
from .models import (
    CollectionInfo,
    CollectionStats,
    ExperimentAnalysis,
    ExperimentRecord,
    JourneyRecord,
    PatternRecord,
    SearchHit,
    SearchResult,
    StoredDocument,
    SyncFailure,
    SyncReport,
)
from .store import VectorStore

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_RESULTS = 100
MAX_QUERY_CHARS = 10_000  # the model reads only the first 256 word pieces anyway
SYNC_BATCH_SIZE = 64

RegistryRecords = Iterable[Mapping[str, Any] | BaseModel] | AsyncIterable[Mapping[str, Any] | BaseModel]
Registry = Callable[[], RegistryRecords | Awaitable[Iterable[Mapping[str, Any] | BaseModel]]]


class ChromaService:
    """Store and search experiments, user journeys and optimization patterns by meaning."""

    def __init__(self, store: VectorStore, *, registry: Registry | None = None) -> None:
        self.store = store
        # Where sync_from_registry pulls experiments when none are passed (the router wires
        # the PostgreSQL service's listing here); None: callers must pass records.
        self.registry = registry

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        except ServiceError:
            raise
        except (InvalidArgumentError, ValueError) as exc:
            raise InvalidInput(f"Chroma rejected the request: {exc}") from exc
        except (ChromaError, ConnectionError, OSError) as exc:
            raise BackendUnavailable(f"Chroma is unavailable: {exc}") from exc
        except Exception as exc:  # httpx errors from an HttpClient, among others
            if type(exc).__module__.startswith(("httpx", "httpcore")):
                raise BackendUnavailable(f"Chroma server unreachable: {exc}") from exc
            raise

    # ------------------------------------------------------------ writes

    async def _upsert(self, collection: str, built: list[BuiltDocument]) -> list[str]:
        """Upsert documents; returns 'created' / 'updated' / 'unchanged' per document."""
        if not built:
            return []
        # Last one wins when a batch repeats an id, as a sequence of single upserts would.
        unique = list({doc.id: doc for doc in built}.values())
        existing = await self._run(self.store.get, collection, [doc.id for doc in unique])
        status: dict[str, str] = {}
        changed: list[BuiltDocument] = []
        for doc in unique:
            old = existing.get(doc.id)
            if old is None:
                status[doc.id] = "created"
                changed.append(doc)
            elif old[1].get(CONTENT_HASH_KEY) == doc.metadata[CONTENT_HASH_KEY] and old[0] == doc.document:
                status[doc.id] = "unchanged"
            else:
                status[doc.id] = "updated"
                changed.append(doc)
        if changed:
            await self._run(self.store.upsert, collection, [d.id for d in changed], [d.document for d in changed],
                            [d.metadata for d in changed])
        return [status[doc.id] for doc in built]

    async def _store_one(self, collection: str, built: BuiltDocument) -> StoredDocument:
        (status,) = await self._upsert(collection, [built])
        return StoredDocument(collection=collection, id=built.id, status=status, document=built.document,
                              metadata=_public(built.metadata))

    async def store_experiment_context(self, experiment: ExperimentRecord | Mapping[str, Any],
                                       analysis: ExperimentAnalysis | Mapping[str, Any] | None = None) -> StoredDocument:
        """Upsert an experiment (and its analysis) as a searchable document keyed by the experiment key."""
        record = _validate(ExperimentRecord, experiment, "experiment")
        result = None if analysis is None else _validate(ExperimentAnalysis, analysis, "analysis")
        return await self._store_one("experiments", build_experiment_document(record, result))

    async def store_user_journey(self, journey: JourneyRecord | Mapping[str, Any]) -> StoredDocument:
        """Upsert a user journey; its id defaults to a hash of its content."""
        return await self._store_one("user_journeys", build_journey_document(_validate(JourneyRecord, journey, "journey")))

    async def store_optimization_pattern(self, pattern: PatternRecord | Mapping[str, Any]) -> StoredDocument:
        """Upsert an optimization pattern; its id defaults to a hash of its type and text."""
        return await self._store_one("optimization_patterns",
                                     build_pattern_document(_validate(PatternRecord, pattern, "pattern")))

    async def sync_from_registry(self, records: RegistryRecords | None = None, *, batch_size: int = SYNC_BATCH_SIZE,
                                 progress: bool = False) -> SyncReport:
        """Backfill the experiments collection from registry records (the seeds' migrate_to_chromadb).

        `records`: an iterable or async iterable of experiment dicts / models (e.g. the
        PostgreSQL service's experiments, `model_dump()`ed or not); when None, the
        `registry` callable given at construction is called for them. Invalid
        records are reported in `failed` and skipped; the others are upserted in
        batches (unchanged ones are not re-embedded). `progress=True` draws a
        progress bar on stderr (for the CLI; never on the MCP stdio channel).
        """
        if not 1 <= batch_size <= 1000:
            raise InvalidInput("batch_size must be between 1 and 1000")
        if records is None:
            if self.registry is None:
                raise InvalidInput(
                    "no experiments given and no registry connected: pass the experiment records to sync"
                )
            records = self.registry()
            if inspect.isawaitable(records):
                records = await records
        started = time.perf_counter()
        total = len(records) if hasattr(records, "__len__") else None  # type: ignore[arg-type]
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        failed: list[SyncFailure] = []
        received = 0
        batch: list[BuiltDocument] = []

        with _ProgressBar(progress, total) as advance:

            async def flush() -> None:
                if batch:
                    for status in await self._upsert("experiments", batch):
                        counts[status] += 1
                    advance(len(batch))
                    batch.clear()

            async for item in _aiter(records):
                received += 1
                try:
                    record = ExperimentRecord.model_validate(_as_mapping(item))
                    batch.append(build_experiment_document(record))
                except (ValidationError, TypeError, ValueError) as exc:
                    failed.append(SyncFailure(key=_key_of(item), reason=_short_reason(exc)))
                    advance(1)
                    continue
                if len(batch) >= batch_size:
                    await flush()
            await flush()

        report = SyncReport(received=received, failed=failed, seconds=round(time.perf_counter() - started, 3), **counts)
        log.info("sync_from_registry: %s", report.model_dump(exclude={"failed"}) | {"failed": len(failed)})
        return report

    # ------------------------------------------------------------ searches

    async def _search(self, collection: str, query: str, where: Any, n_results: int) -> SearchResult:
        text = query.strip() if isinstance(query, str) else ""
        if not text:
            raise InvalidInput("query must be non-empty text describing what to look for")
        if len(text) > MAX_QUERY_CHARS:
            raise InvalidInput(f"query is {len(text)} characters; at most {MAX_QUERY_CHARS}")
        if isinstance(n_results, bool) or not isinstance(n_results, int) or not 1 <= n_results <= MAX_RESULTS:
            raise InvalidInput(f"n_results must be an integer from 1 to {MAX_RESULTS}, got {n_results!r}")
        chroma_where = validate_where(collection, where)
        hits = await self._run(self.store.query, collection, text, chroma_where, n_results)
        return SearchResult(
            collection=collection, query=text, where=chroma_where,
            hits=[SearchHit(id=h.id, similarity=round(1.0 - h.distance, 6), document=h.document,
                            metadata=_public(h.metadata)) for h in hits],
        )

    async def semantic_experiment_search(self, query: str, where: dict[str, Any] | None = None,
                                         n_results: int = 10) -> SearchResult:
        """Experiments nearest in meaning to `query`, optionally filtered on metadata."""
        return await self._search("experiments", query, where, n_results)

    async def find_similar_user_journeys(self, query: str | None = None, *, journey: JourneyRecord | Mapping[str, Any] | None = None,
                                         where: dict[str, Any] | None = None, n_results: int = 10) -> SearchResult:
        """Journeys nearest to a description, or to a journey (embedded the same way stored ones are)."""
        if (query is None) == (journey is None):
            raise InvalidInput("give either query (text) or journey (steps and context), not both and not neither")
        if journey is not None:
            query = build_journey_document(_validate(JourneyRecord, journey, "journey")).document
        return await self._search("user_journeys", query or "", where, n_results)

    async def search_optimization_patterns(self, query: str, where: dict[str, Any] | None = None,
                                           n_results: int = 10) -> SearchResult:
        """Optimization patterns nearest in meaning to `query`, optionally filtered."""
        return await self._search("optimization_patterns", query, where, n_results)

    # ------------------------------------------------------------ stats

    async def collection_stats(self) -> CollectionStats:
        infos = []
        for name in ("experiments", "user_journeys", "optimization_patterns"):
            infos.append(CollectionInfo(**await self._run(self.store.describe, name)))
        return CollectionStats(backend=self.store.backend, embedding_function=self.store.embedding_identity,
                               collections=infos)

    async def close(self) -> None:
        await self._run(self.store.close)


# ---------------------------------------------------------------- helpers

M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], value: Any, what: str) -> M:
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(_as_mapping(value))
    except (ValidationError, TypeError) as exc:
        raise InvalidInput(f"invalid {what}: {_short_reason(exc)}") from exc


def _as_mapping(item: Any) -> Any:
    if isinstance(item, BaseModel):
        return item.model_dump()
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(f"expected an object (dict), got {type(item).__name__}")


def _key_of(item: Any) -> str | None:
    data = item.model_dump() if isinstance(item, BaseModel) else item
    if isinstance(data, Mapping):
        for name in ("key", "experiment_key", "experiment_id"):
            if data.get(name) is not None:
                return str(data[name])
    return None


def _short_reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()[:5]
        )
    return str(exc)


def _public(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k != CONTENT_HASH_KEY}


async def _aiter(records: RegistryRecords) -> AsyncIterable[Any]:
    if isinstance(records, AsyncIterable):
        async for item in records:
            yield item
    else:
        for item in records:
            yield item


class _ProgressBar:
    """A rich progress bar on stderr when enabled; otherwise a no-op `advance`."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.total = total
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("syncing experiments"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self._progress.start()
        self._task = self._progress.add_task("sync", total=self.total)
        return lambda n: self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
