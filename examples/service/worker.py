"""The reference service's Celery workers: ``celery -A worker worker``, and one ``celery -A worker beat``.

The library's app: its tasks (``aims_snaptrade.sync_user``, ``aims_snaptrade.sync_due``) and its
beat schedule, configured from ``SNAPTRADE_CELERY_BROKER_URL``, ``SNAPTRADE_CELERY_QUEUE``,
``SNAPTRADE_CELERY_KEY_PREFIX``, ``SNAPTRADE_SYNC_DUE_INTERVAL`` (default 60 s) and
``SNAPTRADE_SYNC_SETTLE_SECONDS`` (default 5 s). Each worker process builds its client from the
same ``SNAPTRADE_*`` environment as the web replicas. The web replicas only mark the sync ledger
from webhooks; every ``sync_due`` run syncs each marked (or, by the polling policy, due) user
once its marks have settled, inside the shared budget.
"""

from __future__ import annotations

from aims_snaptrade.integrations.celery import make_app

app = make_app()
