"""What every registry capability shares: the store, the query limits, experiment lookup, input parsing.

Each capability (lifecycle, user_assignment, results, audit_and_sql) is a class over this base;
`service.ExperimentService` composes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.errors import InvalidInput, NotFound

from .models import Experiment
from .store import PostgresStore

_M = TypeVar("_M", bound=BaseModel)


def parse_input(model: type[_M], data: _M | Mapping[str, Any]) -> _M:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid {model.__name__}: {problems}") from None


def as_json(value: Any) -> Any:
    """Model values as plain JSON for the change log."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


class RegistryBase:
    """The state the capabilities share; no tool of its own."""

    def __init__(self, store: PostgresStore, *, query_timeout_ms: int = 5000, max_query_rows: int = 1000,
                 max_result_bytes: int = 1_000_000, assignment_writes_behind: bool = False) -> None:
        self.store = store
        if assignment_writes_behind:  # get_variant records new users after answering (store.write_assignments_behind)
            store.write_assignments_behind()
        self.query_timeout_ms = query_timeout_ms
        self.max_query_rows = max_query_rows
        self.max_result_bytes = max_result_bytes
        self._definitions: dict[str, Any] = {}  # user_assignment's cache of experiment definitions
        # Bumped whenever cached definitions are dropped: a definition read before a drop is not cached.
        self._generation = 0
        store.on_experiment_change(self._forget_definitions)

    def _forget_definitions(self, experiment_id: int | None = None) -> None:
        """Drop the cached definition(s) of an experiment (None: of every experiment)."""
        self._generation += 1
        if experiment_id is None:
            self._definitions.clear()
            return
        for ref in [ref for ref, d in self._definitions.items() if d.id == experiment_id]:
            del self._definitions[ref]

    @asynccontextmanager
    async def _changing(self) -> AsyncIterator[Any]:
        """A transaction that may change experiment definitions: the cache is dropped once it ends, so
        the next call in this process sees the change (other processes learn it by notification)."""
        try:
            async with self.store.transaction() as conn:
                yield conn
        finally:
            self._forget_definitions()

    async def _experiment(self, ref: str | int, conn: Any = None) -> Experiment:
        experiment = await self.store.fetch_experiment(ref, conn)
        if experiment is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        return experiment

    async def _locked(self, conn: Any, ref: str | int) -> Experiment:
        if await self.store.lock_experiment(conn, ref) is None:
            raise NotFound(f"no experiment with key or id {ref!r} (list_experiments shows what exists)")
        return await self._experiment(ref, conn)
