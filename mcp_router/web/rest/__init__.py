"""REST API for application backends: the seed's /api/v1/experiments endpoints, /openapi.json
and /docs, a FastAPI app served by the router's HTTP app beside /mcp (same bearer token, same
rate limit):

    app = build_http_app(router, settings, token, extra_routes=rest_routes(router))

Every route calls the in-process ExperimentService (`router.services["postgres"]`), the same
methods the MCP tools call. models -> routes (the path operations) -> app (errors, document, mounting).
"""

from __future__ import annotations

from .app import build_api, rest_routes

__all__ = ["build_api", "rest_routes"]
