"""Reading SnapTrade's response headers: case-insensitive lookup, numbers, delays.

Shared by the rate-limit policy (feedback) and the error mapping (a 429's ``retry_after``), so
both read ``Retry-After`` and ``X-RateLimit-*-Reset`` the same way.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["Headers", "as_number", "header", "parse_retry_after", "seconds_from"]


class Headers(dict[str, str]):
    """Response headers: a plain ``dict`` (JSON, pickle, ``==``) whose lookups ignore case, as HTTP's do.

    Names keep the spelling the server sent; ``headers["x-request-id"]`` and ``.get("X-Request-ID")``
    find the same header. Built once per response, with its lower-case index, so reading it costs
    one dict lookup; it is meant to be read, not changed (the index does not follow changes).
    """

    __slots__ = ("_lower",)

    def __init__(self, raw: Mapping[str, str] | None = None) -> None:
        super().__init__(raw or {})
        self._lower = {name.lower(): value for name, value in self.items()}

    def __missing__(self, name: str) -> str:
        value = self._lower.get(name.lower()) if isinstance(name, str) else None
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = dict.get(self, name)
        if value is None and isinstance(name, str):
            return self._lower.get(name.lower(), default)
        return value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Headers, (dict(self),))


def header(headers: Mapping[str, str], name: str) -> str | None:
    if isinstance(headers, Headers):
        found: str | None = headers.get(name)
        return found
    # HTTP header names are case-insensitive and transports differ in how they spell them.
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def as_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def seconds_from(value: str | None, now: float) -> float | None:
    # "*-Reset" is documented as seconds; accept a Unix timestamp too, which some gateways send.
    number = as_number(value)
    if number is None:
        return None
    if number > 1e9:
        number -= now
    return max(0.0, number)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date), or ``None``."""
    if value is None or not value.strip():
        return None
    number = as_number(value)
    if number is not None:
        return max(0.0, number)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
