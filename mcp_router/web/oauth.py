"""/mcp as an OAuth 2.1 resource server, beside the static bearer token (opt-in: NEONBLUE_OAUTH_ISSUER).

- Protected-resource metadata (RFC 9728) at `/.well-known/oauth-protected-resource/<resource path>`
  and at the bare `/.well-known/oauth-protected-resource`, built by the SDK's
  `create_protected_resource_routes`; every 401 on /mcp points at it
  (`WWW-Authenticate: Bearer resource_metadata="..."`).
- Access tokens are checked by an SDK `TokenVerifier`: a JWT verified against the issuer's JWKS
  (an asymmetric signature, `exp`/`nbf`, `iss` = the issuer, `aud` containing the resource URL), or
  an RFC 7662 introspection endpoint (`active`, `exp`, `iss`, `aud`).
- Scopes: `experiments:read` for any MCP request and for read-only tools (annotation
  `readOnlyHint`); `experiments:write` for every other tool, and it includes read. A token without
  the scope a request needs gets 403 `insufficient_scope` naming the scope (RFC 6750 §3.1), so a
  client can step up.

Tokens verified here are accepted on /mcp only (the resource they are issued for); /api and
/metrics keep the static token. The static token, when set, keeps every scope, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl, SecretStr
from starlette.routing import Route

from schemas.errors import ConfigError
from schemas.settings import Settings

log = logging.getLogger("neonblue.oauth")

SCOPE_READ = "experiments:read"
SCOPE_WRITE = "experiments:write"
SCOPES = (SCOPE_READ, SCOPE_WRITE)
IMPLIED = {SCOPE_WRITE: {SCOPE_READ}}  # a scope and what it includes
# Asymmetric algorithms only: an HS* token "signed" with a public key must never verify.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY_SECONDS = 30  # clock skew allowed on exp / nbf / iat
JWKS_TTL_SECONDS = 300.0  # a cached key set is refetched after this, or when a token names an unknown kid
JWKS_MIN_REFRESH_SECONDS = 10.0  # ...but unknown kids cannot make us fetch more often than this
FETCH_TIMEOUT_SECONDS = 5.0
METADATA_ROOT = "/.well-known/oauth-protected-resource"
INSUFFICIENT_SCOPE_CODE = -32003  # JSON-RPC server-defined range: the request is forbidden to this token


class InvalidToken(Exception):
    """A bearer token that is not a valid access token for this resource (the message says why)."""


def _same_url(a: str, b: str) -> bool:
    """Resource URLs compared as the SDK does: a trailing slash aside (and case of scheme/host)."""
    try:
        return str(AnyHttpUrl(a)).removesuffix("/") == str(AnyHttpUrl(b)).removesuffix("/")
    except Exception:  # noqa: BLE001 - not a URL: not this resource
        return False


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _scopes(claims: dict[str, Any]) -> list[str]:
    """`scope` (RFC 9068/8693: space-separated) or `scp` (a list, as some issuers write it)."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list):
        return [s for s in raw if isinstance(s, str)]
    return []


def _access_token(token: str, claims: dict[str, Any], resource: str) -> AccessToken:
    exp = claims.get("exp")
    subject = claims.get("sub")
    client = claims.get("client_id") or claims.get("azp") or subject or "unknown"
    return AccessToken(token=token, client_id=str(client), scopes=_scopes(claims),
                       expires_at=int(exp) if isinstance(exp, int | float) else None, resource=resource,
                       subject=str(subject) if subject is not None else None,
                       claims={k: v for k, v in claims.items() if k in ("iss", "sub", "aud", "client_id", "azp")})


