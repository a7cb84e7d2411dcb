"""Shared contracts: the one settings model and the Kafka event schema."""

from schemas.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
