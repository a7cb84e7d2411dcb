"""The ground floor: the contracts every room shares — the one settings model, the
Kafka event schema, the errors, and the rules that route each event to its stores.

It imports nothing from the rooms above it (the router, the servers, the stream processor).
"""

from schemas.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
