"""The one error hierarchy.

    BridgeError
    ├── JsonRpcError(code, message, data)   crosses the wire as a JSON-RPC error
    │   ├── MethodNotFound       -32601
    │   ├── InvalidParams        -32602
    │   │   └── InvalidMeta                 a modern request without its required ``_meta``
    │   ├── InternalError        -32603
    │   │   ├── StoreUnavailable            Redis could not be reached or failed
    │   │   └── DispatchError               the Celery broker refused the message
    │   ├── LimitExceeded        -32000     a per-owner limit (in flight, per minute) is hit
    │   ├── HeaderMismatch       -32020     (2026-07-28) headers do not match the body
    │   ├── MissingCapability    -32021     (2026-07-28) the client must declare a capability
    │   └── UnsupportedVersion   -32022     (2026-07-28) unknown protocol version
    ├── HttpError(status, message, code)    a refusal before any method runs (400, 404, 413, ...)
    │   └── Unauthorized         401        no valid bearer token
    └── ToolFailed                          (workers) a run failed, its outcome already in
                                            the registry: what Celery and Flower see of it

Redis and Celery exceptions are translated where they are raised (``bridge.shared.clients``,
``bridge.publisher``); everything above sees only these classes. Which HTTP status carries
a JSON-RPC error is the protocol era's choice (``bridge.eras``); ``bridge.faults`` turns any
exception into its answer, in one place.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: -32000..-32019 are left to implementations (MCP reserves -32020..-32099).
LIMIT_EXCEEDED = -32000
HEADER_MISMATCH = -32020
MISSING_CAPABILITY = -32021
UNSUPPORTED_VERSION = -32022


class BridgeError(Exception):
    pass


class JsonRpcError(BridgeError):
    code = INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        if code is not None:
            self.code = code

    @property
    def public(self) -> str:
        """The message a client is told."""
        return self.message


class MethodNotFound(JsonRpcError):
    code = METHOD_NOT_FOUND


class InvalidParams(JsonRpcError):
    code = INVALID_PARAMS


class InvalidMeta(InvalidParams):
    pass


class LimitExceeded(JsonRpcError):
    code = LIMIT_EXCEEDED


class HeaderMismatch(JsonRpcError):
    code = HEADER_MISMATCH


class MissingCapability(JsonRpcError):
    code = MISSING_CAPABILITY


class UnsupportedVersion(JsonRpcError):
    code = UNSUPPORTED_VERSION


class InternalError(JsonRpcError):
    """A fault of the bridge's own services. Its message (Redis's or the broker's words:
    addresses, script names, key types) is for the log; a client is told ``told``."""

    code = INTERNAL_ERROR
    told = "Internal error"

    @property
    def public(self) -> str:
        return self.told


class StoreUnavailable(InternalError):
    told = "Internal error: the task store is unavailable"


class DispatchError(InternalError):
    told = "Internal error: the task queue is unavailable"


def execution_error(reason: str, message: str, **data: Any) -> dict[str, Any]:
    """The JSON-RPC error object of a task that failed outside its tool: the worker was lost,
    the call could not be queued, no worker knows it. Such a task is ``failed`` with this
    ``error`` in both eras (a tool that raised is a tool result, ``isError``, instead), and
    ``data.reason`` names what happened for a client that wants to tell the cases apart."""
    return {"code": INTERNAL_ERROR, "message": message, "data": {"reason": reason, **data}}


class HttpError(BridgeError):
    """A request refused before any method runs: answered with ``status`` and a JSON-RPC
    error without an id (``code``, ``message``), with ``headers`` (``Allow``, say)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: int = INVALID_REQUEST,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers


class Unauthorized(HttpError):
    def __init__(self, message: str) -> None:
        super().__init__(401, f"Unauthorized: {message}", headers={"WWW-Authenticate": "Bearer"})


class ConfigError(BridgeError):
    """The configuration names something that cannot be used (a module that does not import,
    say): the process stops at start with this message."""


class ToolFailed(BridgeError):
    """Raised by a worker after recording a run's failure in the registry, so Celery (and
    Flower) show the run failed without the tool's error text, which may quote arguments."""
