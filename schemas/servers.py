"""The NeonBlue servers by name, each with its one-line role: the one list every room shares.

The registry (mcp_servers.registry) maps each name to its package; the intelligence server opens
its peers by these names; the router and the CLI offer them as choices.
"""

from __future__ import annotations

import os
import shlex

from mcp import StdioServerParameters

from schemas.errors import ConfigError

POSTGRES = "postgres"
CLICKHOUSE = "clickhouse"
CHROMADB = "chromadb"
INTELLIGENCE = "intelligence"

ROLES: dict[str, str] = {
    POSTGRES: "experiment registry: lifecycle, user assignment, results, the decision audit trail",
    CLICKHOUSE: "event analytics: the event firehose and per-variant sufficient statistics",
    CHROMADB: "semantic memory: past experiments, user journeys and optimization patterns by meaning",
    INTELLIGENCE: "experiment intelligence: statistics, verdicts, recommendations, the autopilot",
}

SERVER_NAMES: tuple[str, ...] = tuple(ROLES)
# The servers the intelligence server reads from and acts through.
PEERS_OF_INTELLIGENCE: tuple[str, ...] = (POSTGRES, CLICKHOUSE, CHROMADB)


def backend_target(name: str, spec: str) -> StdioServerParameters | str:
    """A NEONBLUE_BACKENDS entry for server `name`: `stdio:<command line>` (a subprocess speaking MCP
    on stdio) or an http(s) URL of a streamable-HTTP MCP endpoint. Anything else is a ConfigError."""
    if spec.startswith("stdio:"):
        argv = shlex.split(spec.removeprefix("stdio:"))
        if not argv:
            raise ConfigError(f"NEONBLUE_BACKENDS: empty stdio command for {name} in {spec!r}")
        return StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    if spec.startswith(("http://", "https://")):
        return spec
    raise ConfigError(f"NEONBLUE_BACKENDS: {spec!r} ({name}) is neither 'stdio:<command>' nor an http(s) URL")
