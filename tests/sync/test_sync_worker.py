"""The worker paths of webhook-driven sync: ``SyncWorker`` (asyncio) and the Celery beat schedule."""

from __future__ import annotations

import asyncio
import time

import pytest
from sync_helpers import client_kwargs, secrets_of, seed

from aims_snaptrade import AsyncSafeSnapTradeClient
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeValidationError
from aims_snaptrade.sync import SQLiteSyncLedger, SyncWorker, UserSyncResult
from aims_snaptrade.sync.batch import newest_mark
from aims_snaptrade.testing import SnapTradeEmulator


def test_the_worker_syncs_what_webhooks_marked_once_their_burst_settled(emu: SnapTradeEmulator) -> None:
    users = seed(emu, 3)
    alice = users[0]
    results: list[UserSyncResult] = []

    async def scenario() -> None:
        kw = client_kwargs(emu, secret_store=secrets_of(users), sync_ledger=SQLiteSyncLedger(":memory:"))
        async with AsyncSafeSnapTradeClient(**kw) as client:
            await client.sync_users([u.user_id for u in users])  # the ledger knows them, nothing is due
            emu.journal.clear()
            worker = SyncWorker(client, interval=3600, settle_seconds=0.3, on_result=results.append)
            async with worker:
                await _until(lambda: worker.passes >= 1)  # the first pass: nothing marked, nothing due
                assert results == [] and len(emu.journal) == 0
                account = alice.account_ids[0]
                for _ in range(3):  # a burst of webhooks for one account
                    await client.mark_from_webhook(
                        {"eventType": "ACCOUNT_HOLDINGS_UPDATED", "userId": alice.user_id, "accountId": account}
                    )
                    worker.wake()
                await _until(lambda: any(r.user_id == alice.user_id for r in results))
                ledger = client._open_ledger()
                record = ledger.load_user(alice.user_id)
                assert newest_mark(record) is None  # synced, marks cleared
            assert worker.passes >= 2
            # One sync for the burst: one balance and one positions read of the marked account only.
            assert sorted((e.operation, e.account_id) for e in emu.journal) == [
                ("get_all_account_positions", account),
                ("get_user_account_balance", account),
            ]
            assert [r.user_id for r in results] == [alice.user_id]

    asyncio.run(scenario())


async def _until(condition: object, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the worker never got there"
        await asyncio.sleep(0.01)


def test_the_worker_refuses_bad_settings(emu: SnapTradeEmulator) -> None:
    client = AsyncSafeSnapTradeClient(**client_kwargs(emu, sync_ledger=SQLiteSyncLedger(":memory:")))
    for bad in ({"interval": 0}, {"interval": float("inf")}, {"settle_seconds": -1}, {"concurrency": 0}):
        with pytest.raises(SnapTradeValidationError):
            SyncWorker(client, **bad)  # type: ignore[arg-type]


def test_the_celery_app_ships_a_beat_schedule_for_sync_due(monkeypatch: pytest.MonkeyPatch) -> None:
    celery = pytest.importorskip("aims_snaptrade.integrations.celery")
    schedule = celery.beat_schedule(30, queue="q")
    (entry,) = schedule.values()
    assert entry["task"] == "aims_snaptrade.sync_due" and entry["schedule"] == 30.0
    assert entry["options"] == {"queue": "q", "expires": 30.0}
    assert entry["kwargs"] == {"settle_seconds": 5.0}
    monkeypatch.setenv("SNAPTRADE_SYNC_DUE_INTERVAL", "7")
    app = celery.make_app("redis://127.0.0.1:6379/0", queue="mine")
    (entry,) = app.conf.beat_schedule.values()
    assert (entry["schedule"], entry["options"]["queue"]) == (7.0, "mine")
    assert "aims_snaptrade.sync_due" in app.tasks
    for bad in (0, -1, True):
        with pytest.raises(SnapTradeConfigurationError):
            celery.beat_schedule(bad)
    monkeypatch.setenv("SNAPTRADE_SYNC_DUE_INTERVAL", "soon")
    with pytest.raises(SnapTradeConfigurationError, match="SNAPTRADE_SYNC_DUE_INTERVAL"):
        celery.make_app("redis://127.0.0.1:6379/0")
