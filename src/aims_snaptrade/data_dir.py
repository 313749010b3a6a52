"""Where the embedded stores keep their SQLite files when no store URL is set.

Every embedded default lives in one directory, never in the current directory:
``SNAPTRADE_DATA_DIR`` when set, else the platform's user data directory for ``aims-snaptrade``
(``platformdirs.user_data_path``: ``~/.local/share/aims-snaptrade`` on Linux,
``~/Library/Application Support/aims-snaptrade`` on macOS). The directory is created owner-only
(``0700``) the first time a store needs it; an existing one must belong to this user and be
writable by no one else, since it holds user secrets and personal data.

Production never falls back to a directory it did not choose: a store whose URL is unset is
refused, naming every such variable, unless ``SNAPTRADE_DATA_DIR`` names the directory
explicitly. See ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeValidationError

__all__ = [
    "DATA_DIR_VARIABLE",
    "DEFAULT_FILES",
    "StoreSettings",
    "check_store_locations",
    "data_dir_of",
    "default_data_dir",
    "default_store_url",
    "ensure_data_dir",
    "prepare_store_locations",
]


class StoreSettings(Protocol):
    """What the store-location checks read of :class:`~aims_snaptrade.settings.Settings` (which
    imports this module for its defaults, so it is named here by shape, not imported)."""

    @property
    def model_fields_set(self) -> set[str]: ...

    @property
    def is_production(self) -> bool: ...

    @property
    def data_dir(self) -> str | None: ...


DATA_DIR_VARIABLE = "SNAPTRADE_DATA_DIR"
APP_NAME = "aims-snaptrade"

DEFAULT_FILES = {
    "secret_store_url": "secrets.db",  # also the consent store's and the audit trail's, unless set
    "webhook_dedupe_url": "webhook-claims.db",
    "sync_ledger_url": "sync-ledger.db",
    "order_intent_store_url": "order-intents.db",
}
"""The file of each store URL setting's embedded default, inside the data directory."""


def default_data_dir() -> Path:
    """The platform's user data directory for aims-snaptrade (not created here)."""
    import platformdirs

    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def data_dir_of(data_dir: str | None) -> Path:
    """``SNAPTRADE_DATA_DIR`` as an absolute path, or the platform default when unset."""
    return Path(data_dir).expanduser().absolute() if data_dir else default_data_dir()


def _settings_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    found = list(names)
    unknown = [name for name in found if name not in DEFAULT_FILES]
    if unknown:
        raise SnapTradeValidationError(
            f"unknown store settings {unknown!r}: the store URL settings with an embedded default are "
            f"{', '.join(sorted(DEFAULT_FILES))}"
        )
    return found


def default_store_url(data_dir: str | None, setting: str) -> str:
    """The ``sqlite:////absolute/path`` URL of ``setting``'s embedded default under ``data_dir``."""
    (setting,) = _settings_names([setting])
    return "sqlite:///" + str(data_dir_of(data_dir) / DEFAULT_FILES[setting])


def ensure_data_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` owner-only (``0700``) if absent; refuse one another user or group could change.

    Raises :class:`SnapTradeConfigurationError` naming ``SNAPTRADE_DATA_DIR`` when the directory
    cannot be created, is not a directory, belongs to another user, or is writable by others.
    """
    fix = f"set {DATA_DIR_VARIABLE} to a directory this service owns (mode 0700), or set each store URL"
    if not isinstance(path, (str, os.PathLike)) or "\0" in os.fspath(path):
        raise SnapTradeValidationError(f"the data directory must be a path without NUL characters, got {path!r}")
    path = Path(path)
    try:
        if not path.exists():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(path, 0o700)  # mkdir's mode passes through the umask
        info = path.stat()
    except OSError as exc:
        raise SnapTradeConfigurationError(
            f"the data directory {str(path)!r} cannot be created ({exc.strerror or type(exc).__name__})",
            hint=fix,
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise SnapTradeConfigurationError(f"the data directory {str(path)!r} is not a directory", hint=fix)
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SnapTradeConfigurationError(
            f"the data directory {str(path)!r} belongs to another user (uid {info.st_uid})", hint=fix
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SnapTradeConfigurationError(
            f"the data directory {str(path)!r} is writable by its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); `chmod 700` it",
            hint=fix,
        )
    return path


def check_store_locations(settings: StoreSettings, settings_names: Iterable[str]) -> list[str]:
    """The settings of ``settings_names`` left to their default; refused in production without a data directory.

    Changes nothing. Raises :class:`SnapTradeConfigurationError` naming each unset variable when
    ``settings`` are production's and ``SNAPTRADE_DATA_DIR`` is unset.
    """
    defaulted = [name for name in _settings_names(settings_names) if name not in settings.model_fields_set]
    if defaulted and settings.is_production and "data_dir" not in settings.model_fields_set:
        variables = ", ".join("SNAPTRADE_" + name.upper() for name in defaulted)
        raise SnapTradeConfigurationError(
            f"production needs explicit store locations and these are unset: {variables}",
            hint=f"Set each to sqlite:////absolute/path.db or postgresql://..., or set {DATA_DIR_VARIABLE} to a "
            "directory this service owns (the embedded defaults then live there).",
        )
    return defaulted


def prepare_store_locations(settings: StoreSettings, settings_names: Iterable[str]) -> None:
    """Before opening the stores ``settings_names`` name: refuse or prepare their default locations.

    Stores whose URL was set are left alone. For the others, production without an explicit
    ``SNAPTRADE_DATA_DIR`` is refused, naming each unset variable (:func:`check_store_locations`);
    otherwise the data directory is created (``0700``) or checked by :func:`ensure_data_dir`.
    """
    if check_store_locations(settings, settings_names):
        ensure_data_dir(data_dir_of(settings.data_dir))
