"""Choose a webhook de-duplication store from a URL.

* ``memory://`` - :class:`MemoryWebhookDedupeStore` (one process; tests).
* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` - :class:`SQLiteWebhookDedupeStore`
  (several processes on one host).
* ``redis://host:6379/0`` (``rediss://``, ``unix://``), ``?prefix=`` to choose the key prefix -
  :class:`RedisWebhookDedupeStore`.
* ``postgresql://user@host/db`` (or ``postgres://``), ``?schema=`` and ``?table=`` -
  :class:`PostgresWebhookDedupeStore`.
* any other scheme: a factory registered under the entry-point group
  ``aims_snaptrade.webhook_dedupe_stores`` (called with the URL), resolved by
  :func:`aims_snaptrade.store_registry.resolve_store_factory`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.store_registry import resolve_store_factory, url_scheme
from aims_snaptrade.webhooks.dedupe.memory import MemoryWebhookDedupeStore
from aims_snaptrade.webhooks.dedupe.protocol import WebhookDedupeStore

__all__ = ["ENTRY_POINT_GROUP", "open_webhook_dedupe_store"]

ENTRY_POINT_GROUP = "aims_snaptrade.webhook_dedupe_stores"

_HELP = "use memory://, sqlite:///path/to/claims.db, redis://host:6379/0 or postgresql://user@host/db"


def _split_query(url: str, ours: set[str]) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = urlencode([(k, v) for k, v in query if k not in ours])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, kept, "")), {k: v for k, v in query if k in ours}


def _memory(url: str) -> WebhookDedupeStore:
    if url.partition("://")[2].strip("/"):
        raise SnapTradeConfigurationError(f"memory webhook dedupe store URL takes no path: use memory://; {_HELP}")
    return MemoryWebhookDedupeStore()


def _sqlite(url: str) -> WebhookDedupeStore:
    from aims_snaptrade.webhooks.dedupe.sqlite import SQLiteWebhookDedupeStore

    rest = url.partition("://")[2]
    path = unquote(rest[1:]) if rest.startswith("/") and "?" not in rest and "#" not in rest else ""
    if not path or path == ":memory:":
        raise SnapTradeConfigurationError(
            f"SQLite webhook dedupe store URL {url!r} must be sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return SQLiteWebhookDedupeStore(path)


def _redis(url: str) -> WebhookDedupeStore:
    from aims_snaptrade.webhooks.dedupe.redis import DEFAULT_PREFIX, RedisWebhookDedupeStore

    target, ours = _split_query(url, {"prefix"})
    return RedisWebhookDedupeStore(target, prefix=ours.get("prefix", DEFAULT_PREFIX))


def _postgres(url: str) -> WebhookDedupeStore:
    from aims_snaptrade.webhooks.dedupe.postgres import DEFAULT_SCHEMA, DEFAULT_TABLE, PostgresWebhookDedupeStore

    target, ours = _split_query(url, {"schema", "table"})
    parts = urlsplit(target)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))
    return PostgresWebhookDedupeStore(
        conninfo,
        schema=ours.get("schema", DEFAULT_SCHEMA),
        table=ours.get("table", DEFAULT_TABLE),
    )


_BUILTINS: dict[str, Any] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_webhook_dedupe_store(url: str) -> WebhookDedupeStore:
    """Open the store ``url`` names (see the module documentation).

    Raises:
        SnapTradeConfigurationError: No scheme, an unknown scheme, a bad path or an unreachable server.
    """
    scheme = url_scheme(url, setting="the webhook dedupe store URL")
    factory = resolve_store_factory(ENTRY_POINT_GROUP, scheme, _BUILTINS)
    store: WebhookDedupeStore = factory(url)
    return store
