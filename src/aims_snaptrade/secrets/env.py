"""The app's own credentials, read-only, from the environment or from mounted secret files.

Docker and Kubernetes mount secrets as files; ``SNAPTRADE_CONSUMER_KEY_FILE=/run/secrets/key``
names such a file instead of putting the key itself in the environment (where ``ps e``, crash
dumps and child processes can see it). For each credential the plain variable and the ``_FILE``
variable are both accepted, but not both at once (which one would win is a guess we refuse).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from aims_snaptrade.errors import SnapTradeConfigurationError
from aims_snaptrade.redaction import register_secret

__all__ = ["EnvCredentials", "read_env_or_file"]

_MAX_FILE_BYTES = 64 * 1024


def read_env_or_file(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Return ``$NAME``, or the content of the file named by ``$NAME_FILE``, or ``None``.

    One trailing line break is removed from file content (``echo key > file`` adds one); any other
    whitespace is kept so that settings validation can flag it. Raises
    :class:`SnapTradeConfigurationError` when both variables are set or the file is unreadable.
    """
    env = os.environ if environ is None else environ
    direct = env.get(name)
    file_name = env.get(name + "_FILE")
    if direct is not None and file_name:
        raise SnapTradeConfigurationError(f"both {name} and {name}_FILE are set; keep only one")
    if not file_name:
        return direct
    path = Path(file_name)
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SnapTradeConfigurationError(
            f"{name}_FILE names {file_name!r}, which cannot be read ({exc.strerror}); fix the path or mount"
        ) from None
    if len(raw) > _MAX_FILE_BYTES:
        raise SnapTradeConfigurationError(f"{name}_FILE names {file_name!r}, which is too large for a credential")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SnapTradeConfigurationError(f"{name}_FILE names {file_name!r}, which is not UTF-8 text") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    return text


@dataclass(frozen=True, repr=False)
class EnvCredentials:
    """The app's SnapTrade credentials (client id, consumer key) and keyring text, read-only.

    Build it with :meth:`from_env`. The consumer key and keyring are :class:`pydantic.SecretStr`
    and registered for redaction; ``repr`` shows the client id only.
    """

    client_id: str | None
    consumer_key: SecretStr | None
    encryption_keys: SecretStr | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EnvCredentials:
        """Read ``SNAPTRADE_CLIENT_ID``, ``SNAPTRADE_CONSUMER_KEY`` and ``SNAPTRADE_ENCRYPTION_KEYS``,
        each directly or through its ``_FILE`` twin. Missing values are ``None``."""
        client_id = read_env_or_file("SNAPTRADE_CLIENT_ID", environ)
        consumer_key = read_env_or_file("SNAPTRADE_CONSUMER_KEY", environ)
        keys = read_env_or_file("SNAPTRADE_ENCRYPTION_KEYS", environ)
        register_secret(consumer_key, kind="key")
        for part in (keys or "").split(","):
            register_secret(part.partition(":")[2].strip(), kind="key")
        return cls(
            client_id=client_id,
            consumer_key=SecretStr(consumer_key) if consumer_key is not None else None,
            encryption_keys=SecretStr(keys) if keys is not None else None,
        )

    def settings_overrides(self) -> dict[str, object]:
        """The values that are present, as keyword overrides for ``Settings.from_env(**overrides)``."""
        values: dict[str, object] = {
            "client_id": self.client_id,
            "consumer_key": self.consumer_key,
            "encryption_keys": self.encryption_keys,
        }
        return {k: v for k, v in values.items() if v is not None}

    def __repr__(self) -> str:
        return (
            f"EnvCredentials(client_id={self.client_id!r}, consumer_key={'***' if self.consumer_key else None}, "
            f"encryption_keys={'***' if self.encryption_keys else None})"
        )
