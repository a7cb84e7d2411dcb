"""route_query: a natural-language request → the tool calls that answer it, offline.

The understanding lives in `mcp_router/gateway/nl/`: intent by meaning (nearest labelled examples
with the shipped MiniLM model, calibrated confidence), entities resolved against the live data the
router reaches (experiments by key, name, description or variant; metrics; segments; users;
numbers; periods anchored to the stored events), arguments validated against each tool's input
schema. `QueryRouter` binds it to one router: its catalogue and its backends.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from mcp_router.gateway.nl.lookup import RouterLookup
from mcp_router.gateway.nl.planner import PlannedCall, Planner, RoutePlan

__all__ = ["PlannedCall", "QueryRouter", "RoutePlan"]


class QueryRouter:
    def __init__(self, router: Any, planner: Planner | None = None) -> None:
        self.router = router
        self.planner = planner or Planner()
        self.lookup = RouterLookup(router)

    async def plan(self, query: str, today: date | None = None) -> RoutePlan:
        catalogue = self.router.catalogue
        server_of = {name: route.backend.name for name, route in catalogue.routes.items()}
        return await self.planner.plan(query, dict(catalogue.tools), server_of, self.lookup, today)
