"""SnapTrade-shaped error answers raised by the emulator's state and handlers.

SnapTrade answers errors with ``{"detail": ..., "status_code": N, "code": "NNNN"}``; ``code`` is a
string. The constructors below carry the codes listed in the project's SnapTrade facts, so that
every error the emulator produces has the code a real client would have to handle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ApiProblem", "error_body"]

# Codes for statuses SnapTrade documents; others fall back to the status number as a string
# (SnapTrade documents no code for them, and an invented four-digit one would mislead).
_DEFAULT_CODES: Mapping[int, str] = {
    400: "1012",
    401: "1076",
    402: "3003",
    403: "1066",
    404: "1011",
    425: "3012",
    429: "0000",
    500: "1000",
    503: "3002",
}

_DEFAULT_DETAILS: Mapping[int, str] = {
    400: "Unable to verify data sent",
    401: "Unable to verify signature sent",
    402: "Unable to sync with brokerage account because the connection is disabled.",
    403: "User does not have permission to access this resource",
    404: "The requested resource does not exist.",
    410: "This endpoint is no longer available for your API key.",
    425: "The resource is currently being populated. Please try again later.",
    429: "Request was throttled.",
    500: "Unexpected error",
    501: "Not implemented by the SnapTrade emulator.",
    502: "Bad gateway",
    503: "The brokerage API is temporarily unavailable. Please try again later.",
    504: "Gateway timeout",
}


def error_body(status: int, code: str | None = None, detail: str | None = None) -> dict[str, Any]:
    """Return SnapTrade's error body for ``status``, with its usual code and detail by default."""
    return {
        "detail": detail if detail is not None else _DEFAULT_DETAILS.get(status, "Error"),
        "status_code": status,
        "code": code if code is not None else _DEFAULT_CODES.get(status, str(status)),
    }


class ApiProblem(Exception):
    """An error answer: raise it anywhere below a handler to send a SnapTrade-shaped error.

    Attributes:
        status: HTTP status.
        code: SnapTrade's string error code.
        detail: Human-readable message.
        headers: Extra response headers (``Retry-After`` on throttling).
    """

    def __init__(
        self,
        status: int,
        code: str | None = None,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = error_body(status, code, detail)
        super().__init__(f"{status} {body['code']}: {body['detail']}")
        self.status = status
        self.code: str = body["code"]
        self.detail: str = body["detail"]
        self.headers: Mapping[str, str] = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body to send."""
        return {"detail": self.detail, "status_code": self.status, "code": self.code}

    # Named constructors for the errors SnapTrade documents, so call sites read like the docs.

    @classmethod
    def bad_signature(cls, detail: str = "Unable to verify signature sent") -> ApiProblem:
        """401, code 1076: wrong key, tampered request, unknown client or stale timestamp."""
        return cls(401, "1076", detail)

    @classmethod
    def bad_user(cls) -> ApiProblem:
        """401, code 1083: wrong or missing ``userId`` / ``userSecret``."""
        return cls(401, "1083", "Invalid userID or userSecret provided")

    @classmethod
    def not_found(cls, what: str) -> ApiProblem:
        """404, code 1011."""
        return cls(404, "1011", f"{what} not found.")

    @classmethod
    def invalid(cls, detail: str) -> ApiProblem:
        """400, code 1012: invalid input."""
        return cls(400, "1012", detail)

    @classmethod
    def connection_disabled(cls) -> ApiProblem:
        """402, code 3003: the connection is disabled; reconnect through the portal."""
        return cls(402, "3003")

    @classmethod
    def populating(cls) -> ApiProblem:
        """425, code 3012: the connection's first sync has not finished."""
        return cls(425, "3012")
