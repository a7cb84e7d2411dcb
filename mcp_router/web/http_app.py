"""The HTTP face of the router: /mcp (streamable HTTP), /api (REST), /openapi.json, /health, /metrics.

One pure ASGI middleware in front of every route but /health applies, in this order:

1. Host and Origin (DNS rebinding, CSRF): the Host header must name this server (HostPolicy);
   an Origin header, when a browser sends one, must be the same origin or a listed one.
   421 / 403 otherwise.
2. Request bodies on POST/PUT/PATCH must be `application/json` (415 otherwise), so no HTML form
   or "simple" cross-site request can carry one.
3. Bearer-token auth (401), failed attempts limited per client address (429 past the limit).
   With NEONBLUE_OAUTH_ISSUER set, /mcp also accepts the issuer's access tokens (oauth.py): a 401
   there points at the RFC 9728 metadata, and a token lacking the scope a request needs gets 403.
4. Rate limit per principal: the token's one fixed principal, an OAuth token's issuer and subject,
   or the client address when serving without a token (429 with Retry-After). The bucket table is
   bounded (LRU).

Every refusal is JSON `{"error", "detail"}` (a 403 for a missing OAuth scope on /mcp is also a JSON-RPC
error, so an MCP client shows it: there `error` is the JSON-RPC error object). /health reports only OK or 503, nothing an attacker
can use, so it is public and answers any Host (load balancers and container probes call it by IP).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.authentication import AuthCredentials
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_router.gateway import metrics
from mcp_router.gateway.router import Router
from mcp_router.web import oauth
from schemas.errors import ConfigError
from schemas.settings import Settings

log = logging.getLogger("neonblue.http")

PUBLIC_PATHS = frozenset({"/health"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
TOKEN_PRINCIPAL = "token"  # the one principal the bearer token authenticates (never the raw header)
MAX_TRACKED_CLIENTS = 10_000  # bucket-table bound: ~a few MB at most, whatever the traffic


def _refusal(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


# ---------------------------------------------------------------- Host and Origin


def _split_authority(authority: str) -> tuple[str, str | None]:
    """'Name:port' -> ('name', 'port'); '[::1]:8765' -> ('[::1]', '8765'); no port -> None."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        name, rest = authority[: end + 1], authority[end + 1 :]
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = authority.rpartition(":")
    return (name, port) if sep else (authority, None)


def _bracketed(host: str) -> str:
    """An IPv6 literal as it appears in a Host header."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class HostPolicy:
    """Which Host and Origin headers the app answers.

    `hosts` holds `name` or `name:port` entries (`name:*` = `name` = any port); None means the
    Host header is not checked (bound to every interface with no NEONBLUE_ALLOWED_HOSTS: the token,
    mandatory there, guards every route). An Origin is allowed when it is the request's own
    origin (its authority equals the accepted Host) or listed in `origins` (`scheme://name:*`
    matches any port).
    """

    hosts: tuple[tuple[str, str | None], ...] | None
    origins: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        extra = [h.strip().lower() for h in settings.allowed_hosts if h.strip()]
        origins = frozenset(o.strip().lower().rstrip("/") for o in settings.allowed_origins if o.strip())
        bind = settings.http_host.strip().lower()
        if "*" in extra or (bind in WILDCARD_BINDS and not extra):
            return cls(None, origins)
        names = [_bracketed(bind)] if bind else []  # a 0.0.0.0 owner is reached as http://0.0.0.0:port by `status`
        if bind in WILDCARD_BINDS or settings.http_is_loopback:
            names += LOOPBACK_HOSTS  # a rebinding attacker's page always carries its own name, never these
        entries = [(name, None) for name in names] + [_split_authority(h) for h in extra]
        return cls(tuple((name, None if port == "*" else port) for name, port in dict.fromkeys(entries)), origins)

    def host_allowed(self, host: str | None) -> bool:
        if self.hosts is None:
            return True
        if not host:
            return False
        name, port = _split_authority(host)
        return any(name == n and (p is None or port == p) for n, p in self.hosts)

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # includes the opaque "null" origin (sandboxed frames, file:// pages)
        if host and parts.netloc == host.strip().lower():
            return True
        if origin in self.origins:
            return True
        base, _, port = origin.rpartition(":")
        return port.isdecimal() and f"{base}:*" in self.origins


# ---------------------------------------------------------------- rate limiting


@dataclass
class TokenBucket:
    rate_per_s: float
    capacity: float
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now

    def wait(self) -> float:
        """0.0 when a token is available (none is taken), else seconds until one is."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate_per_s

    def take(self) -> float:
        """0.0 when allowed (a token is taken), else seconds until a token is available."""
        wait = self.wait()
        if wait == 0.0:
            self.tokens -= 1
        return wait


