"""Acceptance: erasing one user among several leaves no byte of that user's id or secret in any
file or table of any store; the others stay intact; the chain verifies; what follows is pseudonymous.

Every store of the personal-data registry holds something of each user first: secrets, consents,
audit records, order intents, sync-ledger rows, Redis rate-limit keys. Then one user is erased,
SnapTrade's ``USER_DELETED`` webhook arrives and a call naming the erased id is refused. SQLite:
every file of the data directory is read, WAL and SHM included. PostgreSQL: every row of every
table of the test's schema, as text. Redis: every budget key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from compliance_helpers import POSTGRES_URL

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.compliance import audit_webhooks
from aims_snaptrade.errors import SnapTradeConsentRequiredError
from aims_snaptrade.secrets import Keyring
from aims_snaptrade.testing import SnapTradeEmulator
from aims_snaptrade.webhooks import WebhookReceiver

REDIS_URL = os.environ.get("AIMS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AUDIT_SECRET = "erasure-test-audit-key-0123456789abcdef"
SCANNED = {"bytes": 0, "rows": 0, "keys": 0}
TERMS = {"action": "BUY", "symbol": "AAPL", "order_type": "Market", "time_in_force": "Day", "units": 1}


def _forms(value: str) -> list[bytes]:
    """The encodings a store might hold an id or secret in."""
    raw = value.encode()
    return [raw, value.encode("utf-16-le"), raw.hex().encode(), base64.b64encode(raw)]


def _stores(backend: str, where: str) -> dict[str, str]:
    if backend == "sqlite":
        return {
            "secret_store_url": f"sqlite:///{where}/secrets.db",
            "consent_store_url": f"sqlite:///{where}/consents.db",
            "audit_store_url": f"sqlite:///{where}/audit.db",
            "order_intent_store_url": f"sqlite:///{where}/intents.db",
            "sync_ledger_url": f"sqlite:///{where}/ledger.db",
        }
    url = f"{POSTGRES_URL}?schema={where}"
    return {
        "secret_store_url": url,
        "consent_store_url": url,
        "audit_store_url": url,
        "order_intent_store_url": url,
        "sync_ledger_url": url,
    }


def _webhook(receiver: WebhookReceiver, key: str, event_type: str, user_id: str) -> int:
    body = {
        "webhookId": str(uuid.uuid4()),
        "clientId": "AIMS-EMULATOR",
        "eventTimestamp": datetime.now(UTC).isoformat(),
        "userId": user_id,
        "eventType": event_type,
    }
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)  # SnapTrade's documented signing
    signature = base64.b64encode(hmac.new(key.encode(), text.encode(), hashlib.sha256).digest()).decode()
    return receiver.handle({"Signature": signature, "Content-Type": "application/json"}, text.encode()).status


def _scan_files(directory: Path) -> bytes:
    blob = b""
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        SCANNED["bytes"] += len(data)
        blob += data
    return blob


def _scan_tables(schema: str) -> bytes:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchall()
        ]
        assert len(tables) >= 6, tables
        rows: list[str] = []
        for table in tables:
            rows += [r[0] for r in conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()]
    SCANNED["rows"] += len(rows)
    blob = "\n".join(rows).encode()
    SCANNED["bytes"] += len(blob)
    return blob


def _scan_redis() -> bytes:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match="LIMITS*", count=1000))
    SCANNED["keys"] += len(keys)
    return b"\n".join(keys)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_erasing_one_user_leaves_no_byte_of_them_anywhere(backend: str, tmp_path: Path, pg_schema: str) -> None:
    tag = uuid.uuid4().hex[:10]
    where = str(tmp_path) if backend == "sqlite" else pg_schema
    with SnapTradeEmulator() as emu:
        users = {name: emu.connect(f"{name}-{tag}", brokerage="ALPACA") for name in ("alice", "bob", "carol")}
        settings: dict[str, Any] = {
            "client_id": emu.client_id,
            "consumer_key": emu.consumer_key,
            "environment": "sandbox",
            "base_url": emu.base_url,
            "encryption_keys": Keyring.generate("v1").export(),
            "audit_key": AUDIT_SECRET,
            "trading_enabled": True,
            "rate_limit_storage_url": REDIS_URL,
            # The customer budget's Redis key is the emulator's client id, shared with every other
            # test on this Redis: room enough that they never starve this one.
            "customer_limit": 100_000,
            # Per-account and per-user budgets: their Redis keys name accounts and users.
            "account_limit": 1000,
            "user_limit_per_minute": 1000,
            "retry": "none",
            **_stores(backend, where),
        }
        with SafeSnapTradeClient(**settings) as client:
            for user in users.values():
                client.secret_store.put(user.user_id, user.user_secret)
                client.grant_consent(user.user_id, "read", disclosure_version="v1", source="test")
                client.grant_consent(user.user_id, "trade", disclosure_version="v1", source="test")
                client.list_accounts(user.user_id)
                client.sync_portfolio(user.user_id, force=True)
                client.place_order_now(user.user_id, user.account_ids[0], **TERMS, confirm=True)
            bob = users["bob"]
            exported = client.export_user(bob.user_id)
            assert exported["local"]["order_intents"] and exported["local"]["sync"] is not None
            assert exported["local"]["consents"] and exported["local"]["audit_records"]

            receipt = client.erase_user(bob.user_id, confirm=True)
            assert receipt.local["order_intents_removed"] == 1 and receipt.local["consents_removed"] == 2
            assert receipt.local["secret_removed"] and receipt.local["sync_rows_removed"] >= 1
            assert receipt.local["rate_limits_removed"] >= 2  # the user's and its account's budget keys

            # What follows the erasure: SnapTrade's USER_DELETED webhook, then a call naming the id.
            receiver = WebhookReceiver(
                lambda event: None, consumer_key=emu.consumer_key, on_verified=audit_webhooks(client.audit_trail)
            )
            assert _webhook(receiver, emu.consumer_key, "USER_DELETED", bob.user_id) == 200
            sent = emu.journal.count()
            with pytest.raises(SnapTradeConsentRequiredError):
                client.list_accounts(bob.user_id)
            assert emu.journal.count() == sent  # refused locally

            last = client.audit_trail.tail(2)
            assert [r.action for r in last] == ["webhook.USER_DELETED", "list_all_user_accounts"]
            assert last[1].kind == "refused"
            assert all(r.user_id is None and r.user_ref == receipt.user_ref for r in last)
            assert client.audit_trail.verify().ok

            # The others are intact.
            for name in ("alice", "carol"):
                user = users[name]
                assert client.secret_store.get(user.user_id) == user.user_secret
                assert client.consent_store.decide(user.user_id, "read").allowed
                assert client.list_accounts(user.user_id)
                local = client.export_user(user.user_id)["local"]
                assert local["order_intents"] and local["sync"] is not None
            receiver.close()

        blob = _scan_files(tmp_path) if backend == "sqlite" else _scan_tables(pg_schema)
        keys = _scan_redis()
        for value in (bob.user_id, bob.user_secret, *bob.account_ids):
            for form in _forms(value):
                assert form not in blob, (value, form)
                assert form not in keys, (value, form)
        assert users["alice"].user_id.encode() in blob  # the scan sees what is there
        assert users["alice"].user_id.encode() not in keys  # shared keys hold keyed hashes only
        for account in users["alice"].account_ids:
            assert account.encode() not in keys
        assert b"/user/h-" in keys and b"/account/h-" in keys  # the per-user and per-account keys exist


def test_consent_revoked_in_one_process_is_refused_in_another_before_sending(tmp_path: Path) -> None:
    import subprocess
    import sys

    with SnapTradeEmulator() as emu:
        user = emu.connect(f"dana-{uuid.uuid4().hex[:8]}", brokerage="ALPACA")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SNAPTRADE_")},
            "SNAPTRADE_ENVIRONMENT": "sandbox",
            "SNAPTRADE_CLIENT_ID": emu.client_id,
            "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
            "SNAPTRADE_BASE_URL": emu.base_url,
            "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/aims.db",
            "SNAPTRADE_ENCRYPTION_KEYS": Keyring.generate("v1").export(),
            "SNAPTRADE_SYNC_LEDGER_URL": "memory://",
            "SNAPTRADE_RETRY_POLICY": "none",
        }
        script = (
            "import sys, time\n"
            "from aims_snaptrade import SafeSnapTradeClient, SnapTradeConsentRequiredError\n"
            "with SafeSnapTradeClient.from_env() as client:\n"
            f"    client.secret_store.put({user.user_id!r}, {user.user_secret!r})\n"
            f"    client.grant_consent({user.user_id!r}, 'read', disclosure_version='v1', source='web')\n"
            f"    client.list_accounts({user.user_id!r})\n"
            "    print('granted', flush=True)\n"
            "    sys.stdin.readline()  # the other process revokes meanwhile\n"
            "    try:\n"
            f"        client.list_accounts({user.user_id!r})\n"
            "        print('sent')\n"
            "    except SnapTradeConsentRequiredError as refused:\n"
            "        print('refused', refused.reason)\n"
        )
        service = subprocess.Popen(
            [sys.executable, "-c", script], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert service.stdout is not None and service.stdin is not None
            assert service.stdout.readline().strip() == "granted"
            before = emu.journal.count(operation="list_all_user_accounts")
            revoke = subprocess.run(
                [sys.executable, "-m", "aims_snaptrade", "consent", "revoke", user.user_id, "--source", "support"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert revoke.returncode == 0, revoke.stderr
            service.stdin.write("\n")
            service.stdin.flush()
            assert service.stdout.readline().strip() == "refused revoked"
            assert emu.journal.count(operation="list_all_user_accounts") == before  # nothing was sent
        finally:
            service.kill()
            service.wait(10)


def test_print_bytes_scanned() -> None:
    print(f"erasure scan: {SCANNED['bytes']:,} bytes, {SCANNED['rows']} PostgreSQL rows, {SCANNED['keys']} Redis keys")
