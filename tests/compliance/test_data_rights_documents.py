"""The export document and the erasure receipt in full, as docs/compliance.md ("Data rights") describes them.

- ``export_user``: ``local`` has one entry per registered store; ``snaptrade`` has the
  registration, and for a registered user whose secret is stored the connections, accounts and,
  per account, balances, positions and every page of activities (1,000 a page, no page asked
  for past the total); the per-call ``options`` apply to every call; the export is audited.
- ``erase_user``: needs ``confirm=True`` exactly (anything else is refused, audited, nothing
  deleted); the receipt names what SnapTrade answered and what each store removed, and the user's
  pseudonym; the erasure is audited with pseudonyms only.
- Both skip the rollout and consent checks: a person may exercise these rights after withdrawing
  consent, and users outside a rollout can still be cleaned up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from compliance_helpers import AUDIT_SECRET

from aims_snaptrade import SafeSnapTradeClient, SnapTradeGuardrailError
from aims_snaptrade._transport import SyncTransport
from aims_snaptrade.compliance import AuditEvent, AuditKey, SQLiteAuditTrail
from aims_snaptrade.errors import SnapTradeError, SnapTradeValidationError
from aims_snaptrade.pipeline import CallOptions
from aims_snaptrade.retry import RetryPolicy
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator
from aims_snaptrade.testing.faults import Fault

READS = (
    "list_snap_trade_users",
    "list_brokerage_authorizations",
    "list_all_user_accounts",
    "get_user_account_balance",
    "get_all_account_positions",
    "get_account_activities",
)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[SnapTradeEmulator, ConnectedUser, SafeSnapTradeClient]]:
    """A client that would refuse every ordinary call for the user: no consent, outside the rollout."""
    db = tmp_path / "aims.db"
    with SnapTradeEmulator() as emu:
        user = emu.connect("dora-5e1c", brokerage="ALPACA")
        settings = {
            "client_id": emu.client_id,
            "consumer_key": emu.consumer_key,
            "environment": "sandbox",
            "base_url": emu.base_url,
            "secret_store_url": "memory://",
            "consent_store_url": f"sqlite:///{db}",
            "audit_key": AUDIT_SECRET,
            "audit_store_url": f"sqlite:///{db}",
            "sync_ledger_url": f"sqlite:///{db}",
            "rollout": "allow=somebody-else",
            "retry": "none",
        }
        with SafeSnapTradeClient(**settings) as client:
            client.secret_store.put(user.user_id, user.user_secret)
            yield emu, user, client


def _near_now(iso: str) -> bool:
    moment = datetime.fromisoformat(iso)
    return moment.tzinfo is not None and abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


def test_the_export_holds_every_page_of_snaptrade_data_and_every_store(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, user, client = world
    first, second = (emu.state.get_account(a) for a in user.account_ids)
    assert len(first.activities) == 1200  # two pages
    second.activities = list(first.activities[:1000])  # exactly one full page: the total says it is the last
    for operation in READS:  # every call fails once: only the export's own retry options get past it
        emu.faults.add(Fault.status(503), operation=operation, times=1)
    options = CallOptions(retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01))
    pages: list[tuple[str, int, int]] = []  # what each activities request asked for
    send = SyncTransport.send

    def spy(transport: SyncTransport, operation: Any, arguments: Any, timeouts: Any) -> Any:
        if operation.name == "get_account_activities":
            pages.append((arguments["account_id"], arguments["offset"], arguments["limit"]))
        return send(transport, operation, arguments, timeouts)

    monkeypatch.setattr(SyncTransport, "send", spy)
    document = client.export_user(user.user_id, options=options)
    assert sorted(set(pages)) == sorted([(first.id, 0, 1000), (first.id, 1000, 1000), (second.id, 0, 1000)])

    assert set(document) == {"user_id", "exported_at", "local", "snaptrade"}
    assert document["user_id"] == user.user_id and _near_now(document["exported_at"])
    assert list(document["local"]) == client.personal_data.names()
    assert document["local"]["secret"] == {"stored": True, "rotation_pending": False}
    remote = document["snaptrade"]
    assert set(remote) == {"user", "connections", "accounts", "account_data"}
    assert remote["user"] == {"user_id": user.user_id, "registered": True}
    assert [c["id"] for c in remote["connections"]] == [user.authorization_id]
    assert [a["id"] for a in remote["accounts"]["results"]] == list(user.account_ids)
    assert list(remote["account_data"]) == list(user.account_ids)
    for account in (first, second):
        data = remote["account_data"][account.id]
        assert set(data) == {"balances", "positions", "activities"}
        assert [a["id"] for a in data["activities"]] == [a.id for a in account.activities]
        assert data["balances"] and data["positions"]
    pages = math.ceil(1200 / 1000) + 1
    assert emu.journal.count(operation="get_account_activities", status=200) == pages
    assert emu.journal.count(operation="get_account_activities") == pages + 1  # the one 503, retried

    (record,) = [r for r in client.audit_trail.records_for_user(user.user_id) if r.action == "data_rights.export"]
    assert (record.kind, record.user_id) == ("data_rights", user.user_id)
    counts = {name: len(value) for name, value in document["local"].items() if isinstance(value, list)}
    assert record.to_json()["detail"] == {**counts, "registered": True}
    assert "consents" in counts and "audit_records" in counts


def test_the_export_of_a_user_snaptrade_does_not_know_or_without_a_secret_asks_no_more(world: Any) -> None:
    emu, user, client = world
    document = client.export_user("never-registered")
    assert document["snaptrade"] == {"user": {"user_id": "never-registered", "registered": False}}
    assert document["local"]["secret"]["stored"] is False
    client.secret_store.delete(user.user_id)
    document = client.export_user(user.user_id)
    assert document["snaptrade"] == {"user": {"user_id": user.user_id, "registered": True}}
    assert emu.journal.count(operation="list_all_user_accounts") == 0


@pytest.mark.parametrize("confirm", [False, None, 1, "yes", [True]])
def test_erasure_without_confirm_true_is_refused_and_audited(world: Any, confirm: Any) -> None:
    emu, user, client = world
    with pytest.raises(SnapTradeGuardrailError) as refused:
        client.erase_user(user.user_id, confirm=confirm)
    assert refused.value.operation == "erase_user"
    assert refused.value.message == (
        f"erase_user({user.user_id!r}) deletes the user at SnapTrade and locally, and needs confirm=True."
    )
    assert refused.value.hint == "Pass confirm=True once you are sure; nothing was deleted."
    assert emu.journal.count(operation="delete_snap_trade_user") == 0
    assert client.secret_store.get(user.user_id) == user.user_secret
    (record,) = client.audit_trail.tail(1)
    assert (record.kind, record.action, record.user_id, record.outcome) == (
        "refused",
        "erase_user",
        user.user_id,
        "SnapTradeGuardrailError",
    )


def test_the_erasure_receipt_and_record_name_what_was_removed(world: Any) -> None:
    emu, user, client = world
    client.grant_consent(user.user_id, "read", disclosure_version="v1", source="test")
    receipt = client.erase_user(user.user_id, confirm=True)

    deleted = emu.journal.last(operation="delete_snap_trade_user")
    assert deleted is not None and deleted.status == 200
    assert receipt.snaptrade == {
        "deleted": True,
        "status": "deleted",
        "detail": "User queued for deletion; please wait for webhook for confirmation.",
        "request_id": deleted.request_id,
    }
    assert receipt.user_ref == client.audit_trail.pseudonym(user.user_id)
    assert _near_now(receipt.erased_at)
    assert receipt.local == {
        "secret_removed": True,
        "consents_removed": 1,
        "sync_rows_removed": 0,
        "rate_limits_removed": 0,
        "webhook_claims_removed": 0,
        "audit_records_pseudonymised": 2,  # the grant's and the deleteUser call's records
    }
    assert client.secret_store.get(user.user_id) is None
    (record,) = client.audit_trail.tail(1)
    assert (record.kind, record.action, record.user_id, record.user_ref) == (
        "data_rights",
        "data_rights.erase",
        None,
        receipt.user_ref,
    )
    assert record.to_json()["detail"] == {"snaptrade_deleted": True, **receipt.local}
    assert receipt.to_json() == {
        "user_ref": receipt.user_ref,
        "erased_at": receipt.erased_at,
        "snaptrade": receipt.snaptrade,
        "local": receipt.local,
    }

    again = client.erase_user(user.user_id, confirm=True)  # SnapTrade no longer knows the user
    assert again.snaptrade == {
        "deleted": False,
        "reason": "not registered",
        "request_id": emu.journal.last(operation="delete_snap_trade_user").request_id,
    }
    assert again.local["secret_removed"] is False and again.local["consents_removed"] == 0
    assert client.audit_trail.tail(1)[0].to_json()["detail"]["snaptrade_deleted"] is False


class SelfForgettingSecrets(MemorySecretStore):
    """A custom secret store that exports and forgets users itself (joins the registry as it is)."""

    def export_user(self, user_id: str) -> dict[str, bool]:
        return {"stored": self.get(user_id) is not None}

    def forget_user(self, user_id: str) -> int:
        return int(bool(self.delete(user_id)))


def test_an_erased_users_secret_is_not_used_from_the_cache_afterwards() -> None:
    with SnapTradeEmulator() as emu:
        user = emu.connect("cached-7b2e", brokerage="ALPACA")
        secrets = SelfForgettingSecrets()
        secrets.put(user.user_id, user.user_secret)
        settings = {
            "client_id": emu.client_id,
            "consumer_key": emu.consumer_key,
            "environment": "sandbox",
            "base_url": emu.base_url,
            "secret_store": secrets,
            "consent_required": False,
            "sync_ledger_url": "memory://",
            "retry": "none",
        }
        with SafeSnapTradeClient(**settings) as client:
            assert client.list_accounts(user.user_id)  # the secret is now cached
            receipt = client.erase_user(user.user_id, confirm=True)
            assert receipt.local["secret_removed"] is True
            assert receipt.user_ref is None  # no audit trail: no pseudonym
            sent = emu.journal.count()
            with pytest.raises(SnapTradeError):
                client.list_accounts(user.user_id)
            assert emu.journal.count() == sent  # refused locally: no secret, cached or stored


def test_a_malformed_user_id_is_refused_before_anything_is_sent(world: Any) -> None:
    emu, _, client = world
    sent = emu.journal.count()
    with pytest.raises(SnapTradeValidationError) as exporting:
        client.export_user(" ")
    assert exporting.value.message == "user_id must be a non-empty identifier."
    with pytest.raises(SnapTradeValidationError) as erasing:
        client.erase_user(7, confirm=True)
    assert erasing.value.message == "user_id must be a string, got int."
    assert emu.journal.count() == sent


def test_the_export_keeps_what_snaptrade_answered_whatever_its_shape(world: Any) -> None:
    """Odd answers are exported as they came: entries without a text id are skipped (the rest still
    read), a page that is not an object ends the activities, a total that is not a number is ignored."""
    emu, user, client = world
    first, second = user.account_ids
    odd_accounts = {"results": [{"id": 7}, "junk", {"id": first}, {"id": second}]}
    emu.faults.add(Fault.answer(odd_accounts), operation="list_all_user_accounts", times=1)
    full_page = {"data": [{"id": f"x{i}"} for i in range(1000)], "pagination": {"total": "1000"}}
    emu.faults.add(Fault.answer(full_page), path=f"/accounts/{first}/activities", times=1)
    emu.faults.add(Fault.answer(["not", "a", "page"]), path=f"/accounts/{second}/activities", times=1)
    document = client.export_user(user.user_id)
    remote = document["snaptrade"]
    assert remote["accounts"] == odd_accounts
    assert list(remote["account_data"]) == [first, second]
    activities = remote["account_data"][first]["activities"]
    assert len(activities) == 1200 and activities[999] == {"id": "x999"}  # the page after the odd one was read
    assert remote["account_data"][second]["activities"] == []
    short_page = {"data": [{"id": "y1"}, {"id": "y2"}]}  # no total: a page short of 1,000 is the last
    emu.faults.add(Fault.answer(short_page), path=f"/accounts/{second}/activities", times=1)
    again = client.export_user(user.user_id)["snaptrade"]["account_data"]
    assert again[second]["activities"] == short_page["data"]
    for body in (["a", "list"], {"results": None}, None):
        emu.faults.add(Fault.answer(body), operation="list_all_user_accounts", times=1)
        assert client.export_user(user.user_id)["snaptrade"]["account_data"] == {}


@pytest.mark.parametrize("body", [{"status": 5, "detail": ["queued"]}, ["deleted"], None])
def test_the_receipt_keeps_only_text_from_snaptrades_answer(world: Any, body: Any) -> None:
    emu, user, client = world
    emu.faults.add(Fault.answer(body), operation="delete_snap_trade_user", times=1)
    receipt = client.erase_user(user.user_id, confirm=True)
    last = emu.journal.last(operation="delete_snap_trade_user")
    assert last is not None
    assert receipt.snaptrade == {"deleted": True, "status": None, "detail": None, "request_id": last.request_id}


class AskedTrail(SQLiteAuditTrail):
    """An audit trail noting every event it is asked to append."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, AuditKey(AUDIT_SECRET))
        self.asked: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> Any:
        self.asked.append(event)
        return super().append(event)


def test_the_erasure_is_recorded_as_pseudonymous_whatever_the_trail_remembers(tmp_path: Path) -> None:
    with SnapTradeEmulator() as emu:
        user = emu.connect("asked-4d1f", brokerage="ALPACA")
        trail = AskedTrail(tmp_path / "audit.db")
        settings = {
            "client_id": emu.client_id,
            "consumer_key": emu.consumer_key,
            "environment": "sandbox",
            "base_url": emu.base_url,
            "secret_store_url": "memory://",
            "consent_required": False,
            "sync_ledger_url": "memory://",
            "audit": trail,
            "retry": "none",
        }
        try:
            with SafeSnapTradeClient(**settings) as client:
                client.secret_store.put(user.user_id, user.user_secret)
                client.erase_user(user.user_id, confirm=True)
            erased = [e for e in trail.asked if e.action == "data_rights.erase"]
            assert [(e.user_id, e.pseudonymous) for e in erased] == [(user.user_id, True)]
        finally:
            trail.close()
