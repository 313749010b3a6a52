"""The one rule for identifiers and short texts every store and record accepts.

An id (user, account, request) is written to files, tables, log lines and audit records. It must
be text, non-empty, bounded, and free of control characters: a CR, LF or ESC in an id would let
whoever chose it forge or hide log lines (log injection), a NUL cannot be stored in PostgreSQL
text, and an unbounded id would let one caller fill a store. The limits are documented in
docs/compliance.md ("Limits").
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
from collections.abc import Callable

from aims_snaptrade.errors import SnapTradeValidationError

__all__ = ["MAX_ID_LENGTH", "MAX_TEXT_LENGTH", "check_id", "check_number", "check_text", "keyed_ids"]

MAX_ID_LENGTH = 1024
"""Characters in a user, account or request id."""
MAX_TEXT_LENGTH = 256
"""Characters in a short text (a consent's disclosure version or source, an audit action)."""

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _checked(name: str, value: object, limit: int, what: str) -> str:
    if not isinstance(value, str):
        raise SnapTradeValidationError(f"{name} must be a string, got {type(value).__name__}.")
    if not value.strip():
        raise SnapTradeValidationError(f"{name} must be a non-empty {what}.")
    if len(value) > limit:
        raise SnapTradeValidationError(
            f"{name} has {len(value)} characters; at most {limit} are accepted.",
            hint=f"Use a shorter {what}.",
        )
    found = _CONTROL.search(value)
    if found is not None:
        raise SnapTradeValidationError(
            f"{name} contains the control character U+{ord(found.group()):04X} at position {found.start()}; "
            "control characters (NUL, CR, LF, ESC, ...) are refused.",
            hint=f"Use a {what} of printable characters.",
        )
    return value


def check_id(value: object, name: str = "user_id", *, limit: int = MAX_ID_LENGTH) -> str:
    """``value`` when it is a valid id; otherwise a :class:`SnapTradeValidationError` saying why."""
    return _checked(name, value, limit, "identifier")


def check_text(value: object, name: str, *, limit: int = MAX_TEXT_LENGTH) -> str:
    """``value`` when it is a valid short text (non-empty, bounded, no control characters)."""
    return _checked(name, value, limit, "text")


def check_number(value: object, name: str, *, minimum: float = 0.0, maximum: float = 1e15) -> float:
    """``value`` as a float when it is a finite real number in ``[minimum, maximum]`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SnapTradeValidationError(f"{name} must be a number, got {type(value).__name__}.")
    number = float(value)
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise SnapTradeValidationError(f"{name} must be a finite number between {minimum:g} and {maximum:g}.")
    return number


def keyed_ids(secret: str, purpose: str) -> Callable[[str], str]:
    """A keyed hash of ids for the keys of shared infrastructure (Redis budgets, webhook claims).

    ``"h-"`` and 32 hex digits of ``HMAC-SHA256(HMAC(secret, purpose), id)``: stable for every
    replica holding the same secret (the consumer key), so they still share one key per id, while
    whoever reads the keys (a Redis dump, a monitoring tool) learns no id and cannot test guesses
    without the secret. Remembers the last 4,096 ids (one HMAC per call would cost more than the
    lookups it keys).
    """
    derived = hmac.new(secret.encode(), f"aims-snaptrade {purpose} v1".encode(), hashlib.sha256).digest()

    @functools.lru_cache(maxsize=4096)
    def hashed(value: str) -> str:
        return "h-" + hmac.new(derived, value.encode(), hashlib.sha256).hexdigest()[:32]

    return hashed
