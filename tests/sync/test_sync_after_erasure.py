"""A sync task queued before a person was erased must not write them back into the ledger.

Taking the user's lease writes a ledger row; when the sync then finds no stored secret for a user
the ledger knew nothing of, that row is removed again. A user the ledger does know (marked by a
webhook, synced before) keeps its row, so the due sweep retries it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_helpers import client_kwargs, secrets_of

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.testing import SnapTradeEmulator


def test_a_late_sync_of_an_erased_person_leaves_no_row(emu: SnapTradeEmulator, tmp_path: Path) -> None:
    person = emu.connect("erased-person")
    options = client_kwargs(emu, secret_store=secrets_of([person]), sync_ledger_url=f"sqlite:///{tmp_path}/l.db")
    with SafeSnapTradeClient(**options) as client:
        client.sync_portfolio(person.user_id)
        client.erase_user(person.user_id, confirm=True)
        assert client.sync_ledger.load_user(person.user_id) is None
        with pytest.raises(e.SnapTradeNotFoundError):
            client.sync_portfolio(person.user_id)  # the task queued before the erasure runs now
        assert client.sync_ledger.load_user(person.user_id) is None
        assert len(emu.journal.entries(user_id=person.user_id, operation="list_all_user_accounts")) == 1


def test_a_known_user_without_a_secret_keeps_its_row_for_the_retry(emu: SnapTradeEmulator, tmp_path: Path) -> None:
    person = emu.connect("marked-person")
    options = client_kwargs(emu, secret_store=secrets_of([]), sync_ledger_url=f"sqlite:///{tmp_path}/l.db")
    with SafeSnapTradeClient(**options) as client:
        client.mark_from_webhook({"eventType": "CONNECTION_ADDED", "userId": person.user_id})
        with pytest.raises(e.SnapTradeNotFoundError):
            client.sync_portfolio(person.user_id)
        record = client.sync_ledger.load_user(person.user_id)
        assert record is not None and record.dirty_at is not None  # still marked: due again
