"""Verifying a SnapTrade webhook: signature, spelling and replay window, before anything reads it.

SnapTrade signs the payload, not the bytes: ``Signature`` is
``base64(HMAC-SHA256(consumer_key, canonical_json(payload)))`` where ``canonical_json`` is
``json.dumps(payload, separators=(",", ":"), sort_keys=True)`` with Python's default
``ensure_ascii=True`` (the verification snippet of SnapTrade's webhook page). So non-ASCII text is
canonicalised as lowercase ``\\uXXXX`` escapes (UTF-16 surrogate pairs above U+FFFF), whatever
encoding the body used.

Because a signature over a value cannot see how that value was spelled, the verifier also checks
that every token of the body is spelled the way Python's encoder spells it (whitespace between
tokens and the order of object members are free; escapes, number forms and duplicate keys are not).
A body with ``\\u00E9`` instead of ``\\u00e9``, ``1E5`` instead of ``1e5`` or a repeated key is
refused, so that any single-byte change of a canonical body is refused, not only those that change
the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeWebhookMalformedError,
    SnapTradeWebhookSignatureError,
    SnapTradeWebhookStaleError,
)
from aims_snaptrade.redaction import register_secret, register_signature
from aims_snaptrade.webhooks.events import WebhookEvent, parse_event

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "MAX_AHEAD_SECONDS",
    "SIGNATURE_HEADER",
    "SNAPTRADE_RETRY_DELAYS",
    "canonical_json",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "Signature"
"""The header SnapTrade puts the signature in."""

SNAPTRADE_RETRY_DELAYS: tuple[float, ...] = (1800.0, 3600.0, 7200.0)
"""SnapTrade's redelivery schedule: 3 retries, backoff from 30 minutes (the last one 3.5 h after the event)."""

DEFAULT_TOLERANCE_SECONDS = 6 * 3600.0
"""Largest accepted age of ``eventTimestamp``: SnapTrade's whole retry schedule (3.5 h) with 2.5 h of margin.

SnapTrade redelivers the same signed payload with its original ``eventTimestamp``, so a shorter
window (SnapTrade's sample uses 300 s) refuses every redelivery and loses the webhooks whose first
delivery failed. A replay inside the window is harmless once the dedupe store remembers the id
(see ``docs/webhooks.md``, threat model)."""

MAX_AHEAD_SECONDS = 300.0
"""Largest accepted distance of an ``eventTimestamp`` ahead of the local clock (clock skew), capped by the window."""

_MAX_BODY_BYTES = 1 << 20  # SnapTrade's payloads are a few hundred bytes; refuse megabytes unread
# JSON's insignificant whitespace, outside strings (strings are matched first and kept).
_OUTSIDE_STRINGS = re.compile(r'("(?:[^"\\]|\\.)*")|[ \t\n\r]+', re.DOTALL)

Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


