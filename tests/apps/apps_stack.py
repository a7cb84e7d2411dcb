"""Helpers of the tests/apps tests: run `neonblue` and the CI example's steps as a CI job would,
on a stack of its own (temp NEONBLUE_HOME, kernel-assigned free ports)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mcp_router.runtime.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "docs" / "ci" / "neonblue-gate.yml"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def neonblue(args: list[str], env: dict[str, str], timeout: float = 180,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_router", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd)


def neonblue_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent `neonblue` commands at once (each starts its own `serve`: mostly imports, CPU)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: neonblue(args, env), commands))


def stack_environment(base: Path) -> dict[str, str]:
    """The environment of a stack of its own under `base`: home, free ports, no outside stores, and
    this venv's `neonblue` (and `python`) first on PATH, as after the workflow's install step."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS", "NEONBLUE_HTTP_TOKEN",
                        "NEONBLUE_BACKENDS", "ENVIRONMENT", "NEONBLUE_TOOL_PROFILE", "ANTHROPIC_API_KEY")}
    env.update(NEONBLUE_HOME=str(base / "home"), NEONBLUE_PG_PORT=str(free_port()),
               NEONBLUE_KAFKA_PORT=str(free_port()), NEONBLUE_HTTP_PORT=str(free_port()), LOG_LEVEL="WARNING",
               COLUMNS="80", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               ANONYMIZED_TELEMETRY="False", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return env


def stop_stack(env: dict[str, str]) -> None:
    neonblue(["down", "--force"], env, timeout=120)


# ---------------------------------------------------------------- the CI example (docs/ci/neonblue-gate.yml)


def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def workflow_job() -> dict[str, Any]:
    (job,) = workflow()["jobs"].values()
    return job


def workflow_env(base_env: dict[str, str]) -> dict[str, str]:
    """The job's env on top of `base_env`; a value the runner computes (`${{ ... }}`) is this test's
    (NEONBLUE_HOME: a temp dir)."""
    env = dict(base_env)
    for key, value in workflow_job().get("env", {}).items():
        if EXPRESSION.search(str(value)):
            assert key in base_env, f"the workflow sets {key} from the runner; the test has no value for it"
            continue
        env[key] = str(value)
    return env


def run_step(step: dict[str, Any], env: dict[str, str], cwd: Path, timeout: float = 600
             ) -> subprocess.CompletedProcess[str]:
    """One `run:` step as GitHub Actions runs it with `shell: bash`."""
    assert workflow_job()["defaults"]["run"]["shell"] == "bash"
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)
