"""The experiment registry's logic: lifecycle rules, assignment, results, analysis, audit.

Plain async methods over the store; no MCP types. Every refusal is one of
schemas.errors (InvalidInput, NotFound, Conflict, QueryRefused) with a
message that says what to do instead. One capability per module, each a class
over `base.RegistryBase` (the store, limits, experiment lookup):

    lifecycle.py        get/list experiments, create, update, start, stop, archive, set_variant_weights
    user_assignment.py  get_variant, predict_user_assignment, assign_many, record_exposures
    results.py          record_result, analyze_experiment_data, get_experiment_summary
    audit_and_sql.py    record_decision, list_decisions, postgres_query, describe_schema
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import asyncpg

from schemas.errors import InvalidInput

from .audit_and_sql import AuditAndSql
from .lifecycle import Lifecycle
from .results import Results
from .store import experiment_from_row
from .user_assignment import UserAssignment, assignment_spec


def _refused_by_postgres(exc: asyncpg.DataError) -> InvalidInput:
    """A value PostgreSQL cannot store (SQLSTATE class 22, data exception) -> the caller's error, named."""
    text = str(exc)
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError) or "0x00" in text:
        return InvalidInput("text cannot contain NUL characters (\\u0000): PostgreSQL text and JSON refuse them")
    if "64-bit range" in text:
        return InvalidInput("integers inside JSON values (config, metadata, targeting) must fit in 64 bits")
    return InvalidInput(f"value refused by PostgreSQL: {text.splitlines()[0] if text else type(exc).__name__}")


def _data_errors_are_invalid_input(cls: type) -> type:
    """Every public method: a value PostgreSQL refuses is InvalidInput (422), not a server error.

    Inputs reach SQL from many places (refs, user ids, names, free-form JSON), and what the
    database cannot store is the database's to say; this turns its verdict into a clear error.
    """
    for name in dir(cls):
        method = getattr(cls, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(method):
            continue

        @functools.wraps(method)
        async def guarded(self: Any, *args: Any, __method: Any = method, **kwargs: Any) -> Any:
            try:
                return await __method(self, *args, **kwargs)
            except asyncpg.DataError as exc:
                raise _refused_by_postgres(exc) from exc

        setattr(cls, name, guarded)
    return cls


@_data_errors_are_invalid_input
class ExperimentService(Lifecycle, UserAssignment, Results, AuditAndSql):
    """The PostgreSQL server's capabilities as plain async methods.

    ExperimentService(store, *, query_timeout_ms=5000, max_query_rows=1000, max_result_bytes=1_000_000,
    assignment_writes_behind=False): with it, get_variant records new users after answering (see
    PostgresStore.write_assignments_behind). `open_service` turns it on by default
    (settings.assignment_writes = "behind").
    """


__all__ = ["ExperimentService", "assignment_spec", "experiment_from_row"]
