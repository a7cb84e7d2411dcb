"""`python -m mcp_servers.postgres`: the PostgreSQL server alone over stdio (`neonblue serve postgres`).

Reads DATABASE_URL (unset: the embedded PostgreSQL of `neonblue up`). Logs go to
stderr; stdout carries the MCP protocol only.
"""

import sys

from mcp_servers import postgres
from mcp_servers.stdio import stdio_main

if __name__ == "__main__":
    sys.exit(stdio_main("postgres", postgres))
