"""``aims-snaptrade migrate``: bring every SQL store the settings name to this release's schema.

Stores migrate themselves when a client opens them (see ``docs/versioning.md``); this command does
the same ahead of a deployment, with a role that may alter tables, so services can run with one
that may not. It opens each store the ``SNAPTRADE_*`` settings name, which creates or migrates its
tables in place, and reports one line per store. A store left to its default whose file does not
exist yet is skipped (nothing to migrate); so are stores with no SQL tables (``memory://``, Redis).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aims_snaptrade.errors import SnapTradeSchemaVersionError
from aims_snaptrade.settings import Settings

__all__ = ["migrate_command", "migrate_stores"]


def _skip_reason(settings: Settings, setting: str, url: str) -> str | None:
    scheme = url.partition("://")[0].lower()
    if scheme not in {"sqlite", "postgresql", "postgres"}:
        return f"{scheme}:// has no SQL tables"
    defaulted = setting not in settings.model_fields_set
    if defaulted and scheme == "sqlite" and not Path(url.partition("://")[2][1:]).exists():
        return "its default file does not exist yet"
    return None


def migrate_stores(settings: Settings) -> list[tuple[str, str, str | None]]:
    """Open (so create or migrate) every SQL store of ``settings``; ``(store, outcome, fix)`` for each.

    ``outcome`` is ``"up to date"``, ``"skipped: <why>"`` or the refusal's message; ``fix`` is the
    refusal's hint. Other configuration errors propagate.
    """
    from aims_snaptrade.compliance.factory import (
        audit_key_from_settings,
        audit_store_url,
        consent_store_url,
        open_audit_trail,
        open_consent_store,
    )
    from aims_snaptrade.data_dir import prepare_store_locations
    from aims_snaptrade.secrets.factory import open_secret_store_from_settings
    from aims_snaptrade.sync.ledger.factory import open_sync_ledger
    from aims_snaptrade.trading.factory import open_order_intent_store
    from aims_snaptrade.webhooks.dedupe.factory import open_webhook_dedupe_store

    def secrets() -> Any:
        return open_secret_store_from_settings(settings)

    def consent() -> Any:
        return open_consent_store(consent_store_url(settings), settings)

    def audit() -> Any:
        return open_audit_trail(audit_store_url(settings), settings)

    def store(setting: str, opener: Callable[[str], Any]) -> Callable[[], Any]:
        def open_it() -> Any:
            prepare_store_locations(settings, [setting])
            return opener(getattr(settings, setting))

        return open_it

    consent_url = settings.consent_store_url or settings.secret_store_url
    audit_url = settings.audit_store_url or settings.secret_store_url
    plan: list[tuple[str, str, str, Callable[[], Any]]] = [
        ("secrets", "secret_store_url", settings.secret_store_url, secrets),
        ("consent", "consent_store_url" if settings.consent_store_url else "secret_store_url", consent_url, consent),
        ("audit", "audit_store_url" if settings.audit_store_url else "secret_store_url", audit_url, audit),
        (
            "order_intents",
            "order_intent_store_url",
            settings.order_intent_store_url,
            store("order_intent_store_url", open_order_intent_store),
        ),
        ("sync_ledger", "sync_ledger_url", settings.sync_ledger_url, store("sync_ledger_url", open_sync_ledger)),
        (
            "webhook_claims",
            "webhook_dedupe_url",
            settings.webhook_dedupe_url,
            store("webhook_dedupe_url", open_webhook_dedupe_store),
        ),
    ]
    results: list[tuple[str, str, str | None]] = []
    for name, setting, url, opener in plan:
        reason = _skip_reason(settings, setting, url)
        if name == "audit" and reason is None and audit_key_from_settings(settings) is None:
            reason = "SNAPTRADE_AUDIT_KEY is unset (the audit trail is opened with its key)"
        if reason is not None:
            results.append((name, f"skipped: {reason}", None))
            continue
        try:
            opener().close()
        except SnapTradeSchemaVersionError as refused:
            results.append((name, refused.message, refused.hint))
            continue
        results.append((name, "up to date", None))
    return results


def migrate_command(settings: Settings) -> int:
    """Print what each store's tables went through, then one line per store; exit code 0 when every
    store is up to date or skipped, 1 otherwise."""
    # The schema helper logs each creation and migration (services see the same lines in their logs).
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    schema_log = logging.getLogger("aims_snaptrade.schema")
    level = schema_log.level
    schema_log.addHandler(handler)
    schema_log.setLevel(logging.INFO)
    try:
        results = migrate_stores(settings)
    finally:
        schema_log.removeHandler(handler)
        schema_log.setLevel(level)
    failed = False
    for name, outcome, fix in results:
        failed = failed or fix is not None
        print(f"{name}: {outcome}" + (f" (fix: {fix})" if fix else ""))
    return 1 if failed else 0
