"""Retention as operations: purge the audit trail's old records, sweep lapsed consents.

Both open the stores the ``SNAPTRADE_*`` settings name, do their work, record it in the audit
trail and close what they opened. ``aims-snaptrade audit purge --before`` and ``aims-snaptrade
consent sweep`` run them from the command line; :mod:`aims_snaptrade.integrations.celery_retention`
runs them on a Celery beat schedule. See docs/compliance.md ("Retention").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from aims_snaptrade.compliance.audit import AuditEvent, PurgeReport, Scalar
from aims_snaptrade.compliance.consent import check_time
from aims_snaptrade.compliance.factory import (
    append_audit_event,
    audit_store_url,
    consent_store_url,
    open_audit_trail,
    open_consent_store,
)
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeValidationError

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = ["days_ago", "purge_audit_trail", "sweep_consents"]


def days_ago(days: object, *, now: datetime | None = None) -> datetime:
    """The instant ``days`` whole days before now (UTC): what ``older_than_days`` settings mean."""
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 36_500:
        raise SnapTradeValidationError(f"days must be a whole number of days 0-36500, got {days!r}.")
    return (now or datetime.now(UTC)) - timedelta(days=days)


def purge_audit_trail(settings: Settings, before: datetime) -> PurgeReport:
    """Remove audit records older than ``before`` (refused when the chain does not verify)."""
    check_time(before, "before")
    trail = open_audit_trail(audit_store_url(settings), settings)
    try:
        return trail.purge(before)  # the trail records the purge itself
    finally:
        trail.close()


def sweep_consents(settings: Settings, before: datetime) -> int:
    """Delete consent grants that lapsed (expired or revoked) before ``before``; audited."""
    check_time(before, "before")
    store = open_consent_store(consent_store_url(settings), settings)
    try:
        sweep = getattr(store, "sweep", None)
        if sweep is None:
            raise SnapTradeConfigurationError(
                f"the consent store {store!r} has no sweep(before); implement it to run the consent-expiry sweep"
            )
        removed = int(sweep(before))
    finally:
        store.close()
    detail: dict[str, Scalar] = {"removed": removed, "before": before.astimezone(UTC).isoformat()}
    append_audit_event(settings, AuditEvent("consent", "consent.sweep", detail=detail))
    return removed