@dataclass(frozen=True)
class OAuthConfig:
    issuer: str
    resource: str
    jwks_url: str | None
    introspection_url: str | None
    client_id: str | None
    client_secret: str | None

    @property
    def metadata_url(self) -> str:
        return str(build_resource_metadata_url(AnyHttpUrl(self.resource)))

    @classmethod
    def from_settings(cls, settings: Settings) -> OAuthConfig | None:
        if not settings.oauth_issuer:
            return None
        if bool(settings.oauth_jwks_url) == bool(settings.oauth_introspection_url):
            raise ConfigError("NEONBLUE_OAUTH_ISSUER is set: set exactly one of NEONBLUE_OAUTH_JWKS_URL and "
                              "NEONBLUE_OAUTH_INTROSPECTION_URL to verify its tokens")
        host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        resource = settings.oauth_resource or f"http://{host}:{settings.http_port}/mcp"
        for name, url in (("NEONBLUE_OAUTH_ISSUER", settings.oauth_issuer), ("NEONBLUE_OAUTH_RESOURCE", resource),
                          ("NEONBLUE_OAUTH_JWKS_URL", settings.oauth_jwks_url),
                          ("NEONBLUE_OAUTH_INTROSPECTION_URL", settings.oauth_introspection_url)):
            if url is not None:
                try:
                    AnyHttpUrl(url)
                except ValueError as exc:
                    raise ConfigError(f"{name}: {url!r} is not an http(s) URL") from exc
        secret = settings.oauth_client_secret
        secret = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        return cls(settings.oauth_issuer, resource, settings.oauth_jwks_url, settings.oauth_introspection_url,
                   settings.oauth_client_id, secret)


