"""Fixtures of the front-door tests (the router they plan against is in nl_env.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.settings import Settings


@pytest.fixture
def nl_settings(pg_dsn: str, ch_database: str, chdb_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": pg_dsn, "clickhouse_database": ch_database,
                                  "neonblue_home": chdb_path.parent, "anthropic_api_key": None,
                                  "log_level": "WARNING", "tool_profile": "full"}
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build
