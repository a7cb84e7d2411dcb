"""The decisions table (every recommendation and automated action, with its inputs) and read-only SQL
over the registry's schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.errors import InvalidInput

from .base import RegistryBase, as_json, parse_input
from .models import Decision, DecisionCreate, DecisionPage, QueryResult, SchemaDescription
from .sql_guard import check_read_only
from .store import SCHEMA


class AuditAndSql(RegistryBase):
    # ------------------------------------------------------------ decisions (audit trail)

    async def record_decision(self, decision: DecisionCreate | Mapping[str, Any]) -> Decision:
        decision = parse_input(DecisionCreate, decision)
        experiment_id = None
        if decision.experiment is not None:
            experiment_id = (await self._experiment(decision.experiment)).id
        return await self.store.insert_decision(experiment_id, decision.action, decision.reasoning,
                                                as_json(decision.inputs), decision.confidence, decision.actor,
                                                decision.applied)

    async def list_decisions(self, *, experiment: str | int | None = None, action: str | None = None,
                             actor: str | None = None, applied: bool | None = None, limit: int = 50,
                             offset: int = 0) -> DecisionPage:
        if not 1 <= limit <= 200:
            raise InvalidInput(f"limit must be between 1 and 200, got {limit}")
        if offset < 0:
            raise InvalidInput(f"offset must be >= 0, got {offset}")
        experiment_id = (await self._experiment(experiment)).id if experiment is not None else None
        items, total = await self.store.list_decisions(experiment_id=experiment_id, action=action, actor=actor,
                                                       applied=applied, limit=limit, offset=offset)
        next_offset = offset + len(items) if offset + len(items) < total else None
        return DecisionPage(items=items, total=total, limit=limit, offset=offset, next_offset=next_offset)

    # ------------------------------------------------------------ SQL

    async def postgres_query(self, sql: str, max_rows: int | None = None) -> QueryResult:
        """Run one read-only SELECT / EXPLAIN / SHOW; anything else is refused before it reaches the server."""
        guarded = check_read_only(sql)
        limit = self.max_query_rows if max_rows is None else max_rows
        if not 1 <= limit <= self.max_query_rows:
            raise InvalidInput(f"max_rows must be between 1 and {self.max_query_rows}, got {limit}")
        raw = await self.store.run_read_only(guarded, self.query_timeout_ms, limit, self.max_result_bytes)
        return QueryResult(**raw)

    async def describe_schema(self) -> SchemaDescription:
        tables = await self.store.describe_tables()
        return SchemaDescription(
            schema_name=SCHEMA, tables=tables,
            notes=(f"Tables live in schema {SCHEMA!r}, which postgres_query puts on the search_path, so "
                   "`SELECT key, status FROM experiments` works. Join variants, assignments and results on "
                   "experiment_id and variant_id; experiments.key is the public experiment id used in events. "
                   "Count assigned users in known_assignments (assignments plus streamed exposures kept "
                   "without a row)."),
        )
