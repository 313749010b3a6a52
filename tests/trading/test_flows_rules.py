"""The order flows' promises, one at a time (docs/trading.md): what they refuse, journal and send."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade import errors as e
from aims_snaptrade.testing import ConnectedUser, SnapTradeEmulator
from aims_snaptrade.trading import MemoryOrderIntentStore

WRITES = ("place_order", "place_force_order", "replace_order", "cancel_order")
ORDER: dict[str, Any] = {"action": "BUY", "symbol": "AAPL", "units": Decimal("0.1")}

# Anything but True itself: truthy values, True's equals (1, 1.0), and words that read as yes.
_NOT_TRUE = st.one_of(
    st.sampled_from([1, 1.0, Decimal(1), "yes", "true", "True", "1", [True], (True,), {"confirm": True}, False, 0]),
    st.none(),
    st.text(min_size=1, max_size=8),
    st.integers().filter(lambda n: n != 0),
)


def _sent(emu: SnapTradeEmulator) -> int:
    return sum(emu.journal.count(operation=op) for op in WRITES)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(confirm=_NOT_TRUE)
def test_only_confirm_true_places_or_replaces_an_order(
    client: SafeSnapTradeClient,
    alice: ConnectedUser,
    emu: SnapTradeEmulator,
    intents: MemoryOrderIntentStore,
    confirm: Any,
) -> None:
    account = alice.account_ids[0]
    before = _sent(emu)
    with pytest.raises(e.SnapTradeGuardrailError, match="confirm=True") as refused:
        client.place_order_now(alice.user_id, account, confirm=confirm, **ORDER)
    assert refused.value.operation == "place_force_order"
    with pytest.raises(e.SnapTradeGuardrailError, match="confirm=True") as refused:
        client.replace_order(alice.user_id, account, "order-1", action="BUY", units=1, confirm=confirm)
    assert refused.value.operation == "replace_order"
    assert _sent(emu) == before
    assert intents.pending() == [] and intents.claimed_order_ids(account) == []
