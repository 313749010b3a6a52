"""Environment guardrails: start-up and per-call policy, decided before any request is sent.

Pure functions over settings, the operation table and the call's arguments, shared by the sync
and async clients. A refused call raises :class:`~aims_snaptrade.errors.SnapTradeGuardrailError`
(or :class:`~aims_snaptrade.errors.SnapTradeConsentRequiredError`) and sends nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from aims_snaptrade.errors import SnapTradeGuardrailError
from aims_snaptrade.operations import Operation
from aims_snaptrade.settings import Settings

__all__ = ["COMMERCIAL_ONLY", "ConsentChecker", "check_call", "check_startup", "consent_scope"]

COMMERCIAL_ONLY = frozenset(
    {
        "register_snap_trade_user",
        "reset_snap_trade_user_secret",
        "delete_snap_trade_user",
        "list_snap_trade_users",
    }
)
"""User-management operations that only exist for Commercial keys (Personal keys have no users)."""

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@runtime_checkable
class ConsentChecker(Protocol):
    """Answers whether a user's consent for a scope is on record and unexpired.

    The compliance package provides a store-backed implementation; any object with this method
    can be passed to a client as ``consent=``.
    """

    def has_consent(self, user_id: str, scope: str) -> bool:
        """Return ``True`` if ``user_id`` has current consent for ``scope`` (``"read"`` or ``"trade"``)."""
        ...


def consent_scope(operation: Operation) -> str | None:
    """The consent scope an operation needs: ``"trade"``, ``"read"``, or ``None`` (no user data)."""
    if not operation.user_scoped or operation.name in COMMERCIAL_ONLY:
        return None
    return "trade" if operation.trading else "read"


def check_startup(settings: Settings, *, store: Any, consent: ConsentChecker | None, audit: Any = None) -> None:
    """Refuse unsafe set-ups, listing every violation at once with its fix.

    In production: the base URL must be HTTPS, the secret store persistent and encrypted,
    consent checks on (with a consent checker given) and an audit trail kept. The secret store must
    declare ``persistent = True`` and ``encrypted = True``; a store that does not declare them (a
    custom store written without them) is refused: production fails closed.
    """
    if not settings.is_production:
        return
    violations: list[str] = []
    url = urlsplit(settings.base_url)
    if url.scheme != "https":
        violations.append(
            f"SNAPTRADE_BASE_URL uses {url.scheme}:// in production; use https://api.snaptrade.com/api/v1"
        )
    elif url.hostname in _LOOPBACK:
        violations.append("SNAPTRADE_BASE_URL points at this machine in production; remove it to use SnapTrade")
    if store is not None:
        violations.extend(_store_violations(store))
    if not settings.consent_required:
        violations.append("consent checks are disabled; unset SNAPTRADE_CONSENT_REQUIRED (production needs them)")
    elif consent is None:
        violations.append(
            "no consent checker was given; pass consent=<ConsentChecker> to the client "
            "(from_env() opens the consent store of SNAPTRADE_CONSENT_STORE_URL)"
        )
    elif not getattr(consent, "persistent", True):
        violations.append(
            "the consent store is in memory; set SNAPTRADE_CONSENT_STORE_URL to sqlite:/// or postgresql://"
        )
    if audit is None:
        violations.append(
            "no audit trail is kept; set SNAPTRADE_AUDIT_KEY (at least 32 characters, e.g. from "
            "`aims-snaptrade generate-key`) or pass audit=<AuditTrail>"
        )
    elif not getattr(audit, "persistent", True):
        violations.append("the audit trail is in memory; set SNAPTRADE_AUDIT_STORE_URL to sqlite:/// or postgresql://")
    if violations:
        numbered = "; ".join(f"({i}) {v}" for i, v in enumerate(violations, 1))
        raise SnapTradeGuardrailError(
            f"Refusing an unsafe production set-up: {numbered}.",
            hint="Fix every item listed; the client was not created.",
        )


_STORE_TRAITS = (
    (
        "persistent",
        "keeps secrets across restarts",
        "is not persistent (in memory: user secrets would be lost on restart); "
        "set SNAPTRADE_SECRET_STORE_URL to sqlite:///path or postgresql://...",
    ),
    (
        "encrypted",
        "encrypts secrets at rest",
        "is not encrypted; set SNAPTRADE_ENCRYPTION_KEYS (generate one with `aims-snaptrade generate-key`)",
    ),
)
"""(attribute, what declaring it True promises, the refusal when it is False) for production stores."""


def _store_violations(store: Any) -> list[str]:
    name = type(store).__name__
    found: list[str] = []
    for trait, promise, refusal in _STORE_TRAITS:
        value = getattr(store, trait, None)
        if value is None:
            found.append(
                f"the secret store {name} does not declare `{trait}`; give the class `{trait} = True` if it "
                f"{promise} (production refuses stores that do not say so)"
            )
        elif value is not True:
            found.append(f"the secret store {name} {refusal}")
    return found


def check_call(
    settings: Settings,
    operation: Operation,
    arguments: Mapping[str, Any],
    *,
    confirm: bool,
) -> None:
    """Refuse a call the configuration does not allow. Raises before anything is sent.

    Consent is decided on the road (:mod:`aims_snaptrade.pipeline`), as an effect: it reads a store.
    """
    name = operation.name
    if settings.key_type == "personal" and name in COMMERCIAL_ONLY:
        raise SnapTradeGuardrailError(
            f"{name} is refused: Personal API keys have no SnapTrade users to manage.",
            operation=name,
            hint="Use a Commercial key, or call the data operations without user management.",
        )
    if operation.trading and not settings.trading_enabled:
        raise SnapTradeGuardrailError(
            f"{name} is a trading operation and trading is disabled.",
            operation=name,
            hint="Set SNAPTRADE_TRADING_ENABLED=true (or trading_enabled=True) only in services meant to trade.",
        )
    if operation.destructive and confirm is not True:  # only the bool True confirms, never "yes" or 1
        raise SnapTradeGuardrailError(
            f"{name} deletes or disables data and needs explicit confirmation.",
            operation=name,
            hint="Pass confirm=True once you are sure.",
        )
