"""Celery tasks for retention: ``aims_snaptrade.audit_purge`` and ``aims_snaptrade.consent_sweep``.

Register them on your Celery app and schedule them with Celery beat (there is no scheduler
here)::

    from aims_snaptrade.integrations.celery_retention import register_retention_tasks, retention_beat_schedule

    register_retention_tasks(app)
    app.conf.beat_schedule = {**app.conf.beat_schedule, **retention_beat_schedule(audit_days=400, consent_days=30)}

Each run opens the stores the worker's ``SNAPTRADE_*`` environment names, purges or sweeps, records
that in the audit trail and closes them. Both are idempotent: a second run in the same window finds
nothing more to remove. A purge is refused while the chain does not verify (the task fails, so the
failure shows in Celery's monitoring). See docs/compliance.md ("Retention").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    from celery import Celery
except ImportError as missing:  # pragma: no cover - exercised without the extra
    from aims_snaptrade.errors import SnapTradeConfigurationError

    raise SnapTradeConfigurationError(
        "the Celery integration needs Celery: pip install 'aims-snaptrade[celery]'"
    ) from missing

from aims_snaptrade.compliance.retention import days_ago, purge_audit_trail, sweep_consents
from aims_snaptrade.settings import Settings

__all__ = ["AUDIT_PURGE", "CONSENT_SWEEP", "register_retention_tasks", "retention_beat_schedule"]

AUDIT_PURGE = "aims_snaptrade.audit_purge"
CONSENT_SWEEP = "aims_snaptrade.consent_sweep"
_DAY = 86_400.0


def register_retention_tasks(
    celery_app: Celery, *, settings_factory: Callable[[], Settings] = Settings.from_env
) -> tuple[Any, Any]:
    """Register ``audit_purge(older_than_days)`` and ``consent_sweep(older_than_days)``; returns both tasks."""

    @celery_app.task(name=AUDIT_PURGE)  # type: ignore[untyped-decorator]
    def audit_purge(older_than_days: int) -> dict[str, Any]:
        """Remove audit records older than ``older_than_days``; returns what was removed."""
        before = days_ago(older_than_days)
        report = purge_audit_trail(settings_factory(), before)
        return {"removed": report.removed, "anchor_seq": report.anchor_seq, "before": before.isoformat()}

    @celery_app.task(name=CONSENT_SWEEP)  # type: ignore[untyped-decorator]
    def consent_sweep(older_than_days: int) -> dict[str, Any]:
        """Delete consent grants that lapsed more than ``older_than_days`` ago; returns how many."""
        before = days_ago(older_than_days)
        return {"removed": sweep_consents(settings_factory(), before), "before": before.isoformat()}

    return audit_purge, consent_sweep


def retention_beat_schedule(*, audit_days: int, consent_days: int, every: float = _DAY) -> dict[str, Any]:
    """Entries for ``app.conf.beat_schedule``: both tasks every ``every`` seconds (daily by default).

    ``audit_days``: keep audit records this many days; ``consent_days``: keep lapsed consent
    grants this many days after they lapsed.
    """
    days_ago(audit_days)  # the same checks the tasks make, at configuration time
    days_ago(consent_days)
    return {
        "aims-snaptrade-audit-purge": {"task": AUDIT_PURGE, "schedule": every, "args": (audit_days,)},
        "aims-snaptrade-consent-sweep": {"task": CONSENT_SWEEP, "schedule": every, "args": (consent_days,)},
    }
