"""Liveness and readiness: readiness fails only on what stops a replica from serving, never on a
warning, and calls refused locally are never counted as SnapTrade's errors.

The calls are real (client, SDK, emulator); the unreachable store is a real PostgreSQL store
behind a loopback proxy that the test cuts (the shared server keeps running).
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import errors as e
from aims_snaptrade.observability.health import PROBES, HealthMonitor
from aims_snaptrade.observability.telemetry import CallRecord
from aims_snaptrade.secrets import Keyring, PostgresSecretStore
from aims_snaptrade.testing import Fault
from tcp_cut import proxied

POSTGRES_URL = os.environ.get("AIMS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class NoConsent:
    """A consent checker (the documented protocol) that finds no consent for anyone."""

    def has_consent(self, user_id: str, scope: str) -> bool:
        return False


def _failed(report):
    return {check.name for check in report.checks if not check.ok}


def test_every_check_names_its_probe_and_a_fresh_client_is_live_and_ready(make_client):
    report = HealthMonitor(make_client(), clock=Clock()).check()
    assert {c.name for c in report.checks} == set(PROBES)
    assert all(c.probe == PROBES[c.name] for c in report.checks)
    assert report.live and report.ready and report.healthy


def test_calls_refused_locally_are_not_upstream_errors(make_client, emu, alice):
    client = make_client(consent=NoConsent())
    monitor = HealthMonitor(client, clock=Clock())
    for _ in range(12):
        with pytest.raises(e.SnapTradeConsentRequiredError):
            client.list_accounts(alice.user_id)
    for _ in range(3):
        with pytest.raises(e.SnapTradeValidationError):
            client.call("list_all_user_accounts", user_id=5)  # bad input
    report = monitor.check(probe=False)
    assert report.calls == 0 and report.errors == 0 and report.refused == 15
    assert report.healthy and report.ready and not report.alerts
    assert emu.journal.count(user_id=alice.user_id) == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=40))
def test_the_error_rate_counts_only_what_reached_snaptrade(outcomes):
    monitor = HealthMonitor(clock=Clock(), min_calls=1)
    for sent, failed in outcomes:
        error = (e.SnapTradeServerError if sent else e.SnapTradeGuardrailError) if failed else None
        monitor.record(CallRecord("call", "list_all_user_accounts", "u", None, error, 500 if sent else None, sent, 0.0))
    report = monitor.check()
    sent_calls = [failed for sent, failed in outcomes if sent]
    assert report.calls == len(sent_calls) and report.errors == sum(sent_calls)
    assert report.refused == len(outcomes) - len(sent_calls)
    raised = any(a.name == "SnapTradeHighErrorRate" for a in report.alerts)
    assert raised == (bool(sent_calls) and sum(sent_calls) / len(sent_calls) > monitor.error_rate)
    assert report.ready  # an error rate is a warning for people, never a readiness failure


def test_a_budget_warning_keeps_readiness_and_an_exhausted_budget_fails_it(make_client, alice):
    client = make_client(customer_limit=5, customer_limit_window=30, rate_limit_max_wait=2)
    monitor = HealthMonitor(client, clock=Clock())
    for _ in range(4):
        client.list_accounts(alice.user_id)
    report = monitor.check(probe=False)
    assert [a.name for a in report.alerts] == ["SnapTradeRateLimitBudgetHigh"]
    assert report.ready and not report.healthy
    client.list_accounts(alice.user_id)  # full, and no slot frees within the 2 s a call may wait
    report = monitor.check(probe=False)
    assert not report.ready and _failed(report) == {"budget"} and report.live
    with pytest.raises(e.SnapTradeBudgetExhaustedError):  # what readiness foretold
        client.list_accounts(alice.user_id)


def test_a_full_window_that_frees_within_the_wait_keeps_readiness(make_client, alice):
    # A batch running at the budget's pace keeps the window full; its calls queue, none fails.
    client = make_client(customer_limit=5, customer_limit_window=2, rate_limit_max_wait=10)
    monitor = HealthMonitor(client, clock=Clock())
    for _ in range(5):
        client.list_accounts(alice.user_id)
    report = monitor.check(probe=False)
    assert [u.remaining for u in report.budgets if u.name == "customer"] == [0]
    assert report.ready


def test_a_rejected_key_fails_readiness_until_a_signed_probe_is_answered(make_client, emu, alice):
    clock = Clock()
    client = make_client()
    monitor = HealthMonitor(client, clock=clock, probe_interval=30)
    emu.faults.add(Fault.unauthorized("1083"), operation="list_all_user_accounts", times=1)
    with pytest.raises(e.SnapTradeAuthError):
        client.list_accounts(alice.user_id)
    assert monitor.check().ready  # one user's secret is that user's problem
    emu.faults.add(Fault.unauthorized("1076"), operation="list_all_user_accounts", times=1)
    with pytest.raises(e.SnapTradeAuthError):
        client.list_accounts(alice.user_id)
    report = monitor.check()
    assert not report.ready and _failed(report) == {"consumer key"} and report.live
    clock.now += 30  # the next poll sends one signed call; the key works again
    before = emu.journal.count(operation="get_partner_info")
    report = monitor.check()
    assert report.ready and emu.journal.count(operation="get_partner_info") == before + 1
    assert report.calls == 2  # the monitor's own probes stay out of the history


def test_clock_skew_beyond_the_tolerance_fails_readiness(make_client, emu):
    client = make_client()
    emu.faults.add(
        Fault.answer({"version": 1, "timestamp": "2020-01-01T00:00:00Z", "online": True}), operation="check", times=1
    )
    report = HealthMonitor(client, clock=Clock()).check()
    assert not report.ready and _failed(report) == {"clock skew"}


def test_an_unreachable_store_fails_readiness_not_liveness_and_recovers(make_client, alice):
    table = f"aims_health_{uuid.uuid4().hex[:10]}"
    proxy, url = proxied(POSTGRES_URL)
    store = PostgresSecretStore(url, Keyring.generate("v1"), table=table, connect_timeout=2)
    try:
        store.put(alice.user_id, alice.user_secret)
        client = make_client(secret_store=store)
        monitor = HealthMonitor(client, clock=Clock())
        assert monitor.check(probe=False).ready
        proxy.cut()
        report = monitor.check(probe=False)
        assert not report.ready and report.live and _failed(report) == {"stores"}
        [stores] = [c for c in report.checks if c.name == "stores"]
        assert "secrets" in stores.detail and str(proxy.port) not in stores.detail and "postgres" not in stores.detail
        proxy.restore()
        assert monitor.check(probe=False).ready
    finally:
        proxy.close()
        store.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def test_a_closed_client_is_not_live(make_client):
    client = make_client()
    monitor = HealthMonitor(client, clock=Clock())
    assert monitor.live()
    client.close()
    assert not monitor.live()


async def test_the_async_client_reads_its_stores_and_probes(make_async_client, emu, alice):
    async with make_async_client(consent=NoConsent()) as client:
        monitor = HealthMonitor(client, clock=Clock())
        with pytest.raises(e.SnapTradeConsentRequiredError):
            await client.list_accounts(alice.user_id)
        report = await monitor.acheck()
        assert report.ready and report.refused == 1 and report.calls == 0
        assert {c.name for c in report.checks} == set(PROBES)
        assert emu.journal.count(operation="check") == 1  # the clock-skew probe
