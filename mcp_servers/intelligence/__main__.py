"""`python -m mcp_servers.intelligence`: the intelligence server alone over stdio (`neonblue serve intelligence`).

It needs the other servers: it opens the router from the settings (in-process
postgres/clickhouse/chromadb servers, or the remote ones NEONBLUE_BACKENDS names)
and serves only the intelligence tools on stdio. Logs go to stderr.
"""

from __future__ import annotations

import logging
import sys

from schemas.settings import get_settings


def main() -> int:
    settings = get_settings()
    logging.basicConfig(stream=sys.stderr, level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mcp_router.serving import run_stdio

    try:
        run_stdio(settings, "intelligence")
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
