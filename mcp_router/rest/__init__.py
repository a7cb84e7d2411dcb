"""REST API for application backends: the seed's /api/v1/experiments endpoints and /openapi.json,
served by the router's HTTP app beside /mcp (same bearer token, same rate limit):

    app = build_http_app(router, settings, token, extra_routes=rest_routes(router))

Every route calls the in-process ExperimentService (`router.services["postgres"]`), the same
methods the MCP tools call; models, errors and the OpenAPI document live beside the routes.
"""

from __future__ import annotations

from .openapi import build_openapi
from .routes import OPERATIONS, rest_routes

__all__ = ["OPERATIONS", "build_openapi", "rest_routes"]
