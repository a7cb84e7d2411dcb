"""`neonblue demo`, smaller: the main job runs end to end and its verdicts match the planted effects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mcp_router.runtime.embedded import free_port


def test_the_demo_recovers_every_planted_effect_and_reruns_safely() -> None:
    base = Path(tempfile.mkdtemp(prefix="neonblue-demo-"))  # outside pytest's basetemp (PostgreSQL's user)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CLICKHOUSE_URL", "CHROMA_URL", "KAFKA_BOOTSTRAP_SERVERS",
                        "NEONBLUE_HTTP_TOKEN", "ANTHROPIC_API_KEY")}
    env.update(NEONBLUE_HOME=str(base / "home"), NEONBLUE_PG_PORT=str(free_port()),
               NEONBLUE_KAFKA_PORT=str(free_port()), NEONBLUE_HTTP_PORT=str(free_port()), COLUMNS="200",
               HF_HUB_OFFLINE="1")
    demo = [sys.executable, "-m", "mcp_router", "demo", "--scale", "0.3", "--output", str(base / "out")]
    try:
        first = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=1500, check=False)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        for line in ("✓ checkout-1step: verdict ship", "✓ pricing-premium: verdict roll_back",
                     "✓ support-bot-prompt: verdict ship", "✓ onboarding-bandit: verdict traffic → personalised"):
            assert line in first.stdout, first.stdout[-4000:]
        assert "✓ homepage-aa: verdict" in first.stdout  # A/A: no ship, no roll back
        # the personalised experiment serves each device its planted best arm (issue 22)
        assert "✓ paywall-personalised: verdict mobile → compact, desktop → table" in first.stdout, first.stdout[-4000:]
        for png in ("checkout-1step.png", "personalization-regret.png", "paywall-personalised-segments.png"):
            assert (base / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "neonblue claude-config" in first.stdout and "neonblue chat" in first.stdout

        again = subprocess.run(demo, env=env, capture_output=True, text=True, timeout=1500, check=False)
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]  # re-running is safe
    finally:
        subprocess.run([sys.executable, "-m", "mcp_router", "down", "--force"], env=env, capture_output=True, timeout=120,
                       check=False)
        shutil.rmtree(base, ignore_errors=True)
