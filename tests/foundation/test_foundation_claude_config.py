"""Issue 16, item 9: the Claude Desktop entry locates THIS stack (a stack on moved ports must not
send the spawned server to another one on the defaults), and the default ports stay out of
Linux's ephemeral range (32768-60999), where a client socket may already hold them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mcp_router.runtime.embedded import free_port
from schemas.settings import Settings

LOCATING = ("NEONBLUE_HOME", "NEONBLUE_HTTP_HOST", "NEONBLUE_HTTP_PORT", "NEONBLUE_PG_PORT", "NEONBLUE_KAFKA_PORT")
STORE_URLS = ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS")


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NEONBLUE_") and k not in (*STORE_URLS, "HTTP_TOKEN", "CLICKHOUSE_DATABASE")}
    env.update(NEONBLUE_HOME=str(home), NEONBLUE_HTTP_HOST="127.0.0.1", NEONBLUE_HTTP_PORT=str(free_port()),
               NEONBLUE_PG_PORT=str(free_port()), NEONBLUE_KAFKA_PORT=str(free_port()))
    return env


def _entry(env: dict[str, str], cwd: Path) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-m", "mcp_router", "claude-config"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["mcpServers"]["neonblue"], done.stdout + done.stderr


def _settings_seen_by(env: dict[str, str], cwd: Path) -> dict:
    """What a process started with exactly `env` (as Claude Desktop does, elsewhere) reads."""
    code = ("import json; from schemas.settings import Settings; s = Settings(); print(json.dumps({"
            "'home': str(s.neonblue_home), 'db': s.effective_database_url, 'kafka': s.effective_kafka_bootstrap, "
            "'http': [s.http_host, s.http_port], 'ch': [s.clickhouse_url, s.clickhouse_database], "
            "'chroma': s.chroma_url, 'token': s.http_token.get_secret_value() if s.http_token else None}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def places():
    base = Path(tempfile.mkdtemp(prefix="neonblue-claude-config-"))
    (base / "home").mkdir()
    (base / "elsewhere").mkdir()
    yield base / "home", base / "elsewhere"
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_the_entry_carries_every_setting_that_locates_the_stack(places) -> None:
    home, elsewhere = places
    env = _base_env(home)
    (home / "run").mkdir()
    (home / "run" / "http_token").write_text("generated-secret-token")  # what `up` wrote
    entry, output = _entry(env, elsewhere)
    for name in LOCATING:
        expected = str(Path(env[name]).resolve()) if name == "NEONBLUE_HOME" else env[name]
        assert entry["env"][name] == expected, name
    assert "generated-secret-token" not in output  # `serve` reads the generated token from NEONBLUE_HOME
    assert "NEONBLUE_HTTP_TOKEN" not in entry["env"]
    spawned = {**{k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}, **entry["env"]}
    assert _settings_seen_by(spawned, elsewhere) == _settings_seen_by(env, elsewhere)


def test_the_entry_carries_store_urls_and_an_explicit_token_when_set(places) -> None:
    home, elsewhere = places
    env = _base_env(home)
    env.update(DATABASE_URL="postgresql://app@db.internal:5432/neonblue", CLICKHOUSE_URL="http://ch.internal:8123",
               CLICKHOUSE_DATABASE="experiments", CHROMA_URL="http://chroma.internal:8000",
               KAFKA_BOOTSTRAP_SERVERS="k1.internal:9092,k2.internal:9092", NEONBLUE_HTTP_TOKEN="explicit-token")
    entry, output = _entry(env, elsewhere)
    for name in (*STORE_URLS, "CLICKHOUSE_DATABASE", "NEONBLUE_HTTP_TOKEN"):
        assert entry["env"][name] == env[name], name
    assert "keep the config file private" in output
    spawned = {**{k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}, **entry["env"]}
    assert _settings_seen_by(spawned, elsewhere) == _settings_seen_by(env, elsewhere)


def test_default_ports_are_below_the_ephemeral_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("NEONBLUE_PG_PORT", "EMBEDDED_PG_PORT", "NEONBLUE_KAFKA_PORT", "EMBEDDED_KAFKA_PORT",
                 "NEONBLUE_HTTP_PORT", "HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None, neonblue_home=tmp_path)
    ports = {"pg": s.embedded_pg_port, "kafka": s.embedded_kafka_port, "http": s.http_port}
    assert all(1024 < port < 32768 for port in ports.values()), ports
    assert len(set(ports.values())) == 3
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"| `{s.embedded_pg_port}` / `{s.embedded_kafka_port}` |" in readme  # the configuration table