class _Verifier(TokenVerifier):
    """The SDK's TokenVerifier hook over `verify`: a refused token is logged with why and answers None (401)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.verify(token)
        except InvalidToken as exc:
            log.info("bearer token refused: %s", exc)
            return None

    async def verify(self, token: str) -> AccessToken:
        raise NotImplementedError


class JwtVerifier(_Verifier):
    """JWT access tokens (RFC 9068) signed by a key of the issuer's JWKS."""

    def __init__(self, config: OAuthConfig) -> None:
        assert config.jwks_url is not None
        self.config = config
        self._keys: dict[str, jwt.PyJWK] = {}
        self._anonymous: list[jwt.PyJWK] = []  # keys without a kid
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> AccessToken:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("not a JWT access token") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken(f"signing algorithm {alg!r} is not accepted")
        key = await self._key(header.get("kid"), alg)
        try:
            claims = jwt.decode(token, key=key.key, algorithms=[alg], leeway=LEEWAY_SECONDS,
                                issuer=self.config.issuer, options={"require": ["exp", "iss", "aud"],
                                                                    "verify_aud": False})
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("the token has expired") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("the token was not issued by the configured issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("the token's signature does not verify") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc
        resource = next((a for a in _audiences(claims.get("aud")) if _same_url(a, self.config.resource)), None)
        if resource is None:
            raise InvalidToken(f"the token's audience is not this resource ({self.config.resource})")
        return _access_token(token, claims, resource)

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        stale = time.monotonic() - self._fetched_at > JWKS_TTL_SECONDS
        key = None if stale else self._find(kid, alg)
        if key is None:  # stale, or a kid we do not know (the issuer rotated its keys): refetch, not too often
            async with self._lock:
                if time.monotonic() - self._fetched_at > JWKS_MIN_REFRESH_SECONDS:
                    await self._fetch()
            key = self._find(kid, alg)
        if key is None:
            raise InvalidToken(f"no key of the issuer's JWKS matches the token (kid {kid!r}, alg {alg})")
        return key

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        candidates = [self._keys[kid]] if kid in self._keys else ([] if kid else self._anonymous)
        return next((k for k in candidates if k.algorithm_name == alg), None)

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as http:
                response = await http.get(self.config.jwks_url)  # type: ignore[arg-type]
                response.raise_for_status()
                document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("fetching the JWKS %s failed: %s", self.config.jwks_url, exc)
            return  # the keys cached so far stay in use
        keys: dict[str, jwt.PyJWK] = {}
        anonymous: list[jwt.PyJWK] = []
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # an unsupported key type: skipped, others still serve
            if key.algorithm_name not in ALGORITHMS:
                continue
            if entry.get("kid"):
                keys[entry["kid"]] = key
            else:
                anonymous.append(key)
        self._keys, self._anonymous = keys, anonymous


class IntrospectionVerifier(_Verifier):
    """Opaque (or any) tokens checked by the issuer's RFC 7662 introspection endpoint."""

    def __init__(self, config: OAuthConfig) -> None:
        assert config.introspection_url is not None
        self.config = config

    async def verify(self, token: str) -> AccessToken:
        auth = (self.config.client_id, self.config.client_secret or "") if self.config.client_id else None
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as http:
                response = await http.post(self.config.introspection_url,  # type: ignore[arg-type]
                                           data={"token": token, "token_type_hint": "access_token"}, auth=auth)
                response.raise_for_status()
                claims = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("token introspection at %s failed: %s", self.config.introspection_url, exc)
            raise InvalidToken("the token could not be introspected") from exc
        if not isinstance(claims, dict) or claims.get("active") is not True:
            raise InvalidToken("the token is not active")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + LEEWAY_SECONDS < time.time():
            raise InvalidToken("the token has expired")
        if claims.get("iss") != self.config.issuer:
            raise InvalidToken("the token was not issued by the configured issuer")
        resource = next((a for a in _audiences(claims.get("aud")) if _same_url(a, self.config.resource)), None)
        if resource is None:
            raise InvalidToken(f"the token's audience is not this resource ({self.config.resource})")
        return _access_token(token, claims, resource)


def build_verifier(config: OAuthConfig) -> JwtVerifier | IntrospectionVerifier:
    return JwtVerifier(config) if config.jwks_url else IntrospectionVerifier(config)


def metadata_routes(config: OAuthConfig) -> list[Route]:
    """RFC 9728 metadata at the resource's own well-known path and at the bare one (clients try both)."""
    # As strings: the metadata model keeps them exactly (an issuer is compared as a string, RFC 8414 §3.3),
    # where AnyHttpUrl(...) would add a trailing slash to a path-less one.
    routes = create_protected_resource_routes(config.resource, [config.issuer],  # type: ignore[arg-type, list-item]
                                              scopes_supported=list(SCOPES), resource_name="NeonBlue")
    if routes[0].path != METADATA_ROOT:
        routes.append(Route(METADATA_ROOT, endpoint=routes[0].endpoint, methods=["GET", "OPTIONS"]))
    return routes


def metadata_paths(config: OAuthConfig) -> frozenset[str]:
    return frozenset({METADATA_ROOT, str(AnyHttpUrl(config.metadata_url).path)})


# ---------------------------------------------------------------- scopes


def has_scope(granted: list[str], needed: str) -> bool:
    return any(s == needed or needed in IMPLIED.get(s, ()) for s in granted)


def tool_scope(tool: Any) -> str:
    """experiments:read for a tool annotated read-only, experiments:write for any other (or unknown: read,
    the router refuses an unknown name itself)."""
    if tool is None:
        return SCOPE_READ
    annotations = getattr(tool, "annotations", None)
    return SCOPE_READ if annotations is not None and annotations.read_only_hint is True else SCOPE_WRITE


def needed_scope(body: bytes, tools: dict[str, Any]) -> tuple[str, str | None, Any]:
    """The scope a JSON-RPC request body needs, the tool that needs it (None: no tool call), and the
    request's id (None when there is none to answer)."""
    try:
        message = json.loads(body) if body else None
    except ValueError:
        return SCOPE_READ, None, None  # the transport answers a parse error
    messages = message if isinstance(message, list) else [message]
    requests = [m for m in messages if isinstance(m, dict)]
    calls = [m for m in requests if m.get("method") == "tools/call" and isinstance(m.get("params"), dict)
             and isinstance(m["params"].get("name"), str)]
    for request in calls:
        name = request["params"]["name"]
        if tool_scope(tools.get(name)) == SCOPE_WRITE:
            return SCOPE_WRITE, name, request.get("id")
    first = requests[0] if requests else {}
    return SCOPE_READ, calls[0]["params"]["name"] if calls else None, first.get("id")


def insufficient_scope_body(needed: str, tool: str | None, request_id: Any, granted: list[str]) -> dict[str, Any]:
    """The 403's body: a JSON-RPC error (an MCP client shows its message; the SDK's does) that also
    carries the refusal's usual `detail`."""
    what = f"tool {tool!r} changes state" if needed == SCOPE_WRITE else "this request reads experiments"
    detail = f"insufficient_scope: {what} and needs scope {needed}; this token has {' '.join(granted) or 'no scope'}"
    return {"jsonrpc": "2.0", "id": request_id,
            "error": {"code": INSUFFICIENT_SCOPE_CODE, "message": detail,
                      "data": {"error": "insufficient_scope", "scope": needed, "tool": tool}},
            "detail": detail}
