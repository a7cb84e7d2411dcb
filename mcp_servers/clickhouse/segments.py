"""Per-segment and per-crossing sufficient statistics (issue 22): who responds differently, and which
concurrent experiments interact.

get_segment_statistics: per (dimension, segment value, variant) the n, Σx and Σx² of one metric over
the experiment's users, the segment being the user's first exposure's (the same per-user semantics as
get_variant_statistics, see `queries`). get_interaction_statistics: for every other experiment with
users exposed to both, per (this variant, other variant) the same sums of this experiment's metric.
The intelligence server turns them into segment effects, heterogeneity tests and 2×2 interaction
contrasts (`mcp_servers.stats.heterogeneity`, `.interactions`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import date
from typing import Any

from schemas.errors import BackendUnavailable, NotFound

from . import queries
from .models import InteractionCell, InteractionStatistics, SegmentCell, SegmentStatistics
from .queries import epoch_ms as _ms
from .store import StoreError


def _interaction_sql(db: str) -> str:
    """Per (other experiment, variant, other variant): n, s0 = Σx, q0 = Σx² of metric m0 over users of {exp}
    (first-exposure variant, unmixed) who also have an unmixed exposure in another experiment."""
    inner = queries.per_user_sql(db, 1, cuped=False)
    return f"""
    SELECT b.experiment_id AS other_experiment, a.assigned AS variant, b.assigned AS other_variant,
           count() AS n, sum(a.x0) AS s0, sum(a.x0 * a.x0) AS q0
    FROM ({inner}) AS a
    INNER JOIN (
        SELECT experiment_id, user_id, argMin(variant, timestamp) AS assigned,
               min(variant) != max(variant) AS mixed
        FROM {db}.events FINAL
        WHERE event_type = 'exposure' AND experiment_id != {{exp:String}} AND experiment_id != ''
        GROUP BY experiment_id, user_id
    ) AS b ON a.user_id = b.user_id
    WHERE NOT a.mixed AND NOT b.mixed
    GROUP BY other_experiment, variant, other_variant
    ORDER BY other_experiment, variant, other_variant
    {queries.PER_PARTITION_FINAL}"""


class SegmentStatisticsQueries:
    """Mixed into ClickHouseService (which provides store, db, _window)."""

    store: Any
    db: str

    async def _query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return (await self.store.query(sql, params)).to_pylist()
        except StoreError as exc:
            raise BackendUnavailable(f"segment statistics query failed: {exc}") from exc

    async def get_segment_statistics(self, experiment_id: str, metric: str, *, start_date: date | None = None,
                                     end_date: date | None = None, min_users: int = 2) -> SegmentStatistics:
        """n, Σx, Σx² of `metric` per (dimension, segment, variant); cells below `min_users` are left out."""
        started = time.perf_counter()
        start, end = await self._window(experiment_id, start_date, end_date)  # type: ignore[attr-defined]
        params = {"exp": experiment_id, "start_ms": _ms(start), "end_ms": _ms(end), "m0": metric}
        rows = await self._query(queries.segment_breakdown_sql(self.db, 1), params)
        cells, small = [], 0
        totals: dict[str, int] = defaultdict(int)
        for row in rows:
            if row["mixed"] or row["segment"] == "" and row["dimension"] != "all":
                continue
            if row["dimension"] == "all":
                totals[row["variant"]] += int(row["n"])
                continue
            if row["n"] < min_users:
                small += 1
                continue
            cells.append(SegmentCell(dimension=row["dimension"], segment=row["segment"], variant=row["variant"],
                                     n=int(row["n"]), sum=float(row["s0"]), sum_squares=float(row["q0"])))
        if not totals:
            raise NotFound(f"no exposed users for experiment {experiment_id!r} in the window")
        cells.sort(key=lambda c: (c.dimension, c.segment, c.variant))
        return SegmentStatistics(experiment_key=experiment_id, metric=metric, window_start=start, window_end=end,
                                 users=dict(sorted(totals.items())), cells=cells, cells_below_min_users=small,
                                 elapsed_ms=(time.perf_counter() - started) * 1000)

    async def get_interaction_statistics(self, experiment_id: str, metric: str, *, min_users: int = 2,
                                         limit: int = 20) -> InteractionStatistics:
        """n, Σx, Σx² of `metric` per (other experiment, variant, other variant) over shared users."""
        started = time.perf_counter()
        start, end = await self._window(experiment_id, None, None)  # type: ignore[attr-defined]
        params = {"exp": experiment_id, "start_ms": _ms(start), "end_ms": _ms(end), "m0": metric}
        rows = await self._query(_interaction_sql(self.db), params)
        shared: dict[str, int] = defaultdict(int)
        for row in rows:
            shared[row["other_experiment"]] += int(row["n"])
        keep = sorted(shared, key=lambda k: (-shared[k], k))[:limit]
        cells = [InteractionCell(other_experiment_key=row["other_experiment"], variant=row["variant"],
                                 other_variant=row["other_variant"], n=int(row["n"]), sum=float(row["s0"]),
                                 sum_squares=float(row["q0"]))
                 for row in rows if row["other_experiment"] in keep and row["n"] >= min_users]
        return InteractionStatistics(experiment_key=experiment_id, metric=metric, window_start=start, window_end=end,
                                     shared_users={k: shared[k] for k in keep}, cells=cells,
                                     elapsed_ms=(time.perf_counter() - started) * 1000)
