"""Shared by the bench scripts (run as `python bench/<script>.py`, so this folder is on sys.path)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any


async def timed(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per run. CPU is this process's, where the embedded engines run (chDB with
    its background merges, the stores' clients), so it shows the work whatever else loads the machine."""
    runs = []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        await fn()
        runs.append((time.perf_counter() - started, time.process_time() - cpu))
    return runs
