"""``aims-snaptrade verify``: prove a deployment works before it serves anyone, changing nothing.

Each check is one :class:`Check` (a pass, or a failure with its fix). The client is built by
``SafeSnapTradeClient.from_env()`` itself (settings from the environment, the same guardrails,
and the consent and audit stores the production start-up path opens),
except that the secret store is opened with ``create=False`` and every other store inside
:func:`aims_snaptrade.store_registry.probing`: verify creates no SQLite file where a URL points,
no secret-store table, and writes no secret.

Exit codes: 0 every check passed; 1 a check failed; 2 the settings cannot be read at all.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aims_snaptrade import errors as e
from aims_snaptrade.secrets.crypto import PLAINTEXT_VERSION, Keyring
from aims_snaptrade.secrets.protocol import KeyRotatable
from aims_snaptrade.settings import Settings
from aims_snaptrade.store_registry import probing

__all__ = ["EXIT_CHECK_FAILED", "EXIT_CONFIGURATION", "EXIT_OK", "Check", "VerifyReport", "run_verify"]

EXIT_OK = 0
"""Every check passed."""
EXIT_CHECK_FAILED = 1
"""At least one check failed; each failure names its fix."""
EXIT_CONFIGURATION = 2
"""The settings (or the encryption keys) cannot be read, so nothing else could be checked."""


@dataclass(frozen=True)
class Check:
    """One line of the report.

    Attributes:
        name: What was checked (``settings``, ``secret store``, ``signed request``...).
        ok: Whether it passed.
        detail: What was found (never a secret).
        fix: For a failure, what to change.
    """

    name: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class VerifyReport:
    """Every check that ran, in order, and the exit code they amount to."""

    checks: list[Check] = field(default_factory=list)
    exit_code: int = EXIT_OK

    @property
    def ok(self) -> bool:
        """``True`` when every check passed."""
        return self.exit_code == EXIT_OK

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        if not check.ok and self.exit_code == EXIT_OK:
            self.exit_code = EXIT_CHECK_FAILED
        return check

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document: ``{"ok", "exit_code", "checks": [{"name", "ok", "detail", "fix"}]}``."""
        return {"ok": self.ok, "exit_code": self.exit_code, "checks": [asdict(c) for c in self.checks]}

    def lines(self) -> list[str]:
        """The human-readable report: ``PASS``/``FAIL``, the check, what was found, then the fix."""
        out = []
        for check in self.checks:
            out.append(f"{'PASS' if check.ok else 'FAIL'}  {check.name:<20} {check.detail}")
            if check.fix:
                out.append(f"      {'':<20} fix: {check.fix}")
        out.append("verify: all checks passed" if self.ok else f"verify: FAILED (exit {self.exit_code})")
        return out


class _NotCreatedYet:
    """Stands in for a store whose file or table does not exist yet (verify must not create it).

    It declares what the real store will declare, so the guardrails judge the real set-up.
    """

    def __init__(self, kind: str, encrypted: bool) -> None:
        self.kind = kind
        self.persistent = True
        self.encrypted = encrypted

    def get(self, user_id: str) -> str | None:
        return None

    def user_ids(self) -> list[str]:
        return []

    def pending_rotations(self) -> list[str]:
        return []

    def close(self) -> None:
        return None


def run_verify() -> VerifyReport:
    """Run every check against the ``SNAPTRADE_*`` environment, as ``from_env()`` reads it."""
    report = VerifyReport()
    try:
        settings = Settings.from_env()
    except e.SnapTradeConfigurationError as exc:
        report.add(Check("settings", False, exc.message, exc.hint))
        report.exit_code = EXIT_CONFIGURATION
        return report
    report.add(
        Check(
            "settings",
            True,
            f"client id {settings.client_id}, {settings.environment}, {settings.key_type} key, "
            f"base URL {settings.base_url}, trading {'enabled' if settings.trading_enabled else 'disabled'}",
        )
    )
    keyring = _check_keys(report, settings)
    if report.exit_code == EXIT_CONFIGURATION:
        return report
    store, opened = _open_store(report, settings, keyring)
    try:
        if opened:
            _check_encryption(report, settings, store, keyring)
        _check_rate_limit_storage(report, settings)
        if store is not None:
            _check_client(report, settings, store)
        else:
            report.add(
                Check(
                    "start-up guardrails",
                    False,
                    "not run: the client cannot start without its secret store (so neither the clock nor "
                    "the key was checked)",
                    "fix the secret store first, then run verify again",
                )
            )
    finally:
        if opened and store is not None:
            store.close()
    return report


