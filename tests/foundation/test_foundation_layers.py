"""The house's layering (issue 17) is a contract, checked by import-linter on every `make test`.

The contracts live in pyproject.toml under [tool.importlinter]: the ground floor (schemas)
imports no room above it; the statistics engine imports nothing of ours but itself; servers and
the stream processor never import the router; the router's rooms go apps → runtime → web →
gateway; and no import cycle exists anywhere.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_layering_contract_is_kept() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_contracts_cover_the_rules_the_house_promises() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = config["contracts"]
    kinds = {c["type"] for c in contracts}
    assert {"forbidden", "layers", "acyclic_siblings"} <= kinds
    acyclic = next(c for c in contracts if c["type"] == "acyclic_siblings")
    assert set(acyclic["ancestors"]) == set(config["root_packages"])  # no cycles in any package of ours
    never_router = [c for c in contracts if c["type"] == "forbidden" and c["forbidden_modules"] == ["mcp_router"]]
    assert never_router and {"mcp_servers", "stream_processor"} <= set(never_router[0]["source_modules"])
    stats = next(c for c in contracts if c["source_modules"] == ["mcp_servers.stats"] if "source_modules" in c)
    assert {"schemas", "mcp_router", "stream_processor", "mcp_servers.intelligence"} <= set(stats["forbidden_modules"])
