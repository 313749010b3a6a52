"""SIGKILL between sending an order and its answer: after restart the intent is listed and settled.

``AIMS_TRADING_KILLS`` sets the number of kills (10 here, 100 in ``nox -s trading``). Half the
orders are processed before the kill (the emulator holds the answer), half never are (held
unprocessed); half are confirmed previews, half force orders. Children come from a forkserver
that has the library imported, so a kill costs a fork, not an interpreter start.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from crash_child import place_and_wait

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import Fault, SnapTradeEmulator
from aims_snaptrade.trading import SQLiteOrderIntentStore

KILLS = int(os.environ.get("AIMS_TRADING_KILLS", "10"))


def _wait_until(condition, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the child never got its order to the emulator"
        time.sleep(0.005)


def test_sigkill_between_send_and_answer(tmp_path: Path) -> None:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["aims_snaptrade.client", "aims_snaptrade.trading", "crash_child"])
    db = tmp_path / "intents.db"
    counts: Counter[str] = Counter()
    with SnapTradeEmulator(customer_rate_limit=None) as emu:
        user = emu.connect("crash", brokerage="ALPACA")
        account = user.account_ids[0]
        secrets = MemorySecretStore()
        secrets.put(user.user_id, user.user_secret)
        for kill in range(KILLS):
            processed, kind = kill % 2 == 0, ("checked", "force")[(kill // 2) % 2]
            operation = "place_order" if kind == "checked" else "place_force_order"
            rule = emu.faults.add(Fault.hold(60) if processed else Fault.timeout(60), operation=operation)
            orders_before = len(emu.state.get_account(account).orders)
            child = context.Process(
                target=place_and_wait,
                args=(
                    {
                        "base_url": emu.base_url,
                        "client_id": emu.client_id,
                        "consumer_key": emu.consumer_key,
                        "user_id": user.user_id,
                        "user_secret": user.user_secret,
                        "account_id": account,
                        "db": str(db),
                        "kind": kind,
                        "units": f"0.{kill + 1:03d}",
                    },
                ),
            )
            child.start()
            if processed:
                _wait_until(lambda: len(emu.state.get_account(account).orders) > orders_before)  # noqa: B023
            else:
                _wait_until(lambda: rule.matched > 0)  # noqa: B023
            os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
            child.join()
            assert child.exitcode == -signal.SIGKILL
            counts["kills"] += 1
            rule.remove()

            with SafeSnapTradeClient(
                client_id=emu.client_id,
                consumer_key=emu.consumer_key,
                environment="sandbox",
                base_url=emu.base_url,
                secret_store=secrets,
                order_intent_store=SQLiteOrderIntentStore(db),
                trading_enabled=True,
                order_settle_seconds=0,  # the held request is never processed (Fault.timeout)
                retry="none",
            ) as restarted:
                pending = restarted.pending_order_intents
                assert len(pending) == 1, pending
                counts["listed after restart"] += 1
                intent = pending[0]
                verdict = restarted.reconcile_order(intent)
                if verdict.outcome == "unknown":
                    # Not found before the last moment the dead child's request could have left.
                    assert verdict.unknown_reason == "settling" and not processed, (kill, verdict)
                    assert intent.left_by is not None
                    time.sleep(max(0.0, (intent.left_by - datetime.now(UTC)).total_seconds()) + 0.01)
                    counts["looked again after left_by"] += 1
                    verdict = restarted.reconcile_order(intent)
                book = [
                    o
                    for o in emu.state.get_account(account).orders
                    if (
                        o.trade_id == intent.trade_id
                        if kind == "checked"
                        else o.client_order_id == intent.client_order_id
                    )
                ]
                expected = "placed" if processed else "not_placed"
                assert verdict.outcome == expected, (kill, verdict)
                assert len(book) == (1 if processed else 0)
                if processed:
                    assert verdict.order is not None
                    assert verdict.order.brokerage_order_id == book[0].brokerage_order_id
                counts[f"settled {expected}"] += 1
                assert restarted.pending_order_intents == []
    print(
        f"\nSIGKILL trials: kills={counts['kills']}, listed after restart={counts['listed after restart']}, "
        f"settled correctly: placed={counts['settled placed']}, not placed={counts['settled not_placed']}"
    )
    assert counts["listed after restart"] == counts["settled placed"] + counts["settled not_placed"] == KILLS
