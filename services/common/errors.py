"""SPEC's error, without any web framework: domain cores raise it, HTTP and
Socket.IO layers answer it as ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered as SPEC's JSON error shape, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}
