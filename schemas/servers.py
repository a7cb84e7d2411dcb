"""The NeonBlue servers by name, each with its one-line role: the one list every room shares.

The registry (mcp_servers.registry) maps each name to its package; the intelligence server opens
its peers by these names; the router and the CLI offer them as choices.
"""

from __future__ import annotations

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
