"""Choose a sync ledger from a URL (``SNAPTRADE_SYNC_LEDGER_URL``), like the secret store.

* ``memory://`` - an in-process SQLite ledger (tests only).
* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` - :class:`SQLiteSyncLedger`.
* ``postgresql://user@host:5432/db`` (or ``postgres://``), libpq parameters in the query string,
  plus ``schema=`` and ``prefix=`` for the tables - :class:`PostgresSyncLedger`.
* any other scheme - a factory ``factory(url)`` registered in the entry-point group
  ``aims_snaptrade.sync_ledgers``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.store_registry import resolve_store_factory, url_scheme
from aims_snaptrade.sync.ledger.protocol import SyncLedger

__all__ = ["ENTRY_POINT_GROUP", "open_sync_ledger"]

ENTRY_POINT_GROUP = "aims_snaptrade.sync_ledgers"
_HELP = "set SNAPTRADE_SYNC_LEDGER_URL to sqlite:///path/to/sync.db, postgresql://user@host:5432/dbname or memory://"


def _memory(url: str) -> SyncLedger:
    from aims_snaptrade.sync.ledger.sqlite import MEMORY, SQLiteSyncLedger

    if url.partition("://")[2].strip("/"):
        raise SnapTradeConfigurationError(f"a memory sync ledger URL takes no path: use memory://; {_HELP}")
    return SQLiteSyncLedger(MEMORY)


def _sqlite(url: str) -> SyncLedger:
    from aims_snaptrade.sync.ledger.sqlite import SQLiteSyncLedger

    rest = url.partition("://")[2]
    path = unquote(rest[1:]) if rest.startswith("/") else ""
    if not path or "?" in rest or "#" in rest or path == ":memory:":
        raise SnapTradeConfigurationError(
            f"SQLite sync ledger URL {url!r} must be sqlite:///relative/path.db or sqlite:////absolute/path.db; "
            + _HELP
        )
    return SQLiteSyncLedger(path)


def _postgres(url: str) -> SyncLedger:
    from aims_snaptrade.sync.ledger.postgres import DEFAULT_PREFIX, PostgresSyncLedger

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in {"schema", "prefix"}}
    libpq = [(k, v) for k, v in query if k not in {"schema", "prefix"}]
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), ""))
    return PostgresSyncLedger(conninfo, schema=ours.get("schema", "public"), prefix=ours.get("prefix", DEFAULT_PREFIX))


BUILTINS: dict[str, Callable[[str], SyncLedger]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def open_sync_ledger(url: str) -> SyncLedger:
    """Open the ledger ``url`` names.

    Raises :class:`SnapTradeConfigurationError` naming the fix for a URL without a scheme, an
    unknown scheme (with the known ones), a bad path or an unreachable database.
    """
    if not isinstance(url, str):
        raise SnapTradeConfigurationError(f"the sync ledger URL must be a string; {_HELP}")
    scheme = url_scheme(url, setting="SNAPTRADE_SYNC_LEDGER_URL")
    factory: Callable[[str], Any] = resolve_store_factory(ENTRY_POINT_GROUP, scheme, BUILTINS)
    return factory(url)  # type: ignore[no-any-return]
