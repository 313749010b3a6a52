"""Confirmation tokens: an HMAC binding one preview's exact terms, account, user and expiry.

A token proves the order being placed is the one that was previewed and shown; it says nothing
by itself about use, which the order-intent journal records (a preview's ``client_order_id`` can
be journaled once). The key is per client (random) unless ``SNAPTRADE_CONFIRMATION_KEY`` gives
one that every replica shares, so a preview made by one replica can be placed by another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from aims_snaptrade.redaction import register_secret

__all__ = ["ConfirmationSigner"]

_PREFIX = "stc1."


class ConfirmationSigner:
    """Signs and checks confirmation tokens with one HMAC-SHA256 key."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)
        if len(self._key) < 16:
            raise ValueError("a confirmation key needs at least 16 bytes")
        register_secret(base64.b64encode(self._key).decode())

    @classmethod
    def from_text(cls, text: str | None) -> ConfirmationSigner:
        """A signer keyed by ``text`` (a configured key), or by a fresh random key when ``None``."""
        return cls(text.encode() if text is not None else None)

    def sign(self, fields: Mapping[str, Any]) -> str:
        """The token for ``fields`` (canonical JSON: sorted keys, no spaces)."""
        canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), default=str)
        digest = hmac.new(self._key, canonical.encode(), hashlib.sha256).digest()
        return _PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, fields: Mapping[str, Any], token: object) -> bool:
        """``True`` when ``token`` was issued by this key for exactly ``fields`` (constant time)."""
        if not isinstance(token, str):
            return False
        return hmac.compare_digest(self.sign(fields).encode(), token.encode())

    def __repr__(self) -> str:
        return "ConfirmationSigner(key=<hidden>)"
