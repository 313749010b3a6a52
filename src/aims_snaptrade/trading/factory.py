"""Open the order-intent journal a URL names (``SNAPTRADE_ORDER_INTENT_STORE_URL``).

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: :class:`SQLiteOrderIntentStore`.
* ``postgresql://user@host/db`` (or ``postgres://``), with optional ``schema=`` and ``table=``
  query parameters: :class:`PostgresOrderIntentStore`.
* ``memory://``: :class:`MemoryOrderIntentStore` (tests only).
* any other scheme: a factory registered under the entry-point group
  ``aims_snaptrade.order_intent_stores`` (called with the URL), through
  :mod:`aims_snaptrade.store_registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.store_registry import resolve_store_factory, url_scheme
from aims_snaptrade.trading.intents import (
    MemoryOrderIntentStore,
    OrderIntentStore,
    PostgresOrderIntentStore,
    SQLiteOrderIntentStore,
)

__all__ = ["ENTRY_POINT_GROUP", "open_order_intent_store"]

ENTRY_POINT_GROUP = "aims_snaptrade.order_intent_stores"

_HELP = (
    "set SNAPTRADE_ORDER_INTENT_STORE_URL to sqlite:///path/to/intents.db, postgresql://user@host/db, "
    f"memory:// (tests only), or a scheme registered under the {ENTRY_POINT_GROUP} entry points"
)


def _sqlite(url: str) -> OrderIntentStore:
    rest = url.partition("://")[2]
    path = unquote(rest[1:]) if rest.startswith("/") else ""
    if not path or "?" in rest or path == ":memory:":
        raise SnapTradeConfigurationError(f"SQLite order-intent store URL {url!r} names no file; {_HELP}")
    return SQLiteOrderIntentStore(path)


def _postgres(url: str) -> OrderIntentStore:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in {"schema", "table"}}
    libpq = [(k, v) for k, v in query if k not in {"schema", "table"}]
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), ""))
    if "table" in ours:
        return PostgresOrderIntentStore(conninfo, schema=ours.get("schema", "public"), table=ours["table"])
    return PostgresOrderIntentStore(conninfo, schema=ours.get("schema", "public"))


def _memory(url: str) -> OrderIntentStore:
    if url.partition("://")[2].strip("/"):
        raise SnapTradeConfigurationError(f"memory order-intent store URL takes no path: use memory://; {_HELP}")
    return MemoryOrderIntentStore()


BUILTINS: dict[str, Callable[[str], OrderIntentStore]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
    "memory": _memory,
}


def open_order_intent_store(url: str) -> OrderIntentStore:
    """Open the journal ``url`` names; a configuration error names the fix for a bad URL.

    The scheme is resolved by :func:`aims_snaptrade.store_registry.resolve_store_factory` in the
    ``aims_snaptrade.order_intent_stores`` group; a plug-in factory is called as ``factory(url)``.
    """
    scheme = url_scheme(url, setting="order-intent store URL (SNAPTRADE_ORDER_INTENT_STORE_URL)")
    store: OrderIntentStore = resolve_store_factory(ENTRY_POINT_GROUP, scheme, BUILTINS)(url)
    return store
