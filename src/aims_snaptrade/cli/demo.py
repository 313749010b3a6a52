"""``aims-snaptrade demo``: the whole flow of an AIMS service, against an embedded emulator.

Every step goes through :class:`~aims_snaptrade.client.SafeSnapTradeClient` and the official SDK
to a :class:`~aims_snaptrade.testing.SnapTradeEmulator` on 127.0.0.1; nothing leaves the machine.
Each step checks what it shows, so the demo exits non-zero if the library misbehaves.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from aims_snaptrade.client import SafeSnapTradeClient
from aims_snaptrade.errors import SnapTradeConnectionDisabledError, SnapTradeGuardrailError
from aims_snaptrade.secrets import Keyring, SQLiteSecretStore

if TYPE_CHECKING:
    from aims_snaptrade.testing import SnapTradeEmulator

__all__ = ["run_demo"]


class DemoFailure(AssertionError):
    """A demo step did not show what it should."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)


def _step(title: str) -> None:
    print(f"\n== {title}")


def run_demo(*, verbose: bool = False) -> int:
    """Run the demo; returns 0 when every step showed the expected behaviour, 1 otherwise."""
    from aims_snaptrade.testing import SnapTradeEmulator

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="   log  %(name)s: %(message)s", stream=sys.stdout
    )
    user = "demo-user-1"
    with tempfile.TemporaryDirectory(prefix="aims-snaptrade-demo-") as tmp, SnapTradeEmulator() as emu:
        store_path = Path(tmp) / "secrets.db"
        store = SQLiteSecretStore(store_path, keyring=Keyring.generate("v1"))
        print(f"emulator   {emu.base_url}")
        print(f"secrets    {store_path} (SQLite, AES-GCM)")
        try:
            with SafeSnapTradeClient(
                client_id=emu.client_id,
                consumer_key=emu.consumer_key,
                environment="sandbox",
                base_url=emu.base_url,
                secret_store=store,
                retry="standard",
            ) as client:
                _flow(client, emu, user, store_path)
        except DemoFailure as failure:
            print(f"\nDEMO FAILED: {failure}")
            return 1
        finally:
            store.close()
        print(f"\nrequests   {len(emu.journal)} reached the emulator; statuses {_statuses(emu)}")
    print("\nDemo finished: every step behaved as expected.")
    return 0


def _statuses(emu: SnapTradeEmulator) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in emu.journal:
        key = str(entry.status) if entry.status is not None else "no answer"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _flow(client: SafeSnapTradeClient, emu: SnapTradeEmulator, user: str, store_path: Path) -> None:
    from aims_snaptrade.testing import Fault

    _step("API status and clock")
    status = client.api_status()
    print(f"   online={status.online} version={status.version} clock skew={status.clock_skew_seconds:+.3f} s")
    _check(status.online, "the API should be online")

    _step("Register a user (the secret SnapTrade issues is stored encrypted, never returned)")
    client.register_user(user)
    secret = client.secret_store.get(user)
    _check(secret is not None, "the user secret should be stored")
    assert secret is not None
    raw = b"".join(path.read_bytes() for path in store_path.parent.glob(store_path.name + "*"))  # db, -wal, -shm
    _check(secret.encode() not in raw, "the database file must not hold the plaintext secret")
    print(f"   registered {user}; database file holds no plaintext secret")

    _step("Connection Portal link (read-only; valid 5 minutes)")
    link = client.connection_portal_url(user, custom_redirect="https://aims.example/snaptrade/done")
    print(f"   {link.redirect_uri[:70]}... expires {link.expires_at:%H:%M:%S} UTC")
    emu.complete_connection(link.redirect_uri, brokerage="ALPACA")
    print("   (the emulator completes the portal as the user would)")

    _step("Accounts, balances, positions, activities")
    accounts = client.list_accounts(user)
    _check(len(accounts) > 0, "the connection should have accounts")
    for account in accounts:
        balances = client.get_balances(user, account.id)
        positions = client.get_positions(user, account.id)
        activities = client.get_activities(user, account.id)
        cash = ", ".join(f"{b.cash} {b.currency}" for b in balances)
        print(f"   {account.display_name or account.id}: {account.net_value_amount} {account.net_value_currency}")
        print(f"      cash {cash}; {len(positions)} positions; {len(activities)} activities (all pages)")
        for position in positions[:3]:
            print(f"      {position.symbol:<6} {position.units} x {position.price} {position.currency}")

    _step("Trading is refused unless enabled (nothing is sent)")
    before = len(emu.journal)
    try:
        client.place_order_now(user, accounts[0].id, action="BUY", symbol="AAPL", units=Decimal(1), confirm=True)
        raise DemoFailure("the order should have been refused")
    except SnapTradeGuardrailError as refused:
        print(f"   refused: {refused.message}")
    _check(len(emu.journal) == before, "a refused call must send nothing")

    _step("A transient SnapTrade failure is retried by policy")
    emu.faults.add(Fault.status(503), operation="list_all_user_accounts", times=1)
    client.list_accounts(user)
    print(f"   one 503, then success; retry counters {client.retry_stats.snapshot()}")

    _step("A broken connection: stale reads, then a reconnect link")
    authorization = accounts[0].connection_id
    assert authorization is not None
    emu.disable_connection(authorization)
    client.list_accounts(user)
    try:
        client.call("refresh_brokerage_authorization", user_id=user, authorization_id=authorization)
        raise DemoFailure("refreshing a disabled connection should fail")
    except SnapTradeConnectionDisabledError as broken:
        print(f"   {broken.status} code {broken.code}: reconnect authorization {broken.authorization_id}")
        repair = client.connection_portal_url(user, reconnect=broken.authorization_id)
        emu.complete_connection(repair.redirect_uri)
    client.call("refresh_brokerage_authorization", user_id=user, authorization_id=authorization)
    print("   repaired through the reconnect link; refresh accepted")

    _step("Rate-limit budgets")
    for usage in client.rate_limit_usage():
        print(f"   {usage.name:<10} {usage.used}/{usage.limit} per {usage.window} s ({usage.fraction:.0%})")

    _step("Delete the user (needs confirm=True; the local secret is purged)")
    deleted = client.delete_user(user, confirm=True)
    _check(deleted.local_secret_removed and client.secret_store.get(user) is None, "the secret should be purged")
    print(f"   {deleted.status}: {deleted.detail}")
