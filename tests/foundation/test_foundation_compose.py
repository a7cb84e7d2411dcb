"""compose.yaml describes the production stack and speaks the settings model's language."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _settings_env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if alias is not None and hasattr(alias, "choices"):
            names.update(str(c).upper() for c in alias.choices)
        else:
            names.add(name.upper())
    return names


def test_compose_has_the_official_store_images_and_neonblue_services() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["chroma"]["image"].startswith("chromadb/chroma:")
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "KRaft" in (REPO / "compose.yaml").read_text() or services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    for store in ("postgres", "clickhouse", "chroma", "kafka"):
        assert "healthcheck" in services[store], store
        assert services[store].get("volumes"), store
    assert services["router"]["command"][:3] == ["neonblue", "serve", "--http"]
    assert services["stream"]["command"][:2] == ["neonblue", "stream"]
    assert services["router"]["deploy"]["replicas"] >= 2
    assert services["stream"]["deploy"]["replicas"] >= 2


def test_compose_env_names_match_the_settings_model_and_ports_line_up() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    known = _settings_env_names() | {"HF_HUB_OFFLINE"}
    router_env = compose["services"]["router"]["environment"]
    assert set(router_env) <= known, set(router_env) - known
    for required in ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS", "NEONBLUE_HTTP_TOKEN"):
        assert required in router_env
    assert "${NEONBLUE_HTTP_TOKEN:?" in router_env["NEONBLUE_HTTP_TOKEN"]  # no default token: compose refuses
    defaults = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in router_env.items()}
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in defaults.items()
                                           if k.lower() in Settings.model_fields and "${" not in v})
    assert settings.database_url.endswith("@postgres:5432/neonblue")
    port = router_env["NEONBLUE_HTTP_PORT"]
    assert compose["services"]["router"]["expose"] == [port]
    assert f"{port}:{port}" in compose["services"]["gateway"]["ports"]
    assert "kafka:9092" == router_env["KAFKA_BOOTSTRAP_SERVERS"]
    assert "9092:9092" in compose["services"]["kafka"]["ports"]
