"""The reference service's Celery workers: ``celery -A worker worker`` (and ``celery -A worker beat``).

The library's tasks (``aims_snaptrade.sync_user``, ``aims_snaptrade.sync_due``) on an app configured
from ``SNAPTRADE_CELERY_BROKER_URL``, ``SNAPTRADE_CELERY_QUEUE`` and ``SNAPTRADE_CELERY_KEY_PREFIX``;
each worker process builds its client from the same ``SNAPTRADE_*`` environment as the web
replicas. The service queues ``sync_user`` for every user a webhook marks; beat sweeps up what
the polling policy makes due (and any mark whose queued task was lost) every few minutes.
"""

from __future__ import annotations

import os

from aims_snaptrade.integrations.celery import make_app

app = make_app()
app.conf.beat_schedule = {
    "aims-snaptrade-sync-due": {
        "task": "aims_snaptrade.sync_due",
        "schedule": float(os.environ.get("AIMS_SERVICE_SYNC_DUE_SECONDS", "300")),
    },
}
