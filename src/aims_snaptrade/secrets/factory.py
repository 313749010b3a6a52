"""Choose a store from a URL, like ``limits`` chooses a storage.

The scheme is resolved by :func:`aims_snaptrade.store_registry.resolve_store_factory` in the
``aims_snaptrade.secret_stores`` entry-point group: the built-in schemes below, then any
installed package's entry point of that name, called as ``factory(url, keyring)``.

* ``memory://`` - :class:`MemorySecretStore` (tests only).
* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (SQLAlchemy's convention:
  three slashes then the path) - :class:`SQLiteSecretStore`.
* ``postgresql://user@host:5432/db`` (or ``postgres://``), any libpq parameters in the query
  string, plus ``schema=`` and ``table=`` to pick the table - :class:`PostgresSecretStore`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.secrets.crypto import Keyring
from aims_snaptrade.secrets.memory import MemorySecretStore
from aims_snaptrade.secrets.protocol import SecretStore
from aims_snaptrade.store_registry import resolve_store_factory, url_scheme

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = [
    "SECRET_STORE_GROUP",
    "keyring_from_settings",
    "open_secret_store",
    "open_secret_store_from_settings",
]

SECRET_STORE_GROUP = "aims_snaptrade.secret_stores"
"""The entry-point group custom secret stores register their URL scheme in."""

_HELP = (
    "set SNAPTRADE_SECRET_STORE_URL to sqlite:///path/to/secrets.db, "
    "postgresql://user@host:5432/dbname or memory:// (tests only)"
)


def open_secret_store(url: str, keyring: Keyring | None = None, *, create: bool = True) -> SecretStore:
    """Open the store ``url`` names, encrypting with ``keyring``.

    ``create=False`` opens a built-in store without creating or changing anything (SQLite
    read-only; no PostgreSQL DDL) and raises
    :class:`~aims_snaptrade.errors.SnapTradeStoreNotCreatedError` when its file or table does not
    exist yet. A custom store is always opened by its factory, as the clients open it.

    Raises :class:`SnapTradeConfigurationError` naming the fix for an unknown scheme, a bad path,
    an unreachable database, or a missing keyring where one is required (PostgreSQL, or a SQLite
    file that is already encrypted).
    """
    scheme = url_scheme(url, setting="secret store URL (SNAPTRADE_SECRET_STORE_URL)")
    factory = resolve_store_factory(SECRET_STORE_GROUP, scheme, _BUILTINS)
    store: SecretStore = factory(url, keyring, create=create) if scheme in _BUILTINS else factory(url, keyring)
    return store


def is_builtin_scheme(url: str) -> bool:
    """Whether ``url`` names one of the library's own secret stores (not a plug-in)."""
    return url.partition("://")[0].lower() in _BUILTINS


def _open_memory(url: str, keyring: Keyring | None, *, create: bool = True) -> SecretStore:
    if url.partition("://")[2].strip("/"):
        raise SnapTradeConfigurationError(f"memory secret store URL takes no path: use memory://; {_HELP}")
    return MemorySecretStore(keyring)


def _open_sqlite(url: str, keyring: Keyring | None, *, create: bool = True) -> SecretStore:
    from aims_snaptrade.secrets.sqlite import SQLiteSecretStore

    rest = url.partition("://")[2]
    if not rest.startswith("/") or "?" in rest or "#" in rest:
        raise SnapTradeConfigurationError(
            f"SQLite secret store URL {url!r} must be sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(rest[1:])
    if not path or path == ":memory:":
        raise SnapTradeConfigurationError(
            f"SQLite secret store URL {url!r} names no file; use memory:// for an in-memory test store"
        )
    return SQLiteSecretStore(path, keyring, create=create)


def _open_postgres(url: str, keyring: Keyring | None, *, create: bool = True) -> SecretStore:
    from aims_snaptrade.secrets.postgres import DEFAULT_SCHEMA, DEFAULT_TABLE, PostgresSecretStore

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in {"schema", "table"}}
    libpq = [(k, v) for k, v in query if k not in {"schema", "table"}]
    # libpq accepts postgres:// too, but normalise so messages and docs show one spelling.
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(libpq), ""))
    return PostgresSecretStore(
        conninfo,
        keyring,
        schema=ours.get("schema", DEFAULT_SCHEMA),
        table=ours.get("table", DEFAULT_TABLE),
        create=create,
    )


_BUILTINS: Mapping[str, Callable[..., SecretStore]] = {
    "memory": _open_memory,
    "sqlite": _open_sqlite,
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}


def keyring_from_settings(settings: Settings) -> Keyring | None:
    """Parse ``settings.encryption_keys`` into a :class:`Keyring` (``None`` when unset)."""
    if settings.encryption_keys is None:
        return None
    text = settings.encryption_keys.get_secret_value()
    return Keyring.parse(text) if text.strip() else None


def open_secret_store_from_settings(settings: Settings) -> SecretStore:
    """Open ``settings.secret_store_url`` with the keyring from ``settings.encryption_keys``.

    Left unset, the URL names ``secrets.db`` in the data directory, created owner-only first
    (refused in production unless ``SNAPTRADE_DATA_DIR`` is set: see :mod:`aims_snaptrade.data_dir`).
    """
    from aims_snaptrade.data_dir import prepare_store_locations

    prepare_store_locations(settings, ["secret_store_url"])
    return open_secret_store(settings.secret_store_url, keyring_from_settings(settings))
