"""The process SIGKILLed by ``test_trading_crash``: it journals an order, sends it, and waits for an answer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def place_and_wait(config: dict[str, Any]) -> None:
    """Place one order with a client journaling to ``config["db"]``; the emulator holds the answer."""
    import time

    from aims_snaptrade import CallOptions, SafeSnapTradeClient, SnapTradeError
    from aims_snaptrade.secrets import MemorySecretStore
    from aims_snaptrade.trading import SQLiteOrderIntentStore

    secrets = MemorySecretStore()
    secrets.put(config["user_id"], config["user_secret"])
    client = SafeSnapTradeClient(
        client_id=config["client_id"],
        consumer_key=config["consumer_key"],
        environment="sandbox",
        base_url=config["base_url"],
        secret_store=secrets,
        order_intent_store=SQLiteOrderIntentStore(config["db"]),
        trading_enabled=True,
        trade_limit_per_account=None,
        read_timeout=120,
        connect_timeout=0.25,
        retry="none",
    )
    # A short deadline keeps the journaled bound on when the request can leave (left_by) short;
    # should the call end before the kill, the child waits to be killed all the same.
    fast = CallOptions(deadline=0.5)
    terms = {"action": "BUY", "symbol": "AAPL", "units": Decimal(config["units"])}
    try:
        if config["kind"] == "checked":
            preview = client.preview_order(config["user_id"], config["account_id"], **terms)
            client.place_order(preview, confirmation=preview.confirmation, options=fast)
        else:
            client.place_order_now(config["user_id"], config["account_id"], confirm=True, options=fast, **terms)
    except SnapTradeError:
        time.sleep(120)
