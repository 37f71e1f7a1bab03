"""SPEC's error, without any web framework: the one error type of the fleet.

Domain cores raise ``ApiError``; the HTTP layer (``httpkit``) answers it as
``{"error": {"code", "message", ...}}`` with its status, and the Socket.IO
layer answers the same body in the acknowledgement. ``STATUS_CODES`` is the one
map between HTTP statuses and SPEC's error codes, read in both directions.
"""

from __future__ import annotations

from typing import Any

# HTTP status -> SPEC error code, for errors that carry no code of their own (Flask's 404/405,
# a service's bare status). Read backwards (``status_for``) for socket errors raised by code.
STATUS_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "forbidden_type",
    416: "range_not_satisfiable", 429: "overloaded", 500: "internal_error", 503: "unavailable",
}
_CODE_STATUS: dict[str, int] = {code: status for status, code in STATUS_CODES.items()}


def code_for(status: int) -> str:
    """SPEC's code for a bare HTTP status (``bad_request`` for an unknown 4xx, ``unavailable`` for 5xx)."""
    return STATUS_CODES.get(status) or ("unavailable" if status >= 500 else "bad_request")


def status_for(code: str) -> int:
    """The HTTP status of a SPEC code (400 for a code the map does not know)."""
    return _CODE_STATUS.get(code, 400)


class ShownToUsers(Exception):
    """A failure whose message is written for users (no internals: no hosts, paths, driver
    text), so it may travel to them, e.g. as a ``file-status`` ``reason``. Any other
    exception's text stays in the logs and users get a generic message."""


class ApiError(Exception):
    """An error answered as SPEC's JSON error shape, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    @classmethod
    def of(cls, code: str, message: str, **extra: Any) -> ApiError:
        """An error named by its SPEC code; the status follows from ``STATUS_CODES``."""
        return cls(status_for(code), code, message, **extra)

    def body(self) -> dict[str, Any]:
        # None-valued extras are left out: a socket answer never says ``"retry_after": null``.
        extra = {k: v for k, v in self.extra.items() if v is not None}
        return {"error": {"code": self.code, "message": self.message, **extra}}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "bad_request", **extra: Any) -> ApiError:
    return ApiError(400, code, message, **extra)


def unauthorized(message: str = "missing or invalid credentials") -> ApiError:
    return ApiError(401, "unauthorized", message)


def forbidden(message: str = "not allowed") -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(message: str = "not found") -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str, **extra: Any) -> ApiError:
    return ApiError(409, "conflict", message, **extra)


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def forbidden_type(message: str) -> ApiError:
    return ApiError(415, "forbidden_type", message)


def overloaded(message: str, retry_after: int) -> ApiError:
    return ApiError(429, "overloaded", message, retry_after=retry_after)


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message)


class Duplicate(Exception):
    """A store's uniqueness rule refused a row (a taken user name, a pool id already used).

    Raised by a service's real store and by its in-memory stand-in alike, so the use
    cases catch one type whichever store they were given.
    """
