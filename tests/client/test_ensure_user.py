"""``ensure_user``: get or register, on the road, sync and async; 1010 says whether the secret is here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient, SnapTradeConflictError, SnapTradeValidationError
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import SnapTradeEmulator

USER_IDS = st.lists(st.sampled_from(["ann", "bob", "cy", "dee"]), min_size=1, max_size=8)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=USER_IDS)
def test_ensure_user_registers_each_user_exactly_once(
    emu: SnapTradeEmulator, make_client: Callable[..., SafeSnapTradeClient], calls: list[str]
) -> None:
    prefix = f"p{len(emu.journal)}-"  # fresh ids per example: the emulator and store outlive it
    client = make_client()
    seen: set[str] = set()
    before = emu.journal.count(operation="register_snap_trade_user")
    for name in calls:
        user = client.ensure_user(prefix + name)
        assert user.user_id == prefix + name
        assert user.created is (name not in seen)
        seen.add(name)
    assert emu.journal.count(operation="register_snap_trade_user") - before == len(seen)
    assert {u for u in client.secret_store.user_ids() if u.startswith(prefix)} == {prefix + n for n in seen}


def test_ensure_user_sends_nothing_for_a_stored_user(emu, make_client) -> None:
    client = make_client()
    client.register_user("erin")
    emu.journal.clear()
    assert client.ensure_user("erin").created is False
    assert len(emu.journal) == 0


def test_async_ensure_user_is_the_same_flow(emu, make_async_client) -> None:
    async def scenario() -> tuple[bool, bool]:
        async with make_async_client() as client:
            first = await client.ensure_user("fay")
            second = await client.ensure_user("fay")
            return first.created, second.created

    assert asyncio.run(scenario()) == (True, False)
    assert emu.journal.count(operation="register_snap_trade_user") == 1


def test_1010_for_a_stored_user_says_nothing_is_lost(make_client) -> None:
    client = make_client()
    client.register_user("gus")
    with pytest.raises(SnapTradeConflictError) as info:
        client.register_user("gus")
    assert info.value.status == 400  # what SnapTrade answers (docs/errors.md)
    assert info.value.code == "1010"
    assert "secret is stored here" in str(info.value)
    assert "ensure_user" in str(info.value)
    assert "lost" not in info.value.message


def test_1010_without_a_stored_secret_says_it_is_lost(emu, make_client) -> None:
    client = make_client()
    client.register_user("hal")
    other = make_client(secret_store=MemorySecretStore())  # another service's store: no secret here
    with pytest.raises(SnapTradeConflictError) as info:
        other.ensure_user("hal")
    assert "no secret for it is stored here" in str(info.value)
    assert "delete_user" in str(info.value)


def test_ensure_user_rejects_a_blank_id_before_sending(emu, make_client) -> None:
    with pytest.raises(SnapTradeValidationError, match="user_id"):
        make_client().ensure_user(" ")
    assert len(emu.journal) == 0
