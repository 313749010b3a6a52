"""SnapTrade request signatures, as the emulator verifies them.

A signed request carries ``clientId`` and ``timestamp`` (Unix seconds) in its query string and a
``Signature`` header::

    Signature = base64(HMAC-SHA256(consumer_key, canonical_json))
    canonical_json = json.dumps({"content": body, "path": path, "query": query},
                                separators=(",", ":"), sort_keys=True)

``body`` is the parsed JSON body, or ``None`` when there is none or it is ``{}``; ``query`` is the
raw query string exactly as sent (order and encoding included); ``path`` is the request path, with
or without the ``/api/v1`` prefix: SnapTrade's documentation signs the full path while the Python
SDK 13.x signs it without the prefix, and the real API accepts both.

:func:`sign` is public so that tests can build signed requests by hand (raw urllib3 / aiohttp).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["canonical_json", "sign", "verify"]


def canonical_json(path: str, query: str, content: Any) -> str:
    """The string SnapTrade signs for a request."""
    if content == {}:
        content = None
    return json.dumps({"content": content, "path": path, "query": query}, separators=(",", ":"), sort_keys=True)


def sign(consumer_key: str, path: str, query: str, content: Any = None) -> str:
    """Return the ``Signature`` header value for a request.

    Args:
        consumer_key: The key the request is signed with.
        path: Request path (``/accounts`` or ``/api/v1/accounts``), without the query string.
        query: Raw query string as it will be sent, without ``?``; must contain ``clientId`` and
            ``timestamp``.
        content: The JSON body as a Python value (``None`` when there is no body).
    """
    digest = hmac.new(consumer_key.encode(), canonical_json(path, query, content).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(consumer_key: str, signature: str, paths: Iterable[str], query: str, content: Any) -> bool:
    """True when ``signature`` matches the request under any of ``paths``.

    The query string is compared exactly as received, like SnapTrade does: a client stack that
    re-encodes the query after signing (aiohttp / yarl turn ``%40`` back into ``@``) fails.
    """
    key = consumer_key.encode()
    expected = signature.strip().encode()
    for path in paths:
        digest = hmac.new(key, canonical_json(path, query, content).encode(), hashlib.sha256).digest()
        if hmac.compare_digest(base64.b64encode(digest), expected):
            return True
    return False