def canonical_json(payload: Any) -> str:
    """The text SnapTrade signs: sorted keys, no spaces, ASCII with ``\\uXXXX`` escapes."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False)


def sign_webhook(payload: Mapping[str, Any], consumer_key: str) -> str:
    """The ``Signature`` header value for ``payload`` (what SnapTrade and the emulator send)."""
    digest = hmac.new(consumer_key.encode(), canonical_json(payload).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_webhook(
    headers: Headers,
    body: bytes | str,
    *,
    consumer_key: str,
    previous_consumer_keys: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: Callable[[], float] = time.time,
) -> WebhookEvent:
    """Verify a delivery and return its typed event.

    Checks, in order: the body is at most 1 MiB of UTF-8 JSON holding an object without repeated
    keys (else :class:`~aims_snaptrade.errors.SnapTradeWebhookMalformedError`); the ``Signature``
    header (any case) matches the payload signed with ``consumer_key`` (or, during a key rotation,
    one of ``previous_consumer_keys``), compared in constant time,
    and every token of the body is spelled canonically (else
    :class:`~aims_snaptrade.errors.SnapTradeWebhookSignatureError`); ``eventTimestamp`` is a
    timezone-aware ISO 8601 time (else malformed) at most ``tolerance`` seconds old and at most
    ``min(tolerance, MAX_AHEAD_SECONDS)`` ahead of ``now()`` (else
    :class:`~aims_snaptrade.errors.SnapTradeWebhookStaleError`); the payload has a
    ``webhookId`` (or the misspelt ``webookId`` of SnapTrade's documented sample) and an
    ``eventType`` (else malformed).

    Both payload shapes verify the same way: API-key payloads (``clientId``) and OAuth payloads
    (``schemaVersion: "oauth_v1"``, ``oauthClientId``, ``connectionId``). Sign with the key of the
    application SnapTrade delivers to.

    Args:
        headers: The request headers, as a mapping or as (name, value) pairs (ASGI's raw headers).
        body: The raw request body.
        consumer_key: The key the payload must be signed with. Registered for redaction.
        previous_consumer_keys: Keys also accepted during a consumer-key rotation (the overlap of
            ``docs/operations.md``); empty outside one. Registered for redaction.
        tolerance: The replay window in seconds (default :data:`DEFAULT_TOLERANCE_SECONDS`, 6 h:
            SnapTrade's whole retry schedule with margin).
        now: The clock, Unix seconds (tests pass a fixed one).

    Raises:
        SnapTradeConfigurationError: ``consumer_key`` (or a previous key) empty, or ``tolerance``
            not positive.
    """
    keys = signing_keys(consumer_key, previous_consumer_keys, where="verify_webhook")
    if not isinstance(tolerance, int | float) or isinstance(tolerance, bool) or not tolerance > 0:
        raise SnapTradeConfigurationError(f"tolerance must be positive seconds, got {tolerance!r}.")
    payload, text = _parse_body(body)
    _check_signature(headers, payload, text, keys)
    _check_fresh(payload, tolerance, now())
    return parse_event(payload)


def _parse_body(body: bytes | str) -> tuple[dict[str, Any], str]:
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body)
        if len(raw) > _MAX_BODY_BYTES:
            raise SnapTradeWebhookMalformedError(f"The webhook body is larger than {_MAX_BODY_BYTES} bytes.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SnapTradeWebhookMalformedError(f"The webhook body is not UTF-8 (byte {exc.start}).") from None
    elif isinstance(body, str):
        text = body
    else:
        raise SnapTradeWebhookMalformedError(f"The webhook body must be bytes or str, got {type(body).__name__}.")
    try:
        payload = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        # json's messages name a position, never the content, so they are safe to repeat.
        reason = str(exc) if isinstance(exc, json.JSONDecodeError | _RepeatedKey) else "invalid JSON"
        raise SnapTradeWebhookMalformedError(f"The webhook body is not a JSON payload: {reason}.") from None
    if not isinstance(payload, dict):
        raise SnapTradeWebhookMalformedError("The webhook body must be a JSON object.")
    return payload, text


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key makes the payload ambiguous (which one did the signer see?): refuse it.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _RepeatedKey("an object repeats a key")
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _header(headers: Headers, name: str) -> list[str]:
    wanted = name.lower()
    items = headers.items() if isinstance(headers, Mapping) else headers
    found = []
    for key, value in items:
        key_text = key.decode("latin-1") if isinstance(key, bytes) else key
        if key_text.lower() == wanted:
            found.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return found


def signing_keys(consumer_key: object, previous: object, *, where: str) -> tuple[str, ...]:
    """The current key then the previous ones, checked and registered for redaction."""
    if not isinstance(consumer_key, str) or not consumer_key:
        raise SnapTradeConfigurationError(f"{where} needs the consumer key as a non-empty string.")
    if isinstance(previous, str) or not isinstance(previous, Iterable):
        raise SnapTradeConfigurationError(
            f"{where}: previous_consumer_keys must be a list of keys (not one string), got {type(previous).__name__}."
        )
    keys = [consumer_key]
    for key in previous:
        if not isinstance(key, str) or not key:
            raise SnapTradeConfigurationError(f"{where}: every previous consumer key must be a non-empty string.")
        if key not in keys:
            keys.append(key)
    for key in keys:
        register_secret(key, kind="key")
    return tuple(keys)


def _check_signature(headers: Headers, payload: dict[str, Any], text: str, keys: Sequence[str]) -> None:
    values = _header(headers, SIGNATURE_HEADER)
    if len(values) != 1 or not values[0].strip():
        problem = "has no Signature header" if not values or not values[0].strip() else "has several Signature headers"
        raise SnapTradeWebhookSignatureError(f"The webhook {problem}.")
    # Compare the base64 text, not decoded bytes: a changed padding bit must not decode the same.
    # Every key is compared (no early exit), so timing does not tell which key matched.
    given = values[0].strip().encode("utf-8", "replace")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(sign_webhook(payload, key).encode("ascii"), given)
    if not matched:
        raise SnapTradeWebhookSignatureError("The webhook signature does not match its payload.")
    # A genuine signature is masked in the library's logs wherever it might show up. Forged ones
    # are not registered: a flood of them would only evict genuine entries from the registry.
    register_signature(values[0].strip())
    if not _spelled_canonically(payload, text):
        raise SnapTradeWebhookSignatureError(
            "The webhook body spells a value differently from what was signed (escapes, number form or keys)."
        )


def _spelled_canonically(payload: dict[str, Any], text: str) -> bool:
    """True when ``text`` is ``payload`` as Python's encoder writes it, up to whitespace and member order."""
    compact = _OUTSIDE_STRINGS.sub(lambda m: m.group(1) or "", text)
    for ascii_only in (True, False):
        if compact == json.dumps(payload, separators=(",", ":"), ensure_ascii=ascii_only):
            return True
    return False


def _check_fresh(payload: dict[str, Any], tolerance: float, now: float) -> None:
    stamp = payload.get("eventTimestamp")
    if not isinstance(stamp, str):
        raise SnapTradeWebhookMalformedError("The webhook payload has no eventTimestamp string.")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise SnapTradeWebhookMalformedError("The webhook eventTimestamp is not an ISO 8601 time.") from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise SnapTradeWebhookMalformedError("The webhook eventTimestamp has no UTC offset.")
    age = now - when.timestamp()
    if age > tolerance or -age > min(tolerance, MAX_AHEAD_SECONDS):
        direction = "old" if age > 0 else "ahead of this clock"
        limit = tolerance if age > 0 else min(tolerance, MAX_AHEAD_SECONDS)
        raise SnapTradeWebhookStaleError(
            f"The webhook event is {abs(age):.0f} s {direction}, outside the {limit:g} s replay window.",
            age_seconds=age,
        )
