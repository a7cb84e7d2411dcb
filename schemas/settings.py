"""The one settings model of NeonBlue.

Every process (router, single servers, stream processor, CLI, tests) reads its
configuration here, from the environment or a `.env` file. An unset store URL
means "use the embedded default": pgserver for PostgreSQL, chDB for ClickHouse,
a PersistentClient for Chroma and the tansu broker for Kafka, all under
`NEONBLUE_HOME`.
"""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_TOPICS = ("experiments_events", "user_events", "analytics_events", "experiment_metrics")


class Settings(BaseSettings):
    """Configuration for every NeonBlue process. Field names map to env vars."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    neonblue_home: Path = Field(
        default=Path("~/.neonblue"),
        description="Data and run directory for the embedded stack (pgdata, chdb, chroma, pid files, logs).",
    )
    database_url: str | None = Field(
        default=None, description="PostgreSQL DSN. Unset: the embedded pgserver under NEONBLUE_HOME."
    )
    clickhouse_url: str | None = Field(
        default=None, description="ClickHouse HTTP URL (clickhouse-connect). Unset: embedded chDB."
    )
    clickhouse_database: str = Field(default="neonblue", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Limits of the clickhouse_query tool (user SQL), enforced by the engine per query.
    clickhouse_query_timeout_seconds: int = Field(
        default=10, ge=1, le=600, description="clickhouse_query: execution-time limit of one query (seconds)."
    )
    clickhouse_query_max_memory_mb: int = Field(
        default=1024, ge=16, le=1_048_576, description="clickhouse_query: memory one query may use (MiB)."
    )
    clickhouse_query_max_result_rows: int = Field(
        default=10_000, ge=1, le=10_000,
        description="clickhouse_query: rows the engine returns at most (the tool's max_rows is capped by it).",
    )
    clickhouse_query_max_result_mb: int = Field(
        default=50, ge=1, le=4096, description="clickhouse_query: result size the engine returns at most (MiB)."
    )
    clickhouse_query_concurrency: int = Field(
        default=4, ge=1, le=64,
        description="clickhouse_query: queries running at once (each may use the memory limit); more wait.",
    )
    chroma_url: str | None = Field(
        default=None, description="Chroma server URL (HttpClient). Unset: embedded PersistentClient."
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers. Unset: the embedded tansu broker."
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Anthropic API key for the agent chat. Unset: offline mode."
    )
    anthropic_base_url: str | None = Field(default=None, description="Override the Anthropic API base URL.")
    anthropic_model: str = Field(default="claude-sonnet-4-5", description="Model used by `neonblue chat`.")

    http_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("NEONBLUE_HTTP_HOST", "HTTP_HOST"))
    http_port: int = Field(default=8765, ge=1, le=65535, validation_alias=AliasChoices("NEONBLUE_HTTP_PORT", "HTTP_PORT"))
    http_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("NEONBLUE_HTTP_TOKEN", "HTTP_TOKEN"),
        description="Bearer token required on /mcp, /api and /metrics. Mandatory on non-loopback addresses; "
        "an empty or whitespace-only value counts as unset.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("NEONBLUE_ALLOWED_HOSTS"),
        description="Extra Host header values the HTTP app accepts (comma-separated or a JSON list): `name`, "
        "`name:port`, `name:*` (any port) or `*` (any host). The serving address, and the loopback names when "
        "serving on loopback or on every interface, are always accepted. Bound to 0.0.0.0/:: with none "
        "listed, the Host header is not checked (the token, mandatory there, guards every route).",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("NEONBLUE_ALLOWED_ORIGINS"),
        description="Browser origins (e.g. `https://app.example.com`, `http://localhost:*`) allowed besides the "
        "same origin; a request whose Origin is neither is refused (403).",
    )

    embedded_pg_port: int = Field(
        default=25432, ge=1, le=65535, validation_alias=AliasChoices("NEONBLUE_PG_PORT", "EMBEDDED_PG_PORT"),
        description="Port of the embedded PostgreSQL.",
    )
    embedded_kafka_port: int = Field(
        default=19092, ge=1, le=65535, validation_alias=AliasChoices("NEONBLUE_KAFKA_PORT", "EMBEDDED_KAFKA_PORT"),
        description="Port of the embedded tansu broker.",
    )

    kafka_topics: list[str] = Field(default_factory=lambda: list(DEFAULT_TOPICS))
    kafka_group_id: str = "neonblue-stream"
    kafka_dlq_topic: str = "neonblue.dlq"

    backends: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("NEONBLUE_BACKENDS"),
        description='Remote backends, e.g. {"clickhouse": "stdio:python -m mcp_servers.clickhouse", '
        '"chromadb": "http://host:8765/mcp"}. Unlisted servers run in-process.',
    )
    backend_timeout: float = Field(default=30.0, gt=0, validation_alias=AliasChoices("NEONBLUE_BACKEND_TIMEOUT"))
    conformance_probes: bool = Field(
        default=False, validation_alias=AliasChoices("NEONBLUE_CONFORMANCE_PROBES"),
        description="Serve the MCP conformance suite's diagnostic tools and prompt (tests only; never in production).")
    tool_profile: Literal["core", "full"] = Field(
        default="full", validation_alias=AliasChoices("NEONBLUE_TOOL_PROFILE"),
        description="The tools the router lists: full = every tool; core = a dozen for the experiment journey "
        "plus find_tools, which finds any other tool by meaning (all stay callable by name).",
    )
    rate_limit_per_minute: int = Field(
        default=600, ge=1, validation_alias=AliasChoices("NEONBLUE_RATE_LIMIT"),
        description="Requests per minute per principal (the token, or the client address without one) on /mcp "
        "and /metrics.",
    )
    api_rate_limit_per_minute: int = Field(
        default=120_000, ge=1, validation_alias=AliasChoices("NEONBLUE_API_RATE_LIMIT"),
        description="Per-principal limit on /api (application backends assign users at high rates).",
    )
    auth_failure_limit_per_minute: int = Field(
        default=30, ge=1, validation_alias=AliasChoices("NEONBLUE_AUTH_FAILURE_LIMIT"),
        description="Failed bearer-token attempts per minute per client address; past it, that address gets 429 "
        "on every authenticated route until its budget refills.",
    )
    # /mcp as an OAuth 2.1 resource server beside the static token (mcp_router/web/oauth.py); off unless set.
    oauth_issuer: str | None = Field(
        default=None, validation_alias=AliasChoices("NEONBLUE_OAUTH_ISSUER"),
        description="OAuth authorization server whose access tokens /mcp accepts (the `iss` they must carry). "
        "Set: /mcp serves RFC 9728 metadata and accepts its tokens with scopes experiments:read / "
        "experiments:write, beside the static token. Needs NEONBLUE_OAUTH_JWKS_URL or "
        "NEONBLUE_OAUTH_INTROSPECTION_URL.",
    )
    oauth_jwks_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NEONBLUE_OAUTH_JWKS_URL"),
        description="The issuer's JWKS: JWT access tokens are verified against its keys (asymmetric algorithms only).",
    )
    oauth_introspection_url: str | None = Field(
        default=None, validation_alias=AliasChoices("NEONBLUE_OAUTH_INTROSPECTION_URL"),
        description="The issuer's RFC 7662 introspection endpoint, instead of a JWKS (opaque tokens).",
    )
    oauth_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("NEONBLUE_OAUTH_CLIENT_ID"),
        description="Client id NeonBlue authenticates with at the introspection endpoint (HTTP Basic).",
    )
    oauth_client_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("NEONBLUE_OAUTH_CLIENT_SECRET"),
        description="Client secret for the introspection endpoint.",
    )
    oauth_resource: str | None = Field(
        default=None, validation_alias=AliasChoices("NEONBLUE_OAUTH_RESOURCE"),
        description="This server's resource URL, the audience tokens must name (e.g. https://mcp.example.com/mcp). "
        "Unset: http://<NEONBLUE_HTTP_HOST>:<NEONBLUE_HTTP_PORT>/mcp.",
    )

    embedding_provider: Literal["local", "chroma-default", "openai"] = Field(
        default="local", description="local = all-MiniLM-L6-v2 via sentence-transformers, offline."
    )
    autopilot_interval: float = Field(
        default=60.0, gt=0, validation_alias=AliasChoices("NEONBLUE_AUTOPILOT_INTERVAL"),
        description="Seconds between autopilot evaluations of one experiment by the stream's optimization loop.",
    )
    assignment_writes: Literal["behind", "before_answer", "durable"] = Field(
        default="behind", validation_alias=AliasChoices("NEONBLUE_ASSIGNMENT_WRITES"),
        description="When get_variant records a new user's assignment (and its exposure): behind = just after "
        "answering, batched within ~20 ms (a crash of the serving process loses the queued ones: those users "
        "get the same variant from the hash on their next call, which records it then); before_answer = "
        "committed before the answer; durable = committed and flushed to disk before the answer. behind and "
        "before_answer commit with synchronous_commit=off (a database crash may forget the last fraction of a "
        "second of assignments).")
    autopilot_unattended: bool = Field(
        default=False, validation_alias=AliasChoices("NEONBLUE_AUTOPILOT_UNATTENDED"),
        description="Let the stream's optimization loop carry out the autopilot's actions (re-weight, roll back, "
        "pause, ship) with nobody confirming each: the operator's standing confirmation, written as the reason. "
        "Off (default): the loop records what it would do as a recommendation and changes nothing.")
    environment: Literal["production", "staging", "development"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias=AliasChoices("NEONBLUE_LOG_LEVEL", "LOG_LEVEL"),
        description="Log level on stderr. `neonblue serve` over stdio logs at WARNING unless this is set (or "
        "--verbose): each tool call would otherwise write lines to the client's log.",
    )

    @field_validator("http_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: Any) -> Any:
        """An empty or whitespace token is no token (it must never turn auth off, nor be accepted)."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            raw = raw.strip()
            return raw or None
        return value

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("neonblue_home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    # Paths of the embedded stack; all derived from NEONBLUE_HOME.
    @property
    def pg_data_dir(self) -> Path:
        return self.neonblue_home / "pgdata"

    @property
    def chdb_dir(self) -> Path:
        return self.neonblue_home / "chdb"

    @property
    def chroma_dir(self) -> Path:
        return self.neonblue_home / "chroma"

    @property
    def run_dir(self) -> Path:
        return self.neonblue_home / "run"

    @property
    def log_dir(self) -> Path:
        return self.neonblue_home / "logs"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"postgresql://postgres@127.0.0.1:{self.embedded_pg_port}/postgres"

    @property
    def effective_kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.embedded_kafka_port}"

    @property
    def http_is_loopback(self) -> bool:
        if self.http_host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.http_host).is_loopback
        except ValueError:
            return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return Settings()
