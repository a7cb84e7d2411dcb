"""Waiting for what travels asynchronously between processes (a PostgreSQL notification reaching another
process's cache): poll a check until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[int], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `await check(attempt)` (attempt = 0, 1, …: a check can use fresh ids each round, as a user
    answered before the notification keeps that assignment) until it is true; fail after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    for attempt in itertools.count():
        if await check(attempt):
            return
        assert asyncio.get_running_loop().time() < deadline, f"the change was not seen within {timeout:g} s"
        await asyncio.sleep(interval)
