"""The HTTP face of the router: /mcp (streamable HTTP), /health, /metrics.

Bearer-token auth on everything but /health, per-client rate limiting, and
Prometheus metrics. /health reports only OK or 503, nothing an attacker can use.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_router import metrics
from mcp_router.router import Router
from schemas.settings import Settings

PUBLIC_PATHS = frozenset({"/health"})


@dataclass
class TokenBucket:
    rate_per_s: float
    capacity: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def take(self) -> float:
        """0.0 when allowed, else seconds until a token is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate_per_s


class AuthAndRateLimit:
    """Pure ASGI middleware: 401 without the right bearer token, 429 over the per-client rate."""

    def __init__(self, app: ASGIApp, token: str | None, per_minute: int, api_per_minute: int | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.per_minute = per_minute
        self.api_per_minute = api_per_minute or per_minute  # /api serves application backends
        self.buckets: dict[str, TokenBucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.token is not None:
            auth = headers.get(b"authorization", b"")
            scheme, _, supplied = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(supplied.strip(), self.token):
                await JSONResponse({"error": "unauthorized", "detail": "missing or wrong bearer token"},
                                   status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        client = headers.get(b"authorization") or (scope.get("client") or ("?",))[0].encode()
        api = scope["path"].startswith("/api/")
        limit = self.api_per_minute if api else self.per_minute
        bucket = self.buckets.setdefault(
            f"{'api' if api else 'mcp'}:{client.decode(errors='replace')}",
            TokenBucket(limit / 60.0, float(limit), tokens=float(limit)),
        )
        wait = bucket.take()
        if wait > 0:
            await JSONResponse({"error": "rate_limited", "detail": f"retry in {wait:.1f}s"}, status_code=429,
                               headers={"Retry-After": str(max(1, round(wait)))})(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_http_app(router: Router, settings: Settings, token: str | None, extra_routes: list[Any] | None = None) -> ASGIApp:
    async def health(request: Request) -> Response:
        ok = all(b.healthy for b in router.backends.values())
        return PlainTextResponse("OK" if ok else "unavailable", status_code=200 if ok else 503)

    async def prometheus(request: Request) -> Response:
        for backend in router.backends.values():
            metrics.BACKEND_HEALTHY.labels(backend=backend.name).set(1 if backend.healthy else 0)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/health", health), Route("/metrics", prometheus), *(extra_routes or [])]
    app = router.server.streamable_http_app(
        stateless_http=True, json_response=True, host=settings.http_host, custom_starlette_routes=routes
    )
    return AuthAndRateLimit(app, token, settings.rate_limit_per_minute, settings.api_rate_limit_per_minute)
