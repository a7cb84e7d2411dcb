"""Errors every room shares: what a service raises for the caller to read, and bad configuration.

The service errors subclass the MCP SDK's `ToolError`, so an MCP tool that lets one escape
returns `isError` with this exact message (any other exception reaches the
client only as "Error executing tool X"). The REST API maps `status_code`.
"""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ToolError


class ConfigError(RuntimeError):
    """Bad configuration: the message names the setting and fits on one line."""


class ServiceError(ToolError):
    """Base class: a clear, specific reason the request cannot be served."""

    status_code = 400


class InvalidInput(ServiceError):
    """The arguments are malformed or out of range."""

    status_code = 422


class NotFound(ServiceError):
    """The named experiment, variant, collection… does not exist."""

    status_code = 404


class Conflict(ServiceError):
    """The request is valid but not in the current state (e.g. start a running experiment)."""

    status_code = 409


class QueryRefused(ServiceError):
    """A read-only query tool refused a statement (write, DDL, multi-statement, file access…)."""

    status_code = 400


class BackendUnavailable(ServiceError):
    """A store or backend server is down or timed out."""

    status_code = 503