def _check_keys(report: VerifyReport, settings: Settings) -> Keyring | None:
    from aims_snaptrade.secrets.factory import keyring_from_settings

    try:
        keyring = keyring_from_settings(settings)
    except e.SnapTradeConfigurationError as exc:
        report.add(Check("encryption keys", False, exc.message, exc.hint))
        report.exit_code = EXIT_CONFIGURATION
        return None
    if keyring is None:
        report.add(
            Check(
                "encryption keys",
                not settings.is_production,
                "SNAPTRADE_ENCRYPTION_KEYS is not set: user secrets would be stored unencrypted"
                + (" (allowed in sandbox only)" if not settings.is_production else ""),
                None if not settings.is_production else "set SNAPTRADE_ENCRYPTION_KEYS (aims-snaptrade generate-key)",
            )
        )
        return None
    versions = ", ".join(keyring.versions)
    report.add(Check("encryption keys", True, f"keyring {versions} ({keyring.current_version} encrypts)"))
    return keyring


def _open_store(report: VerifyReport, settings: Settings, keyring: Keyring | None) -> tuple[Any, bool]:
    """The secret store opened without creating anything, and whether it is a real store to close."""
    from aims_snaptrade.data_dir import check_store_locations, data_dir_of
    from aims_snaptrade.secrets.factory import is_builtin_scheme, open_secret_store

    url = settings.secret_store_url
    try:
        # Production names every unset location; elsewhere a default store's directory may not exist yet.
        if check_store_locations(settings, ["secret_store_url"]) and not data_dir_of(settings.data_dir).exists():
            raise e.SnapTradeStoreNotCreatedError(
                f"the data directory {str(data_dir_of(settings.data_dir))!r} and its secret store do not exist yet; "
                "the first client to start creates them"
            )
        store = open_secret_store(url, keyring, create=False)
    except e.SnapTradeStoreNotCreatedError as missing:
        defaulted = "secret_store_url" not in settings.model_fields_set
        return _not_created(report, url, keyring, missing, defaulted=defaulted), False
    except e.SnapTradeConfigurationError as exc:
        report.add(Check("secret store", False, exc.message, exc.hint))
        return None, False
    kind = getattr(store, "kind", type(store).__name__)
    how = "opened read-only" if is_builtin_scheme(url) else "opened by its plug-in's factory"
    try:
        count, pending = len(store.user_ids()), store.pending_rotations()
        secrets = f"{count} secret{'' if count == 1 else 's'}"
    except e.SnapTradeError as exc:
        report.add(Check("secret store", False, f"{kind} store {how} but unreadable: {exc.message}", exc.hint))
        return store, True
    if pending:
        report.add(
            Check(
                "secret store",
                False,
                f"{kind} store {how}: {secrets}, {len(pending)} interrupted rotation(s): {', '.join(pending)}",
                "call resolve_secret_rotation(user_id) for each (docs/secret-stores.md)",
            )
        )
    else:
        report.add(Check("secret store", True, f"{kind} store {how}: {secrets}, no interrupted rotation"))
    return store, True


def _not_created(
    report: VerifyReport, url: str, keyring: Keyring | None, missing: e.SnapTradeError, *, defaulted: bool
) -> Any:
    kind = url.partition("://")[0].lower()
    if kind == "sqlite":
        directory = Path(url.partition("://")[2][1:]).parent
        # The data directory of a default store is created by the first client (0700): then its
        # nearest existing parent must be writable instead.
        nearest = directory
        while defaulted and not nearest.exists() and nearest.parent != nearest:
            nearest = nearest.parent
        writable = nearest.is_dir() and os.access(nearest, os.W_OK | os.X_OK)
        report.add(
            Check(
                "secret store",
                writable,
                missing.message + ("" if writable else f"; its directory {str(directory)!r} is missing or read-only"),
                None
                if writable
                else "create the directory (writable by the service) or fix SNAPTRADE_SECRET_STORE_URL",
            )
        )
        return _NotCreatedYet("sqlite", keyring is not None)
    report.add(Check("secret store", True, missing.message))
    return _NotCreatedYet("postgresql", True)


