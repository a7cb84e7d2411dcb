"""The per-user rollup behind `get_variant_statistics`: a million users read instead of ten million events.

Sufficient statistics are sums over users of per-user values, and a user's value
changes only when one of their events does. So `experiment_user_rollup` keeps
one row per (experiment, user) — variant, per-metric sums over the experiment's
window, pre-period sums for CUPED — and a statistics call only re-aggregates
that table. Rows are always recomputed from `events FINAL`, never
incremented, so replays and re-sent events stay counted once, exactly as in the
raw query.

A rebuild writes every user at one version (the base); a refresh writes the
changed users at newer versions. Reads take the base rows of untouched users
plus each touched user's newest row (`queries.rollup_rows_sql`) — no FINAL, so
a read costs one scan of the experiment's rows whatever the merge state.

Which users to recompute comes from the store's `ChangeLog` (chDB: every writer
is in this process): the service appends each batch's user ids after the insert
returns. A refresh takes the log position first, then reads the events, so
nothing inserted before that position can be missed; users inserted later are
recomputed by the next refresh.

- first use in a process, a log that was trimmed, or more changed users (plus
  rows refreshed since the base) than a tenth of the experiment's users:
  rebuild the experiment (one pass over its events);
- otherwise: recompute the changed users only;
- if the experiment's first exposure moved (an earlier exposure arrived), every
  user's window moved with it; if its events carry a metric the rollup does not
  have, every user's pre-period needs it: rebuild.

The rollup serves the default window (first exposure to the latest event) with
the default CUPED lookback and no segment filter; other windows, lookbacks and
segments, and ClickHouse servers (written by other processes, so no change
log), read the events directly.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anyio
import pyarrow as pa

from schemas.errors import BackendUnavailable, NotFound

from . import queries
from .queries import epoch_ms as _ms
from .store import ClickHouseStore, StoreError

log = logging.getLogger(__name__)

LOOKBACK_DAYS = 14  # the CUPED lookback the rollup serves (the tools' default)
# Recomputing listed users costs a scan of every event's user_id (~0.3 s per 10M events) plus their
# events; a rebuild costs a pass over all events (~3.5 s per 10M). Past ~10% of the users, rebuild.
REBUILD_SHARE = 0.1


@dataclass
class RollupWindow:
    """The state of one experiment's rollup: the window it covers and the log position it reflects."""

    start: datetime
    end: datetime  # exclusive: just after the latest event
    users: int
    position: int
    metrics: tuple[str, ...]
    base: int  # version of the last rebuild's rows
    refreshed_rows: int = 0  # rows written by refreshes since (a read pays for them: rebuild when many)


