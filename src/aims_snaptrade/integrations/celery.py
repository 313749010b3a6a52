"""Celery tasks and a beat schedule for fleets: ``aims_snaptrade.sync_user`` and ``aims_snaptrade.sync_due``.

Install ``aims-snaptrade[celery,redis,postgres]`` and run workers and one beat with::

    celery -A aims_snaptrade.integrations.celery worker --queues aims-snaptrade-sync
    celery -A aims_snaptrade.integrations.celery beat     # exactly one beat per fleet

The app ships a beat schedule (:func:`beat_schedule`): ``sync_due`` every
``SNAPTRADE_SYNC_DUE_INTERVAL`` seconds (default 60). That is the worker path of webhook-driven
sync: a webhook handler only marks the ledger (``client.mark_from_webhook(event)``, cheap,
idempotent, no SnapTrade request), and each ``sync_due`` run queues one ``sync_user`` per user with
something due or marked whose marks have settled (``SNAPTRADE_SYNC_SETTLE_SECONDS``, default 5),
so a burst of webhooks for one user becomes one sync.

Every worker process builds one :class:`~aims_snaptrade.SafeSnapTradeClient` from the
``SNAPTRADE_*`` environment on its first task. For a fleet, point them all at the same Redis
budgets (``SNAPTRADE_RATE_LIMIT_STORAGE_URL``), the same PostgreSQL ledger
(``SNAPTRADE_SYNC_LEDGER_URL``) and the same secret store. The tasks are idempotent and safe on
any number of workers: a duplicate finds nothing due, or the user's lease held by another worker,
and sends nothing (the holder syncs what was marked meanwhile before it releases the user).

The app reads ``SNAPTRADE_CELERY_BROKER_URL`` (default ``redis://127.0.0.1:6379/0``),
``SNAPTRADE_CELERY_QUEUE`` (default ``aims-snaptrade-sync``) and ``SNAPTRADE_CELERY_KEY_PREFIX``
(a Redis key prefix for the broker's keys, to share one Redis between apps). To put the tasks on
your own Celery app instead, call :func:`register_tasks`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

try:
    from celery import Celery
except ImportError as missing:  # pragma: no cover - exercised without the extra
    from aims_snaptrade.errors import SnapTradeConfigurationError

    raise SnapTradeConfigurationError(
        "the Celery integration needs Celery: pip install 'aims-snaptrade[celery]'"
    ) from missing

from aims_snaptrade.client import SafeSnapTradeClient
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeError
from aims_snaptrade.sync.batch import DEFAULT_SETTLE_SECONDS, due_page
from aims_snaptrade.sync.flow import SnapTradeSyncInProgressError
from aims_snaptrade.sync.snapshot import SyncFailure

__all__ = ["DEFAULT_QUEUE", "DEFAULT_SYNC_DUE_INTERVAL", "app", "beat_schedule", "make_app", "register_tasks"]

DEFAULT_QUEUE = "aims-snaptrade-sync"
SYNC_USER = "aims_snaptrade.sync_user"
SYNC_DUE = "aims_snaptrade.sync_due"
_PAGE = 500
DEFAULT_SYNC_DUE_INTERVAL = 60.0
"""Seconds between two ``sync_due`` runs of the shipped beat schedule."""


class _ProcessClient:
    """One client per worker process, built on first use (after the prefork pool forked)."""

    def __init__(self, factory: Callable[[], SafeSnapTradeClient]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._client: SafeSnapTradeClient | None = None
        self._pid = 0

    def get(self) -> SafeSnapTradeClient:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = self._factory(), os.getpid()
            return self._client


def register_tasks(
    celery_app: Celery,
    *,
    client_factory: Callable[[], SafeSnapTradeClient] = SafeSnapTradeClient.from_env,
    queue: str = DEFAULT_QUEUE,
) -> tuple[Any, Any]:
    """Register ``sync_user`` and ``sync_due`` on ``celery_app``; returns the two tasks.

    Args:
        celery_app: Your Celery application.
        client_factory: Builds the worker process's client (default: from ``SNAPTRADE_*``).
        queue: Where ``sync_due`` queues the ``sync_user`` tasks it fans out.
    """
    clients = _ProcessClient(client_factory)

    @celery_app.task(name=SYNC_USER)  # type: ignore[untyped-decorator]
    def sync_user(user_id: str, force: bool = False) -> dict[str, Any]:
        """Sync what is due of one user; the summary says ``synced``, ``busy`` or ``failed``."""
        try:
            snapshot = clients.get().sync_portfolio(user_id, force=force)
        except SnapTradeSyncInProgressError:
            return {"user_id": user_id, "status": "busy", "requests": 0}
        except SnapTradeError as error:
            # Reported, not raised: Celery's own retries would hammer a failing user.
            return {"user_id": user_id, "status": "failed", "error": SyncFailure.from_error(error).model_dump()}
        states: dict[str, int] = {}
        for account in snapshot.accounts:
            states[account.state.value] = states.get(account.state.value, 0) + 1
        return {"user_id": user_id, "status": "synced", "requests": snapshot.requests, "accounts": states}

    @celery_app.task(name=SYNC_DUE)  # type: ignore[untyped-decorator]
    def sync_due(settle_seconds: float = 0.0) -> int:
        """Queue one ``sync_user`` per user with anything due or webhook-marked; returns how many.

        A user marked less than ``settle_seconds`` ago is left for the next run (the beat schedule
        passes ``SNAPTRADE_SYNC_SETTLE_SECONDS``), so that one sync covers a burst of webhooks.
        """
        client = clients.get()
        client._open_ledger()
        queued = 0
        after: str | None = None
        while True:
            ready, after = client._run(due_page(client.sync_policy, after, _PAGE, settle_seconds))
            for user_id in ready:
                sync_user.apply_async(args=(user_id,), queue=queue)
                queued += 1
            if after is None:
                return queued

    return sync_user, sync_due


def beat_schedule(
    interval: float = DEFAULT_SYNC_DUE_INTERVAL,
    *,
    queue: str = DEFAULT_QUEUE,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
) -> dict[str, Any]:
    """The beat schedule that runs ``sync_due`` every ``interval`` seconds on ``queue``, leaving users
    marked less than ``settle_seconds`` ago for the next run.

    Merge it into your own app's ``beat_schedule`` when you use :func:`register_tasks`. A run that
    has not started within ``interval`` expires instead of piling up behind a busy fleet.
    """
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        raise SnapTradeConfigurationError(f"the sync_due interval must be positive seconds, got {interval!r}")
    if isinstance(settle_seconds, bool) or not isinstance(settle_seconds, int | float) or not settle_seconds >= 0:
        raise SnapTradeConfigurationError(f"settle_seconds must be seconds >= 0, got {settle_seconds!r}")
    return {
        "aims-snaptrade-sync-due": {
            "task": SYNC_DUE,
            "schedule": float(interval),
            "kwargs": {"settle_seconds": float(settle_seconds)},
            "options": {"queue": queue, "expires": float(interval)},
        }
    }


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SnapTradeConfigurationError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise SnapTradeConfigurationError(f"{name} must be a finite number of seconds >= 0, got {raw!r}")
    return value


def make_app(
    broker_url: str | None = None,
    *,
    queue: str | None = None,
    key_prefix: str | None = None,
    client_factory: Callable[[], SafeSnapTradeClient] = SafeSnapTradeClient.from_env,
    sync_due_interval: float | None = None,
    settle_seconds: float | None = None,
) -> Celery:
    """A Celery app with the two tasks and the beat schedule, configured from arguments or the environment.

    ``SNAPTRADE_CELERY_BROKER_URL``, ``SNAPTRADE_CELERY_QUEUE``, ``SNAPTRADE_CELERY_KEY_PREFIX``,
    ``SNAPTRADE_SYNC_DUE_INTERVAL`` (seconds between ``sync_due`` runs, default 60) and
    ``SNAPTRADE_SYNC_SETTLE_SECONDS`` (default 5).
    """
    broker = broker_url or os.environ.get("SNAPTRADE_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    queue_name = queue or os.environ.get("SNAPTRADE_CELERY_QUEUE", DEFAULT_QUEUE)
    prefix = key_prefix if key_prefix is not None else os.environ.get("SNAPTRADE_CELERY_KEY_PREFIX", "")
    interval = (
        sync_due_interval
        if sync_due_interval is not None
        else _seconds_from_env("SNAPTRADE_SYNC_DUE_INTERVAL", DEFAULT_SYNC_DUE_INTERVAL)
    )
    settle = (
        settle_seconds
        if settle_seconds is not None
        else _seconds_from_env("SNAPTRADE_SYNC_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS)
    )
    celery_app = Celery("aims_snaptrade", broker=broker)
    options: dict[str, Any] = {"global_keyprefix": prefix} if prefix else {}
    celery_app.conf.update(
        broker_transport_options=options,
        task_default_queue=queue_name,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,  # a worker takes one user at a time: fair across the fleet
        task_acks_late=True,  # a task whose worker died is redelivered (the lease makes it safe)
        worker_hijack_root_logger=False,
        beat_schedule=beat_schedule(interval, queue=queue_name, settle_seconds=settle),
    )
    register_tasks(celery_app, client_factory=client_factory, queue=queue_name)
    return celery_app


app = make_app()
"""The app ``celery -A aims_snaptrade.integrations.celery worker`` runs."""