def _check_encryption(report: VerifyReport, settings: Settings, store: Any, keyring: Keyring | None) -> None:
    declared = getattr(store, "encrypted", None)
    if declared is not True:
        report.add(
            Check(
                "encryption at rest",
                not settings.is_production and declared is False,
                f"the store {'is not encrypted' if declared is False else 'does not declare `encrypted`'}"
                + (" (allowed in sandbox only)" if not settings.is_production and declared is False else ""),
                None
                if not settings.is_production and declared is False
                else "set SNAPTRADE_ENCRYPTION_KEYS, or declare `encrypted = True` on a store that encrypts",
            )
        )
        return
    problems: list[str] = []
    if isinstance(store, KeyRotatable):
        counts = store.key_version_counts()
        unknown = sorted(v for v in counts if v != PLAINTEXT_VERSION and (keyring is None or v not in keyring))
        if unknown:
            problems.append(f"rows under key(s) {', '.join(unknown)} that SNAPTRADE_ENCRYPTION_KEYS lacks")
        if counts.get(PLAINTEXT_VERSION):
            problems.append(f"{counts[PLAINTEXT_VERSION]} unencrypted row(s)")
        described = ", ".join(f"{v}: {n}" for v, n in sorted(counts.items())) or "no rows yet"
    else:
        described = "encryption is the store's own (not KeyRotatable)"
    sample = store.user_ids()[:1]
    if sample:
        try:
            store.get(sample[0])
        except e.SnapTradeSecretDecryptionError as exc:
            problems.append(f"a stored secret does not decrypt ({exc.message})")
    if problems:
        report.add(
            Check(
                "encryption at rest",
                False,
                "; ".join(problems),
                "add the missing keys to SNAPTRADE_ENCRYPTION_KEYS, then run aims-snaptrade rotate-keys",
            )
        )
    else:
        report.add(Check("encryption at rest", True, f"rows by key: {described}; a stored secret decrypts"))


def _check_rate_limit_storage(report: VerifyReport, settings: Settings) -> None:
    from aims_snaptrade.ratelimit.limiter import RateLimiter, RateLimitPolicy

    url = settings.rate_limit_storage_url
    try:
        RateLimiter(RateLimitPolicy.from_settings(settings), url).close()
    except e.SnapTradeError as exc:
        report.add(Check("rate-limit storage", False, exc.message, exc.hint))
        return
    scheme = url.partition("://")[0]
    shared = "shared by every replica using it" if "redis" in scheme else "this process only (redis:// to share)"
    report.add(Check("rate-limit storage", True, f"{scheme}:// answers; budgets are {shared}"))


def _check_client(report: VerifyReport, settings: Settings, store: Any) -> None:
    from aims_snaptrade.client import SafeSnapTradeClient

    with probing():  # the other stores the client opens by URL leave no file behind either
        try:
            # from_env() itself: the same guardrails and the same consent/audit start-up path a
            # service takes; only the secret store is the read-only one opened above.
            client = SafeSnapTradeClient.from_env(secret_store=store, retry="none")
        except e.SnapTradeError as exc:
            report.add(Check("start-up guardrails", False, exc.message, exc.hint))
            return
        with client:
            report.add(Check("start-up guardrails", True, "the client starts with these settings"))
            _check_clock(report, settings, client)
            _check_signed_call(report, settings, client)


def _check_clock(report: VerifyReport, settings: Settings, client: Any) -> None:
    try:
        status = client.api_status()
    except e.SnapTradeError as exc:
        report.add(Check("api status", False, exc.message, "check SNAPTRADE_BASE_URL and the network path to it"))
        return
    report.add(
        Check(
            "api status",
            status.online,
            f"{'online' if status.online else 'OFFLINE'} (API version {status.version})",
            None if status.online else "SnapTrade reports itself offline; retry later",
        )
    )
    skew = status.clock_skew_seconds
    if skew is None:
        report.add(Check("clock skew", False, "the server sent no timestamp", "check SNAPTRADE_BASE_URL"))
        return
    ok = abs(skew) <= settings.clock_skew_tolerance
    report.add(
        Check(
            "clock skew",
            ok,
            f"{skew:+.3f} s against the server (tolerance {settings.clock_skew_tolerance:g} s)",
            None if ok else "synchronise this machine's clock (NTP): signed requests would get 401 (1076)",
        )
    )


def _check_signed_call(report: VerifyReport, settings: Settings, client: Any) -> None:
    # A read-only, signed call that needs no user: Commercial keys list their users; Personal keys
    # (which have no users) read their partner information.
    operation = "list_snap_trade_users" if settings.key_type == "commercial" else "get_partner_info"
    try:
        response = client.call(operation)
    except e.SnapTradeAuthError as exc:
        report.add(
            Check(
                "signed request",
                False,
                f"SnapTrade rejected a signed {operation} ({exc.status}, code {exc.code})",
                "check SNAPTRADE_CONSUMER_KEY belongs to SNAPTRADE_CLIENT_ID (no stray whitespace) and the clock",
            )
        )
        return
    except e.SnapTradePermissionError as exc:
        # A 403 comes after the signature was checked: the key is proven, the feature is not enabled.
        report.add(Check("signed request", True, f"key accepted; {operation} answered {exc.status} ({exc.code})"))
        return
    except e.SnapTradeError as exc:
        report.add(Check("signed request", False, f"{operation} failed: {exc.message}", exc.hint))
        return
    found = f"{len(response.body)} users" if isinstance(response.body, list) else "partner information"
    report.add(Check("signed request", True, f"SnapTrade accepted the key: signed {operation} answered ({found})"))