class UserRollup:
    """Keeps `experiment_user_rollup` current for the experiments a service is asked about."""

    def __init__(self, store: ClickHouseStore, lookback_days: int = LOOKBACK_DAYS) -> None:
        if store.change_log is None:
            raise ValueError("the user rollup needs a store with a change log (chDB)")
        self.store = store
        self.log = store.change_log
        self.lookback_days = lookback_days
        self._windows: dict[str, RollupWindow] = {}
        self._locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self.rebuilds = 0  # for tests and figures
        self.refreshed_users = 0

    @property
    def db(self) -> str:
        return self.store.database

    def serves(self, *, custom_window: bool, segment: bool, cuped: bool, lookback_days: int) -> bool:
        return not custom_window and not segment and (not cuped or lookback_days == self.lookback_days)

    async def ensure(self, experiment_id: str) -> RollupWindow:
        """Bring the experiment's rows up to date with every insert so far; return its window."""
        async with self._locks[experiment_id]:
            position = self.log.position  # before reading: later inserts are the next refresh's
            window = self._windows.get(experiment_id)
            if window is None:
                window = await self._rebuild(experiment_id, position)
            elif position != window.position:
                changed = self.log.since(window.position)
                limit = max(1000, window.users * REBUILD_SHARE)
                if changed is None or len(changed) + window.refreshed_rows > limit:
                    window = await self._rebuild(experiment_id, position)
                elif len(changed):
                    window = await self._refresh(experiment_id, window, changed, position)
                else:
                    window.position = position
            self._windows[experiment_id] = window
            return window

    async def _rebuild(self, experiment_id: str, position: int) -> RollupWindow:
        started = time.perf_counter()
        table = await self._query(queries.exposure_bounds_sql(self.db), {"exp": experiment_id})
        row = table.to_pylist()[0]
        if not row["n"]:
            raise NotFound(f"no exposure events for experiment {experiment_id!r} in {self.db}.events")
        start, metrics, base = row["first"], await self._metrics(experiment_id), time.time_ns()
        await self._execute(queries.rollup_build_sql(self.db, len(metrics), only_listed_users=False),
                            self._params(experiment_id, start, metrics, base), None)
        window = await self._window(experiment_id, position, metrics, base)
        self.rebuilds += 1
        log.info("rollup of %s rebuilt: %d users in %.0f ms", experiment_id, window.users,
                 (time.perf_counter() - started) * 1000)
        return window

    async def _refresh(self, experiment_id: str, window: RollupWindow, users: pa.Array, position: int) -> RollupWindow:
        started = time.perf_counter()
        if await self._metrics(experiment_id) != window.metrics:
            log.info("events of %s carry new metrics: rebuilding its rollup", experiment_id)
            return await self._rebuild(experiment_id, position)
        await self._execute(queries.rollup_build_sql(self.db, len(window.metrics), only_listed_users=True),
                            self._params(experiment_id, window.start, window.metrics, time.time_ns()),
                            pa.table({"user_id": users}))
        refreshed = await self._window(experiment_id, position, window.metrics, window.base)
        self.refreshed_users += len(users)
        if refreshed.start != window.start:
            # An earlier exposure arrived (or the earliest was replaced): every user's window moved.
            log.info("first exposure of %s moved from %s to %s: rebuilding", experiment_id, window.start,
                     refreshed.start)
            return await self._rebuild(experiment_id, position)
        log.debug("rollup of %s: %d changed users recomputed in %.0f ms", experiment_id, len(users),
                  (time.perf_counter() - started) * 1000)
        return refreshed

    async def _metrics(self, experiment_id: str) -> tuple[str, ...]:
        table = await self._query(queries.experiment_metrics_sql(self.db), {"exp": experiment_id})
        return tuple(table.column("metric").to_pylist())

    async def _window(self, experiment_id: str, position: int, metrics: tuple[str, ...], base: int) -> RollupWindow:
        params = {"exp": experiment_id, "base": base}
        row = (await self._query(queries.rollup_bounds_sql(self.db), params)).to_pylist()[0]
        if not row["users"]:
            raise NotFound(f"no exposure events for experiment {experiment_id!r} in {self.db}.events")
        return RollupWindow(start=row["first"], end=row["last"] + timedelta(milliseconds=1), users=row["users"],
                            position=position, metrics=metrics, base=base, refreshed_rows=row["refreshed_rows"])

    def _params(self, experiment_id: str, start: datetime, metrics: tuple[str, ...], version: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "exp": experiment_id, "start_ms": _ms(start), "pre_ms": _ms(start - timedelta(days=self.lookback_days)),
            "lookback": self.lookback_days, "version": version}
        params.update({f"m{i}": name for i, name in enumerate(metrics)})
        return params

    async def _query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        try:
            return await self.store.query(sql, params)
        except StoreError as exc:
            raise BackendUnavailable(f"user rollup query failed: {exc}") from exc

    async def _execute(self, sql: str, params: dict[str, Any], source: pa.Table | None) -> None:
        try:
            if source is None:
                await self.store.execute(sql, params)
            else:
                await self.store.execute_with_source(sql, params, source)  # type: ignore[attr-defined]
        except StoreError as exc:
            raise BackendUnavailable(f"user rollup refresh failed: {exc}") from exc
