"""Errors every room shares: what a service raises for the caller to read, and bad configuration.

The service errors subclass the MCP SDK's `ToolError`, so an MCP tool that lets one escape
returns `isError` with this exact message (any other exception reaches the
client only as "Error executing tool X"). The REST API maps `status_code`.

Each class has a `kind` (invalid_input, not_found, conflict, refused, confirmation_required, unavailable,
internal): the
word a refusal carries across every hop (`schemas.refusals` puts it in the result's `_meta`), so a
peer's NotFound is raised again as NotFound by the caller, and REST answers 404 for it.
"""

from __future__ import annotations

from mcp.server.mcpserver.exceptions import ToolError


class ConfigError(RuntimeError):
    """Bad configuration: the message names the setting and fits on one line."""


class ServiceError(ToolError):
    """Base class: a clear, specific reason the request cannot be served."""

    status_code = 400
    kind = "refused"


class InvalidInput(ServiceError):
    """The arguments are malformed or out of range."""

    status_code = 422
    kind = "invalid_input"


class NotFound(ServiceError):
    """The named experiment, variant, collection… does not exist."""

    status_code = 404
    kind = "not_found"


class Conflict(ServiceError):
    """The request is valid but not in the current state (e.g. start a running experiment)."""

    status_code = 409
    kind = "conflict"


class QueryRefused(ServiceError):
    """A read-only query tool refused a statement (write, DDL, multi-statement, file access…)."""

    status_code = 400
    kind = "refused"


class ConfirmationRequired(ServiceError):
    """A destructive action waits for the user's go-ahead (stop with a winner, archive, move the traffic of a
    running experiment, an allocation or an autopilot action that changes something).

    `question` says exactly what would happen, for the user: the router asks it through elicitation when
    the client can show it, and otherwise the caller repeats the call with confirm=true and a reason."""

    status_code = 428
    kind = "confirmation_required"

    def __init__(self, message: str, *, question: str | None = None) -> None:
        super().__init__(message)
        self.question = question or message


class BackendUnavailable(ServiceError):
    """A store or backend server is down or timed out."""

    status_code = 503
    kind = "unavailable"


class InternalError(ServiceError):
    """A tool crashed (a bug): the details stay in that server's log, the caller reads one line."""

    status_code = 500
    kind = "internal"


# A refusal's kind -> the class that raises it again on the caller's side of a hop.
KINDS: dict[str, type[ServiceError]] = {
    cls.kind: cls for cls in (InvalidInput, NotFound, Conflict, QueryRefused, ConfirmationRequired, BackendUnavailable,
                              InternalError)
}
