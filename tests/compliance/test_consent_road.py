"""Acceptance: consent decided on the road before anything is sent, sync and async, on the emulator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest

from aims_snaptrade import AsyncSafeSnapTradeClient, SafeSnapTradeClient, SnapTradeConsentRequiredError
from aims_snaptrade.compliance import ConsentDecision


def _run(kind, kwargs, steps):
    """Run ``steps(call)`` with a sync or async client; ``call(method, *args)`` performs one call."""
    if kind == "sync":
        with SafeSnapTradeClient(**kwargs) as client:
            return steps(lambda method, *a, **k: getattr(client, method)(*a, **k))

    async def main():
        async with AsyncSafeSnapTradeClient(**kwargs) as client:
            loop = asyncio.get_running_loop()
            results = []

            def call(method, *a, **k):
                # The steps are written synchronously: hop to a worker and await the call there.
                future = asyncio.run_coroutine_threadsafe(getattr(client, method)(*a, **k), loop)
                return future.result()

            results.append(await asyncio.to_thread(steps, call))
            return results[0]

    return asyncio.run(main())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_without_consent_nothing_is_sent_then_grant_expiry_and_revocation(kind, kwargs, consents, clock, emu, alice):
    def steps(call):
        with pytest.raises(SnapTradeConsentRequiredError) as refused:
            call("list_accounts", alice.user_id)
        assert refused.value.scope == "read"
        assert refused.value.reason == "missing"
        assert "'read'" in str(refused.value)
        assert emu.journal.count(user_id=alice.user_id) == 0

        granted = consents.grant(alice.user_id, "read", disclosure_version="v3", source="test")
        assert call("list_accounts", alice.user_id)
        assert emu.journal.count(user_id=alice.user_id) == 1

        # One day past the expiry: refused at once, naming when it expired.
        clock.now = granted.expires_at + timedelta(days=1)
        with pytest.raises(SnapTradeConsentRequiredError) as expired:
            call("list_accounts", alice.user_id)
        assert expired.value.reason == "expired"
        assert expired.value.expires_at == granted.expires_at
        assert granted.expires_at.isoformat() in str(expired.value)
        assert emu.journal.count(user_id=alice.user_id) == 1

        consents.grant(alice.user_id, "read", disclosure_version="v4", source="test")
        assert call("list_accounts", alice.user_id)
        assert emu.journal.count(user_id=alice.user_id) == 2

    _run(kind, kwargs(consent=consents), steps)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_revocation_by_another_process_is_seen_by_the_next_call(kind, kwargs, consents, db_path, emu, alice):
    consents.grant(alice.user_id, "read", disclosure_version="v3", source="test")
    revoke = (
        "import sys; from aims_snaptrade.compliance import SQLiteConsentStore; "
        "s = SQLiteConsentStore(sys.argv[1]); print(s.revoke(sys.argv[2], source='other-process')); s.close()"
    )

    def steps(call):
        assert call("list_accounts", alice.user_id)
        out = subprocess.run(
            [sys.executable, "-c", revoke, str(db_path), alice.user_id], capture_output=True, text=True
        )
        assert out.stdout.strip() == "1", out.stderr
        with pytest.raises(SnapTradeConsentRequiredError) as refused:
            call("list_accounts", alice.user_id)
        assert refused.value.reason == "revoked"
        assert "revoked" in str(refused.value)
        assert emu.journal.count(user_id=alice.user_id) == 1

    _run(kind, kwargs(consent=consents), steps)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_trade_scope_is_separate_from_read(kind, kwargs, consents, emu, alice):
    consents.grant(alice.user_id, "read", disclosure_version="v3", source="test")
    order = (alice.user_id, alice.account_ids[0])
    terms = {"action": "BUY", "symbol": "AAPL", "units": Decimal(1), "confirm": True}

    def steps(call):
        assert call("list_accounts", alice.user_id)
        with pytest.raises(SnapTradeConsentRequiredError) as refused:
            call("place_order_now", *order, **terms)
        assert refused.value.scope == "trade"
        assert emu.journal.count(operation="place_force_order") == 0
        consents.grant(alice.user_id, "trade", disclosure_version="v3", source="test")
        assert call("place_order_now", *order, **terms).status == "EXECUTED"
        consents.revoke(alice.user_id, "read", source="test")
        with pytest.raises(SnapTradeConsentRequiredError):
            call("list_accounts", alice.user_id)
        assert call("place_order_now", *order, **terms).status == "EXECUTED"  # trade consent stands alone

    _run(kind, kwargs(consent=consents, trading_enabled=True, order_intent_store_url="memory://"), steps)


def test_async_client_never_decides_consent_on_its_event_loop(kwargs, emu, alice):
    loop_threads = []

    class Recording:
        def decide(self, user_id, scope):
            import threading

            loop_threads.append(threading.current_thread() is threading.main_thread())
            return ConsentDecision(True, scope, "granted")

        def has_consent(self, user_id, scope):
            return True

    async def main():
        async with AsyncSafeSnapTradeClient(**kwargs(consent=Recording())) as client:
            await client.list_accounts(alice.user_id)

    asyncio.run(main())
    assert loop_threads == [False]  # asked from a worker thread, never the loop's thread
