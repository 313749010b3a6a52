"""Acceptance: the rollout cohort is stable and monotone in the percentage; outsiders are refused unsent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import SafeSnapTradeClient, SnapTradeConfigurationError, SnapTradeRolloutError
from aims_snaptrade.compliance import Rollout

users = st.text(min_size=1, max_size=40)
percents = st.floats(0, 100, allow_nan=False)
salts = st.none() | st.text(min_size=1, max_size=20).filter(lambda s: ";" not in s and s.strip() == s and s)
COUNT = {"examples": 0}


@settings(max_examples=300)
@given(user=users, low=percents, high=percents, salt=salts)
def test_cohort_is_stable_and_monotone_in_the_percentage(user, low, high, salt):
    low, high = sorted((low, high))
    at_low, at_high = Rollout(percent=low, salt=salt), Rollout(percent=high, salt=salt)
    assert at_low.includes(user) == Rollout(percent=low, salt=salt).includes(user)  # stable: same answer again
    if at_low.includes(user):
        assert at_high.includes(user)  # raising the percentage only adds users
    assert Rollout(percent=0, salt=salt).includes(user) is False
    assert Rollout(percent=100, salt=salt).includes(user) is True
    assert Rollout(frozenset({user}), 0, salt).includes(user)
    COUNT["examples"] += 1


def test_percentage_is_roughly_honoured_and_the_salt_changes_the_cohort():
    ids = [f"user-{i}" for i in range(4000)]
    share = sum(Rollout(percent=25).includes(u) for u in ids) / len(ids)
    assert 0.22 < share < 0.28
    plain = {u for u in ids if Rollout(percent=25).includes(u)}
    salted = {u for u in ids if Rollout(percent=25, salt="s3cret-salt").includes(u)}
    assert plain != salted
    print(f"rollout property examples run: {COUNT['examples']}; 25% cohort share {share:.3f}")


def test_parse_and_bad_settings():
    rollout = Rollout.parse("allow=ops-1, ops-2 ; percent=12.5%; salt=abc")
    assert rollout.allow == frozenset({"ops-1", "ops-2"})
    assert rollout.percent == 12.5
    for bad in ("percent=abc", "percent=101", "color=blue", "allow"):
        with pytest.raises(SnapTradeConfigurationError, match="ROLLOUT"):
            Rollout.parse(bad)
    with pytest.raises(SnapTradeConfigurationError, match="rollout percent"):
        SafeSnapTradeClient(client_id="c", consumer_key="k" * 20, environment="sandbox", rollout="percent=x")


def test_a_user_outside_the_rollout_is_refused_before_anything_is_sent(kwargs, emu, alice):
    outsider = emu.connect("outsider", brokerage="ALPACA")
    with SafeSnapTradeClient(**kwargs(rollout=f"allow={alice.user_id};percent=0")) as client:
        assert client.list_accounts(alice.user_id)
        with pytest.raises(SnapTradeRolloutError, match="outside the SnapTrade rollout"):
            client.list_accounts(outsider.user_id)
        with pytest.raises(SnapTradeRolloutError):
            client.register_user("newcomer")
    assert emu.journal.count(user_id=outsider.user_id) == 0
    assert emu.journal.count(user_id="newcomer") == 0