class BucketTable:
    """Token buckets by key (a principal or a client address, never a raw header), at most
    `max_entries` of them: the least recently used is dropped first. A dropped bucket comes back
    full, which is what an idle client's bucket is anyway."""

    def __init__(self, max_entries: int = MAX_TRACKED_CLIENTS) -> None:
        self.max_entries = max_entries
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(self, key: str, per_minute: int) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._buckets.move_to_end(key)
            return bucket
        bucket = self._buckets[key] = TokenBucket(per_minute / 60.0, float(per_minute), tokens=float(per_minute))
        while len(self._buckets) > self.max_entries:
            self._buckets.popitem(last=False)
        return bucket

    def take(self, key: str, per_minute: int) -> float:
        return self._bucket(key, per_minute).take()

    def wait(self, key: str, per_minute: int) -> float:
        """Seconds until `key` may act again, taking nothing and creating no entry."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait()


def client_address(scope: Scope) -> str:
    """The peer address rate limits are keyed by; an IPv6 peer counts as its /64 (one host's usual share)."""
    host = (scope.get("client") or ("unknown",))[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# ---------------------------------------------------------------- the middleware


@dataclass(frozen=True)
class OAuthGuard:
    """What the middleware needs to accept OAuth access tokens on /mcp: the config, its verifier, and
    the router's tools (their annotations decide the scope a call needs)."""

    config: oauth.OAuthConfig
    verifier: oauth.JwtVerifier | oauth.IntrospectionVerifier
    router: Router

    @property
    def public_paths(self) -> frozenset[str]:
        return oauth.metadata_paths(self.config)

    def challenge(self, error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
        """A WWW-Authenticate value (RFC 6750 §3, RFC 9728 §5.1)."""
        parts = [f'error="{error}"'] if error else []
        if description:
            parts.append(f'error_description="{description.replace(chr(34), chr(39))}"')
        parts += [f'scope="{scope or oauth.SCOPE_READ}"', f'resource_metadata="{self.config.metadata_url}"']
        return "Bearer " + ", ".join(parts)


def _is_mcp(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")


class AuthAndRateLimit:
    """Pure ASGI middleware: Host/Origin (421/403), JSON bodies (415), bearer token (401),
    failed-auth and per-principal rate limits (429), OAuth scopes on /mcp (403). See the module docstring."""

    def __init__(self, app: ASGIApp, token: str | None, per_minute: int, api_per_minute: int | None = None, *,
                 policy: HostPolicy | None = None, auth_failures_per_minute: int = 30,
                 max_clients: int = MAX_TRACKED_CLIENTS, oauth_guard: OAuthGuard | None = None) -> None:
        if token is not None and not token.strip():
            # None is the one way to serve without auth; a blank token is a mistake, never "no auth".
            raise ConfigError("NEONBLUE_HTTP_TOKEN: the token is empty or whitespace; set a real token")
        self.app = app
        self.token = token.strip().encode() if token is not None else None
        self.per_minute = per_minute
        self.api_per_minute = api_per_minute or per_minute  # /api serves application backends
        self.auth_failures_per_minute = auth_failures_per_minute
        self.policy = policy or HostPolicy(None)
        self.buckets = BucketTable(max_clients)
        self.oauth = oauth_guard
        self.public_paths = PUBLIC_PATHS | (oauth_guard.public_paths if oauth_guard else frozenset())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        refusal = await self._check(scope)
        if isinstance(refusal, AccessToken):  # an OAuth principal on /mcp: its scopes decide
            await self._with_scopes(refusal, scope, receive, send)
            return
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _with_scopes(self, access: AccessToken, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the JSON-RPC body, refuse (403 insufficient_scope) what the token's scopes do not cover, then
        pass the request on with the SDK's auth context set (get_access_token() works in handlers)."""
        assert self.oauth is not None
        body = b""
        if scope["method"] in BODY_METHODS:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > DEFAULT_MAX_REQUEST_BODY_SIZE:
                    await _refusal(413, "payload_too_large", "the request body is too large")(scope, receive, send)
                    return
        needed, tool, request_id = oauth.needed_scope(body, self.oauth.router.catalogue.tools)
        if not oauth.has_scope(access.scopes, needed):
            challenge = self.oauth.challenge("insufficient_scope", f"needs scope {needed}", needed)
            refusal = JSONResponse(oauth.insufficient_scope_body(needed, tool, request_id, access.scopes),
                                   status_code=403, headers={"WWW-Authenticate": challenge})
            await refusal(scope, receive, send)
            return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        user = AuthenticatedUser(access)
        scope = {**scope, "user": user, "auth": AuthCredentials(access.scopes)}
        reset = auth_context_var.set(user)
        try:
            await self.app(scope, replay, send)
        finally:
            auth_context_var.reset(reset)

    async def _check(self, scope: Scope) -> Response | AccessToken | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers") or []:
            headers.setdefault(name, value)  # the first of a repeated header, as Starlette reads it
        host = headers.get(b"host", b"").decode("latin-1") or None
        if not self.policy.host_allowed(host):
            return _refusal(421, "misdirected_request",
                            f"Host {host!r} is not served here (add it to NEONBLUE_ALLOWED_HOSTS if it should be)")
        origin = headers.get(b"origin")
        if origin is not None and not self.policy.origin_allowed(origin.decode("latin-1"), host):
            return _refusal(403, "forbidden_origin", f"Origin {origin.decode('latin-1')!r} is not allowed: "
                            "only the same origin and NEONBLUE_ALLOWED_ORIGINS may call this server")
        if scope["method"] in BODY_METHODS and not _json_or_no_body(headers):
            return _refusal(415, "unsupported_media_type", "request bodies must be Content-Type: application/json")
        address = client_address(scope)
        guard = self.oauth if self.oauth is not None and _is_mcp(scope["path"]) else None
        access: AccessToken | None = None
        if self.token is not None or guard is not None:
            failures = f"auth-failures:{address}"
            wait = self.buckets.wait(failures, self.auth_failures_per_minute)
            if wait > 0:  # the token is not even compared: no guessing past the limit
                return _too_many(wait, "too many failed authentication attempts from this address")
            scheme, _, supplied = headers.get(b"authorization", b"").partition(b" ")
            supplied = supplied.strip()
            bearer = scheme.lower() == b"bearer" and bool(supplied)
            if bearer and self.token is not None and hmac.compare_digest(supplied, self.token):
                principal = TOKEN_PRINCIPAL
            elif guard is None:
                self.buckets.take(failures, self.auth_failures_per_minute)
                return _refusal(401, "unauthorized", "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
            elif not bearer:
                self.buckets.take(failures, self.auth_failures_per_minute)
                return _refusal(401, "unauthorized", "a bearer token is required; see the resource metadata for its "
                                f"authorization server: {guard.config.metadata_url}",
                                headers={"WWW-Authenticate": guard.challenge()})
            else:
                try:
                    access = await guard.verifier.verify(supplied.decode("latin-1"))
                except oauth.InvalidToken as exc:
                    self.buckets.take(failures, self.auth_failures_per_minute)
                    return _refusal(401, "invalid_token", str(exc),
                                    headers={"WWW-Authenticate": guard.challenge("invalid_token", str(exc))})
                issuer = (access.claims or {}).get("iss", "")
                principal = f"oauth:{issuer}:{access.subject or access.client_id}"
        else:
            principal = f"address:{address}"
        api = scope["path"].startswith("/api/")
        wait = self.buckets.take(f"{'api' if api else 'mcp'}:{principal}",
                                 self.api_per_minute if api else self.per_minute)
        if wait > 0:
            return _too_many(wait, f"retry in {wait:.1f}s")
        return access


def _too_many(wait: float, detail: str) -> Response:
    return _refusal(429, "rate_limited", detail, headers={"Retry-After": str(max(1, round(wait)))})


def _json_or_no_body(headers: dict[bytes, bytes]) -> bool:
    """A POST/PUT/PATCH body must be declared application/json; a bodyless one may omit the type
    (a cross-site one still carries an Origin, checked above), but may not declare another."""
    content_type = headers.get(b"content-type")
    if content_type is None:
        has_body = headers.get(b"content-length", b"0").strip() not in (b"0", b"") or b"transfer-encoding" in headers
        return not has_body
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def build_http_app(router: Router, settings: Settings, token: str | None,
                   extra_routes: list[Any] | None = None) -> AuthAndRateLimit:
    if token is None and not settings.http_is_loopback:
        raise ConfigError(f"NEONBLUE_HTTP_TOKEN: a non-empty token is required to serve on non-loopback "
                          f"address {settings.http_host}")

    async def health(request: Request) -> Response:
        ok = all(b.healthy for b in router.backends.values())
        return PlainTextResponse("OK" if ok else "unavailable", status_code=200 if ok else 503)

    async def prometheus(request: Request) -> Response:
        for backend in router.backends.values():
            metrics.BACKEND_HEALTHY.labels(backend=backend.name).set(1 if backend.healthy else 0)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/health", health), Route("/metrics", prometheus), *(extra_routes or [])]
    oauth_config = oauth.OAuthConfig.from_settings(settings)
    guard = None
    if oauth_config is not None:
        guard = OAuthGuard(oauth_config, oauth.build_verifier(oauth_config), router)
        routes += oauth.metadata_routes(oauth_config)
        log.info("/mcp accepts access tokens of %s for resource %s (metadata: %s)", oauth_config.issuer,
                 oauth_config.resource, oauth_config.metadata_url)
    policy = HostPolicy.from_settings(settings)
    if policy.hosts is None:
        log.info("Host header not checked (bound to %s, no NEONBLUE_ALLOWED_HOSTS); the bearer token guards "
                 "every route", settings.http_host)
    app = router.server.streamable_http_app(
        stateless_http=True, json_response=True, custom_starlette_routes=routes,
        # The middleware below applies one Host/Origin policy to every route, /mcp included; the SDK's
        # own copy (loopback only, other rules) would contradict NEONBLUE_ALLOWED_HOSTS on /mcp alone.
        # It still checks Content-Type on POST /mcp.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return AuthAndRateLimit(app, token, settings.rate_limit_per_minute, settings.api_rate_limit_per_minute,
                            policy=policy, auth_failures_per_minute=settings.auth_failure_limit_per_minute,
                            oauth_guard=guard)
