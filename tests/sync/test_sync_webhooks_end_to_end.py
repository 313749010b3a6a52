"""Acceptance, end to end through the emulator command: portal links -> signed webhooks -> a
receiver whose handler only marks -> Celery (2 worker processes on the Redis broker, the shipped
beat schedule) syncs.

``aims-snaptrade emulator --webhook-url ... --journal ...`` runs in its own process and delivers
its webhooks to a uvicorn process serving ``WebhookReceiver.from_settings(mark)``; a Celery worker
with an embedded beat runs ``sync_due`` every second. The test registers users and completes a
portal link for each, then waits until the ledger shows every account synced. Expected: every
marked account synced once, no 5xx at the receiver, no ``SnapTradeSyncInProgressError``, and
requests only for the accounts the webhooks marked. The suite runs ``AIMS_E2E_USERS`` users
(default 30); the figures for 100 are in docs/portfolio-sync.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from sync_helpers import POSTGRES_URL, REDIS_URL

from aims_snaptrade import SafeSnapTradeClient, Settings
from aims_snaptrade.sync.ledger import PostgresSyncLedger
from aims_snaptrade.testing import complete_portal_link

pytest.importorskip("aims_snaptrade.integrations.celery")
sys.path.insert(0, str(Path(__file__).parents[1] / "webhooks"))
from webhook_helpers import UvicornProcess

USERS = int(os.environ.get("AIMS_E2E_USERS", "30"))
pytestmark = pytest.mark.timeout(300 + 3 * USERS)
ACCOUNT_READS = {"get_user_account_balance", "get_all_account_positions", "get_account_activities"}


def read_journal(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.exists() else []


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_portal_links_to_webhooks_to_marks_to_celery_sync(tmp_path: Path, pg_schema: str) -> None:
    tag = uuid.uuid4().hex[:12]
    client_id, consumer_key = f"AIMS-E2E-{tag}", "e2e-consumer-key-" + uuid.uuid4().hex  # budgets of its own
    queue, celery_prefix = f"aims-e2e-{tag}", f"aims-e2e-{tag}:"
    journal_path = tmp_path / "journal.jsonl"
    ledger_prefix = f"e{tag}_"
    env = {
        **os.environ,
        "SNAPTRADE_CLIENT_ID": client_id,
        "SNAPTRADE_CONSUMER_KEY": consumer_key,
        "SNAPTRADE_ENVIRONMENT": "sandbox",
        "SNAPTRADE_CONSENT_REQUIRED": "false",
        "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/secrets.db",
        "SNAPTRADE_SYNC_LEDGER_URL": f"{POSTGRES_URL}?schema={pg_schema}&prefix={ledger_prefix}",
        "SNAPTRADE_WEBHOOK_DEDUPE_URL": f"{REDIS_URL}?prefix=aims-e2e-claims:{tag}:",
        "SNAPTRADE_RATE_LIMIT_STORAGE_URL": REDIS_URL,
        "SNAPTRADE_RATE_LIMIT_MAX_WAIT": "180",
        "SNAPTRADE_CELERY_BROKER_URL": REDIS_URL,
        "SNAPTRADE_CELERY_QUEUE": queue,
        "SNAPTRADE_CELERY_KEY_PREFIX": celery_prefix,
        "SNAPTRADE_SYNC_DUE_INTERVAL": "1",
        "SNAPTRADE_SYNC_SETTLE_SECONDS": "2",
    }
    env.pop("SNAPTRADE_BASE_URL", None)
    here = str(Path(__file__).parent)
    # The receiver only marks: it never calls SnapTrade, so it needs no emulator URL.
    receiver = UvicornProcess(
        "sync_webhook_service:create_app",
        {**env, "PYTHONPATH": os.pathsep.join([here, env.get("PYTHONPATH", "")])},
        tmp_path / "receiver.log",
    )
    processes: list[subprocess.Popen[Any]] = []
    ledger = PostgresSyncLedger(POSTGRES_URL, schema=pg_schema, prefix=ledger_prefix)
    try:
        receiver.wait_ready()
        emulator = subprocess.Popen(
            [
                sys.executable, "-m", "aims_snaptrade", "emulator", "--port", "0", "--journal", str(journal_path),
                "--webhook-retry-scale", "0.001", "--webhook-url", receiver.url,
                "--client-id", client_id, "--consumer-key", consumer_key,
            ],
            env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        processes.append(emulator)
        assert emulator.stdout is not None
        banner = emulator.stdout.readline()
        base_url = re.search(r"listening on (\S+)", banner)
        assert base_url, banner
        env["SNAPTRADE_BASE_URL"] = base_url.group(1)
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "aims_snaptrade.integrations.celery", "worker", "--beat",
                "--schedule", str(tmp_path / "beat-schedule"), "--concurrency", "2", "--pool", "prefork",
                "--queues", queue, "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            env=env, start_new_session=True, stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(worker)

        users = [f"e2e-{tag}-{n:03d}" for n in range(USERS)]
        with SafeSnapTradeClient(Settings.from_env(env)) as client:
            for user_id in users:
                client.register_user(user_id)
                link = client.connection_portal_url(user_id)
                complete_portal_link(link.redirect_uri, scenario="cash_only")

        def all_synced() -> bool:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            for user_id in users:
                record = ledger.load_user(user_id)
                if record is None or record.accounts_synced_at is None or record.dirty_at is not None:
                    return False
                if not record.accounts or any(
                    a.holdings_synced_at is None
                    or a.activities_synced_at is None
                    or a.holdings_dirty_at is not None
                    or a.activities_dirty_at is not None
                    for a in record.accounts
                ):
                    return False
            return True

        wait(all_synced, 120 + 2 * USERS, "every marked account synced")
        quiet_since = [len(read_journal(journal_path)), time.monotonic()]

        def quiet() -> bool:  # no request and no delivery for 3 s: the beat found nothing more
            count = len(read_journal(journal_path))
            if count != quiet_since[0]:
                quiet_since[:] = [count, time.monotonic()]
            return time.monotonic() - quiet_since[1] > 3

        wait(quiet, 60, "the fleet to go quiet")
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        receiver_log = receiver.stop()
        broker = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"{celery_prefix}*", f"aims-e2e-claims:{tag}:*"):
            for key in broker.scan_iter(match=pattern):
                broker.delete(key)
        broker.close()

    journal = read_journal(journal_path)
    deliveries = [e for e in journal if e["operation"] == "webhook"]
    requests = [
        e for e in journal if e["operation"] not in ("webhook", None) and (e["user_id"] or "").startswith("e2e-")
    ]
    accounts = {a.account_id: user_id for user_id in users for a in (ledger.load_user(user_id) or _none()).accounts}
    ledger.close()
    worker_output = (tmp_path / "worker.log").read_text()
    statuses = Counter(int(m) for m in re.findall(r'HTTP/1\.1" (\d{3})', receiver_log))
    reads = Counter((e["operation"], e["account_id"]) for e in requests if e["operation"] in ACCOUNT_READS)
    listings = Counter((e["operation"], e["user_id"]) for e in requests if e["operation"].startswith("list_"))
    marked = {e["account_id"] for e in deliveries if e["account_id"]}
    print(
        f"e2e: {USERS} users, {len(deliveries)} webhook deliveries, receiver statuses {dict(statuses)}, "
        f"{len(requests)} SnapTrade requests, 429s={sum(e['status'] == 429 for e in journal)}"
    )

    assert len(accounts) >= USERS
    assert deliveries and all(e["status"] == 200 for e in deliveries)  # each delivered at once
    assert statuses and not any(status >= 500 for status in statuses)  # no 5xx at the receiver
    assert "SnapTradeSyncInProgressError" not in worker_output and "Traceback" not in worker_output
    assert marked == set(accounts)  # the webhooks marked every account...
    # ...and each marked account was synced once: one balance, one positions, one activities read.
    assert reads == Counter({(op, account): 1 for account in accounts for op in ACCOUNT_READS})
    # Per user: its registration, portal link and one listing of connections and accounts; nothing else.
    assert {op for op, _ in listings} == {"list_brokerage_authorizations", "list_all_user_accounts"}
    assert set(listings.values()) == {1}
    other = {e["operation"] for e in requests} - ACCOUNT_READS - {op for op, _ in listings}
    assert other <= {"register_snap_trade_user", "login_snap_trade_user"}
    assert sum(e["status"] == 429 for e in journal) == 0


def _none() -> Any:
    from aims_snaptrade.sync.records import UserRecord

    return UserRecord("none")
