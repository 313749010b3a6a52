"""Secret stores: where SnapTrade user secrets live, encrypted at rest and rotatable without loss.

Open one from a URL (``open_secret_store(settings.secret_store_url, keyring)``) or build a store
class directly. Plug in your own by implementing :class:`SecretStore` and running the
conformance suite in :mod:`aims_snaptrade.testing.secret_store_conformance` against it.
See docs/secret-stores.md.

PostgreSQL support (:class:`PostgresSecretStore`) needs the ``postgres`` extra; psycopg is only
imported when such a store is opened.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aims_snaptrade.secrets.crypto import Keyring, SecretCodec
    from aims_snaptrade.secrets.env import EnvCredentials, read_env_or_file
    from aims_snaptrade.secrets.factory import (
        keyring_from_settings,
        open_secret_store,
        open_secret_store_from_settings,
    )
    from aims_snaptrade.secrets.memory import MemorySecretStore
    from aims_snaptrade.secrets.postgres import PostgresSecretStore
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


# Where each public name lives: imported on first use, so a service that keeps its secrets in
# PostgreSQL never loads sqlite3, and one without encryption keys never loads cryptography.
_HOME = {
    "AsyncSecretStore": "protocol",
    "AsyncSecretStoreAdapter": "protocol",
    "BatchOutcome": "protocol",
    "EnvCredentials": "env",
    "KeyRotatable": "protocol",
    "Keyring": "crypto",
    "MemorySecretStore": "memory",
    "PostgresSecretStore": "postgres",
    "RotationReport": "rotation",
    "SQLiteSecretStore": "sqlite",
    "SecretCodec": "crypto",
    "SecretStore": "protocol",
    "check_pending_rotations": "rotation",
    "keyring_from_settings": "factory",
    "open_secret_store": "factory",
    "open_secret_store_from_settings": "factory",
    "read_env_or_file": "env",
    "rotate_keys": "rotation",
    "rotate_keys_command": "rotation",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
