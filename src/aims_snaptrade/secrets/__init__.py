"""Secret stores: where SnapTrade user secrets live, encrypted at rest and rotatable without loss.

Open one from a URL (``open_secret_store(settings.secret_store_url, keyring)``) or build a store
class directly. Plug in your own by implementing :class:`SecretStore` and running the
conformance suite in :mod:`aims_snaptrade.testing.secret_store_conformance` against it.
See docs/secret-stores.md.

PostgreSQL support (:class:`PostgresSecretStore`) needs the ``postgres`` extra; psycopg is only
imported when such a store is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aims_snaptrade.secrets.crypto import Keyring, SecretCodec
from aims_snaptrade.secrets.env import EnvCredentials, read_env_or_file
from aims_snaptrade.secrets.factory import (
    keyring_from_settings,
    open_secret_store,
    open_secret_store_from_settings,
)
from aims_snaptrade.secrets.memory import MemorySecretStore
from aims_snaptrade.secrets.protocol import (
    AsyncSecretStore,
    AsyncSecretStoreAdapter,
    BatchOutcome,
    KeyRotatable,
    SecretStore,
)
from aims_snaptrade.secrets.rotation import (
    RotationReport,
    check_pending_rotations,
    rotate_keys,
    rotate_keys_command,
)
from aims_snaptrade.secrets.sqlite import SQLiteSecretStore

if TYPE_CHECKING:
    from aims_snaptrade.secrets.postgres import PostgresSecretStore

__all__ = [
    "AsyncSecretStore",
    "AsyncSecretStoreAdapter",
    "BatchOutcome",
    "EnvCredentials",
    "KeyRotatable",
    "Keyring",
    "MemorySecretStore",
    "PostgresSecretStore",
    "RotationReport",
    "SQLiteSecretStore",
    "SecretCodec",
    "SecretStore",
    "check_pending_rotations",
    "keyring_from_settings",
    "open_secret_store",
    "open_secret_store_from_settings",
    "read_env_or_file",
    "rotate_keys",
    "rotate_keys_command",
]


def __getattr__(name: str) -> Any:
    # The PostgreSQL module is cheap to import (psycopg itself is imported lazily inside it),
    # but keep it out of the import path of services that never use it.
    if name == "PostgresSecretStore":
        from aims_snaptrade.secrets.postgres import PostgresSecretStore

        return PostgresSecretStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
