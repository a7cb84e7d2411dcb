"""`python -m mcp_servers.intelligence`: the intelligence server alone over stdio.

It needs the other servers: it opens postgres, clickhouse and chromadb itself
(in this process, or the remote ones NEONBLUE_BACKENDS names; see `peers.open_peers`)
and serves only the intelligence tools on stdio. Like `python -m mcp_servers.postgres`,
it reads DATABASE_URL (unset: the embedded PostgreSQL of a running `neonblue up`;
`neonblue serve intelligence` starts one when none runs). Logs go to stderr.
"""

import sys

from mcp_servers import intelligence
from mcp_servers.stdio import stdio_main

if __name__ == "__main__":
    sys.exit(stdio_main("intelligence", intelligence))
