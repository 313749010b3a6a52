"""Celery: worker processes on the Redis broker sync every user exactly once, inside the budget.

The test starts one ``celery worker --concurrency 4`` (four prefork processes) on a queue and a
Redis key prefix of its own, sends one ``sync_user`` task per user plus duplicates, waits until
the PostgreSQL ledger shows every user synced and the emulator has been quiet for a moment, then
stops the worker. The suite syncs a slice; ``nox -s sync_load`` syncs 1,000 users.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from sync_helpers import FULL_LOAD, LOAD_USERS, POSTGRES_URL, REDIS_URL, client_kwargs, seed

from aims_snaptrade.secrets import SQLiteSecretStore
from aims_snaptrade.sync.ledger import PostgresSyncLedger
from aims_snaptrade.sync.records import LedgerChange
from aims_snaptrade.testing import SnapTradeEmulator

celery_integration = pytest.importorskip("aims_snaptrade.integrations.celery")

USERS = LOAD_USERS if FULL_LOAD else min(LOAD_USERS, 24)
WORKERS = 4

# The 1,000-user runs (nox -s sync_load) take minutes; the suite's slice stays well inside.
pytestmark = pytest.mark.timeout(1200 if FULL_LOAD else 120)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _quiet(emu: SnapTradeEmulator, seconds: float = 2.0) -> bool:
    last = emu.journal.last()
    return last is None or time.time() - last.time > seconds


def test_celery_workers_sync_each_user_exactly_once(emu: SnapTradeEmulator, tmp_path: Path, pg_schema: str) -> None:
    users = seed(emu, USERS)
    secrets = SQLiteSecretStore(tmp_path / "secrets.db")
    for user in users:
        secrets.put(user.user_id, user.user_secret)
    secrets.close()
    tag = uuid.uuid4().hex[:12]
    queue, prefix = f"aims-sync-test-{tag}", f"aims-sync-test-{tag}:"
    ledger_url = f"{POSTGRES_URL}?schema={pg_schema}&prefix=c{tag}_"
    budget = client_kwargs(emu)
    env = {
        **os.environ,
        "SNAPTRADE_CLIENT_ID": emu.client_id,
        "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_BASE_URL": emu.base_url,
        "SNAPTRADE_CONSENT_REQUIRED": "false",
        "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/secrets.db",
        "SNAPTRADE_SYNC_LEDGER_URL": ledger_url,
        "SNAPTRADE_RATE_LIMIT_STORAGE_URL": REDIS_URL,
        "SNAPTRADE_CUSTOMER_LIMIT": str(budget["customer_limit"]),
        "SNAPTRADE_CUSTOMER_LIMIT_WINDOW": str(budget["customer_limit_window"]),
        "SNAPTRADE_RATE_LIMIT_MAX_WAIT": "120",
        "SNAPTRADE_CELERY_BROKER_URL": REDIS_URL,
        "SNAPTRADE_CELERY_QUEUE": queue,
        "SNAPTRADE_CELERY_KEY_PREFIX": prefix,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "aims_snaptrade.integrations.celery", "worker",
        "--concurrency", str(WORKERS), "--pool", "prefork", "--queues", queue, "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    worker = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    ledger = PostgresSyncLedger(POSTGRES_URL, schema=pg_schema, prefix=f"c{tag}_")
    producer = celery_integration.make_app(REDIS_URL, queue=queue, key_prefix=prefix)
    started = time.monotonic()
    try:
        for user in users:
            producer.send_task("aims_snaptrade.sync_user", args=(user.user_id,), queue=queue)
        for user in users[: max(1, USERS // 10)]:  # duplicates: idempotent, never a second fetch
            producer.send_task("aims_snaptrade.sync_user", args=(user.user_id,), queue=queue)

        def all_synced() -> bool:
            assert worker.poll() is None, "the celery worker died"
            return all((r := ledger.load_user(u.user_id)) is not None and r.last_synced_at for u in users)

        _wait(all_synced, 120 + USERS * 0.5, "every user synced")
        _wait(lambda: _quiet(emu), 30, "the duplicates")
        elapsed = time.monotonic() - started
        listings = [emu.journal.count(user_id=u.user_id, operation="list_all_user_accounts") for u in users]
        print(
            f"celery: {WORKERS} worker processes, {USERS} users, {len(emu.journal)} requests in {elapsed:.1f} s, "
            f"429s={emu.journal.count(status=429)}"
        )
        assert emu.journal.count(status=429) == 0
        assert listings == [1] * len(users)
        # sync_due on the fleet: webhook marks on two accounts, one sync_due task, only those fetched.
        emu.journal.clear()
        marked = users[:2]
        for user in marked:
            ledger.mark(user.user_id, LedgerChange.HOLDINGS_DIRTY, time.time(), account_id=user.account_ids[0])
        producer.send_task("aims_snaptrade.sync_due", queue=queue)
        _wait(lambda: len(emu.journal) >= 2 * len(marked) and _quiet(emu), 60, "sync_due")
        assert {(e.user_id, e.account_id) for e in emu.journal} == {(u.user_id, u.account_ids[0]) for u in marked}
        assert len(emu.journal) == 2 * len(marked)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        ledger.close()
        broker = redis.Redis.from_url(REDIS_URL)
        for key in broker.scan_iter(match=f"{prefix}*"):
            broker.delete(key)
        broker.close()
