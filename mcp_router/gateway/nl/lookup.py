"""The live data `route_query` resolves a question against, read through the router's own tools.

Experiments come from the registry (list_experiments, then get_experiment for the definitions:
names, descriptions, variants, metrics), cached for `TTL_S` seconds or until the list changes.
Event dates and daily exposures come from ClickHouse (clickhouse_query over `events`). A backend
that is down answers "nothing known": the planner then says what it could not resolve.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import date
from typing import Any

log = logging.getLogger(__name__)

TTL_S = 30.0
MAX_EXPERIMENTS = 200
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class RouterLookup:
    def __init__(self, router: Any) -> None:
        self.router = router
        self._experiments: tuple[float, tuple[tuple[str, str], ...], list[dict[str, Any]]] | None = None

    async def _call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any] | None:
        if tool not in self.router.catalogue.tools:
            return None
        try:
            result = await self.router.call_tool(tool, arguments)
        except Exception as exc:  # noqa: BLE001 - a lookup that fails leaves the entity unresolved, said so
            log.warning("route_query lookup %s failed: %s", tool, exc)
            return None
        if result.is_error or not isinstance(result.structured_content, dict):
            return None
        return result.structured_content

    async def experiments(self) -> list[dict[str, Any]]:
        listed = await self._call("list_experiments", {"limit": MAX_EXPERIMENTS})
        if listed is None:
            return []
        items = [i for i in listed.get("items", []) if i.get("status") != "archived"]
        signature = tuple((i["key"], i.get("status", "")) for i in items)
        cached = self._experiments
        if cached is not None and cached[1] == signature and time.monotonic() - cached[0] < TTL_S:
            return cached[2]
        full = []
        for item in items:
            detail = await self._call("get_experiment", {"experiment": item["key"]})
            full.append(detail or item)
        self._experiments = (time.monotonic(), signature, full)
        return full

    async def event_range(self, keys: list[str]) -> tuple[date | None, date | None]:
        safe = [k for k in keys if _SAFE_KEY.match(k)]
        where = f" WHERE experiment_id IN ({', '.join(repr(k) for k in safe)})" if safe else ""
        data = await self._call("clickhouse_query", {
            "sql": f"SELECT toString(toDate(min(timestamp))), toString(toDate(max(timestamp))), count() FROM events{where}"})
        if not data or not data.get("rows") or not data["rows"][0][2]:
            return None, None
        first, last, _ = data["rows"][0]
        return date.fromisoformat(first), date.fromisoformat(last)

    async def exposures_per_day(self) -> float | None:
        data = await self._call("clickhouse_query", {"sql": (
            "SELECT count() / greatest(1, dateDiff('day', min(timestamp), max(timestamp)) + 1) FROM events "
            "WHERE event_type = 'exposure' AND timestamp >= (SELECT max(timestamp) FROM events) - INTERVAL 14 DAY")})
        if not data or not data.get("rows") or not data["rows"][0][0]:
            return None
        return float(data["rows"][0][0])
