"""One settings model, env-driven; the event schema validates and is exported for producers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.events import Event, EventType, event_json_schema
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_settings_read_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEONBLUE_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/x")
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123")
    monkeypatch.setenv("CHROMA_URL", "http://chroma:8000")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("NEONBLUE_HTTP_PORT", "9999")
    monkeypatch.setenv("NEONBLUE_HTTP_TOKEN", "s3cret")
    s = Settings()
    assert s.neonblue_home == tmp_path.resolve()
    assert s.effective_database_url == "postgresql://u:p@db:5432/x"
    assert s.effective_kafka_bootstrap == "k1:9092,k2:9092"
    assert s.http_port == 9999
    assert s.http_token is not None and s.http_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_unset_store_urls_mean_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEONBLUE_HOME", str(tmp_path))
    s = Settings(_env_file=None)
    assert s.database_url is None and s.clickhouse_url is None and s.chroma_url is None
    assert s.effective_database_url.startswith("postgresql://postgres@127.0.0.1:")
    assert s.chdb_dir == tmp_path.resolve() / "chdb"


def test_event_defaults_and_validation() -> None:
    e = Event.model_validate({"event_id": "e1", "event_type": "conversion", "timestamp": "2026-11-01T10:00:00Z",
                              "user_id": "u1", "experiment_id": "checkout"})
    assert e.metric_name == "conversion" and e.metric_value == 1.0
    assert e.timestamp.tzinfo is not None
    with pytest.raises(ValidationError, match="numeric value"):
        Event.model_validate({"event_id": "e2", "event_type": "metric", "timestamp": "2026-11-01T10:00:00Z",
                              "user_id": "u1", "experiment_id": "x", "metric": "latency_ms"})
    with pytest.raises(ValidationError, match="timezone"):
        Event.model_validate({"event_id": "e5", "event_type": "page_view", "timestamp": "2026-11-01T10:00:00",
                              "user_id": "u1"})
    with pytest.raises(ValidationError, match="finite"):
        Event.model_validate({"event_id": "e3", "event_type": "revenue", "timestamp": "2026-11-01T10:00:00Z",
                              "user_id": "u1", "experiment_id": "x", "value": float("nan")})
    with pytest.raises(ValidationError, match="Extra inputs"):
        Event.model_validate({"event_id": "e4", "event_type": "page_view", "timestamp": "2026-11-01T10:00:00Z",
                              "user_id": "u1", "colour": "blue"})
    assert {t.value for t in EventType} >= {"exposure", "conversion", "experiment_concluded", "llm_response"}


def test_exported_json_schema_is_in_sync() -> None:
    on_disk = json.loads((REPO / "schemas" / "event.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(event_json_schema(), sort_keys=True))
