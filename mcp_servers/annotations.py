"""The tool annotations of every NeonBlue server: one definition per kind of tool.

Hints for the client (which may ask for confirmation before a destructive call), set
honestly; they are not enforcement. Every tool touches only NeonBlue's own stores, so
open_world_hint is always False.
"""

from __future__ import annotations

from mcp.types import ToolAnnotations


def _hints(*, read_only: bool, destructive: bool, idempotent: bool) -> ToolAnnotations:
    return ToolAnnotations(read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=idempotent,
                           open_world_hint=False)


# Changes nothing anywhere.
READ_ONLY = _hints(read_only=True, destructive=False, idempotent=True)
# Adds something new on every call (create, record a result or a decision).
WRITE = _hints(read_only=False, destructive=False, idempotent=False)
# Adds or recomputes without losing anything, and a repeat adds nothing (ingest with a token,
# recomputed rollups, a verdict written to the audit trail once).
IDEMPOTENT_WRITE = _hints(read_only=False, destructive=False, idempotent=True)
# Replaces state, and a repeat with the same input is a no-op (upserts, stop, archive, set weights).
OVERWRITE = _hints(read_only=False, destructive=True, idempotent=True)
# Replaces state, and every call may act again (start, actions taken by the autopilot).
DESTRUCTIVE_WRITE = _hints(read_only=False, destructive=True, idempotent=False)
