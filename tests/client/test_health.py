"""HealthMonitor: each alert is raised by driving the emulator into its state, and cleared when the state ends.

The monitor's clock is a fake one where a test needs the window to pass; the calls are real
(the client, the SDK and the emulator).
"""

from __future__ import annotations

import json
import time

import pytest
from otel_helpers import SPANS, finished, install

from aims_snaptrade import errors as e
from aims_snaptrade.observability.health import HealthMonitor
from aims_snaptrade.observability.metric_table import ALERTS
from aims_snaptrade.testing import Fault


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _watch(monitor: HealthMonitor) -> list[tuple[str, bool, str | None]]:
    seen: list[tuple[str, bool, str | None]] = []
    monitor.subscribe(lambda change: seen.append((change.alert.name, change.raised, change.alert.subject)))
    return seen


def _names(monitor: HealthMonitor) -> set[str]:
    return {alert.name for alert in monitor.alerts}


def test_alert_names_are_the_prometheus_rule_names(make_client, clock):
    monitor = HealthMonitor(make_client(), clock=clock)
    report = monitor.check()
    assert report.healthy and report.calls == 0 and report.budgets
    assert {spec.name for spec in ALERTS} == {
        "SnapTradeHighErrorRate",
        "SnapTradeRateLimitBudgetHigh",
        "SnapTradeAuthenticationFailures",
        "SnapTradeConnectionTimeouts",
        "SnapTradeUnusualActivity",
    }


def test_error_rate_above_five_percent_raises_and_dilutes_away(make_client, emu, alice, clock):
    client = make_client()
    monitor = HealthMonitor(client, clock=clock)
    seen = _watch(monitor)
    for _ in range(9):
        client.list_accounts(alice.user_id)
    emu.faults.add(Fault.status(500, code="1000"), operation="list_all_user_accounts", times=1)
    with pytest.raises(e.SnapTradeServerError):
        client.list_accounts(alice.user_id)
    assert seen == [("SnapTradeHighErrorRate", True, None)]  # 1 of 10 = 10%
    report = monitor.check()
    assert not report.healthy and report.calls == 10 and report.errors == 1 and report.error_rate == 0.1
    for _ in range(11):  # 1 of 21 < 5%: the state has ended
        client.list_accounts(alice.user_id)
    assert seen[-1] == ("SnapTradeHighErrorRate", False, None)
    assert monitor.check().healthy


def test_a_few_failures_are_not_a_rate_below_min_calls(make_client, emu, alice, clock):
    client = make_client()
    monitor = HealthMonitor(client, clock=clock)
    emu.faults.add(Fault.status(500, code="1000"), operation="list_all_user_accounts", times=1)
    with pytest.raises(e.SnapTradeServerError):
        client.list_accounts(alice.user_id)
    assert "SnapTradeHighErrorRate" not in _names(monitor)


def test_authentication_failures_raise_and_clear_when_they_leave_the_window(make_client, emu, alice, clock):
    client = make_client()
    monitor = HealthMonitor(client, clock=clock)
    seen = _watch(monitor)
    emu.faults.add(Fault.unauthorized("1076"), operation="list_all_user_accounts", times=1)
    with pytest.raises(e.SnapTradeAuthError):
        client.list_accounts(alice.user_id)
    assert ("SnapTradeAuthenticationFailures", True, None) in seen
    assert monitor.check().auth_failures == 1
    clock.advance(monitor.window / 2)
    client.list_accounts(alice.user_id)  # the key works again, but the failure is still in the window
    assert "SnapTradeAuthenticationFailures" in _names(monitor)
    clock.advance(monitor.window / 2 + 1)
    report = monitor.check()
    assert report.auth_failures == 0 and "SnapTradeAuthenticationFailures" not in _names(monitor)
    assert ("SnapTradeAuthenticationFailures", False, None) in seen


def test_timeouts_raise_even_when_retried_and_clear_with_the_window(make_client, emu, alice, clock):
    client = make_client(read_timeout=0.3, retry="standard")
    monitor = HealthMonitor(client, clock=clock)
    seen = _watch(monitor)
    emu.faults.add(Fault.timeout(hold=2), operation="list_all_user_accounts", times=1)
    client.list_accounts(alice.user_id)  # the retry succeeds; the timeout still counts
    assert seen == [("SnapTradeConnectionTimeouts", True, None)]
    assert monitor.check().timeouts == 1
    clock.advance(monitor.window + 1)
    assert monitor.check().healthy
    assert seen[-1] == ("SnapTradeConnectionTimeouts", False, None)


def test_a_budget_at_eighty_percent_raises_and_clears_when_its_window_frees(make_client, alice, clock):
    client = make_client(customer_limit=5, customer_limit_window=5)
    monitor = HealthMonitor(client, clock=clock)
    seen = _watch(monitor)
    for _ in range(4):
        client.list_accounts(alice.user_id)
    report = monitor.check()
    [alert] = report.alerts
    assert alert.name == "SnapTradeRateLimitBudgetHigh" and alert.subject == "customer" and alert.value >= 0.8
    deadline = time.monotonic() + 15
    while not monitor.check().healthy:  # the limiter's real window, 5 s
        assert time.monotonic() < deadline, monitor.alerts
        time.sleep(0.25)
    assert seen == [
        ("SnapTradeRateLimitBudgetHigh", True, "customer"),
        ("SnapTradeRateLimitBudgetHigh", False, "customer"),
    ]


def test_a_user_far_above_its_own_baseline_is_unusual_until_it_calms_down(make_client, alice, clock):
    client = make_client()
    monitor = HealthMonitor(client, clock=clock, unusual_min_calls=8, unusual_baseline=1200)
    seen = _watch(monitor)
    for _ in range(4):  # baseline: one call per window for four windows
        client.list_accounts(alice.user_id)
        clock.advance(monitor.window)
    assert not seen
    for _ in range(8):  # 8 calls in one window, against a baseline of 1
        client.list_accounts(alice.user_id)
    assert seen == [("SnapTradeUnusualActivity", True, f"user:{alice.user_id}")]
    [alert] = monitor.alerts
    assert alert.value == 8 and "baseline" in alert.summary
    clock.advance(monitor.window + 1)
    assert monitor.check().healthy
    assert seen[-1] == ("SnapTradeUnusualActivity", False, f"user:{alice.user_id}")


def test_steady_traffic_is_not_unusual(make_client, alice, clock):
    client = make_client()
    monitor = HealthMonitor(client, clock=clock, unusual_min_calls=3, unusual_baseline=900)
    for _ in range(4):
        for _ in range(3):
            client.list_accounts(alice.user_id)
        clock.advance(monitor.window)
    assert "SnapTradeUnusualActivity" not in _names(monitor)


async def test_the_async_client_is_watched_and_polled_with_acheck(make_async_client, emu, alice, clock):
    async with make_async_client() as client:
        monitor = HealthMonitor(client, clock=clock)
        emu.faults.add(Fault.unauthorized("1083"), operation="list_all_user_accounts", times=1)
        with pytest.raises(e.SnapTradeAuthError):
            await client.list_accounts(alice.user_id)
        report = await monitor.acheck()
        assert [a.name for a in report.alerts] == ["SnapTradeAuthenticationFailures"] and report.budgets
        monitor.close()
        emu.faults.add(Fault.unauthorized("1083"), operation="list_all_user_accounts", times=1)
        with pytest.raises(e.SnapTradeAuthError):
            await client.list_accounts(alice.user_id)
        assert (await monitor.acheck()).auth_failures == 1  # detached: the second failure is not seen


def test_a_failing_subscriber_never_breaks_a_call(make_client, emu, alice, clock):
    client = make_client()
    monitor = HealthMonitor(client, clock=clock)
    monitor.subscribe(lambda change: 1 / 0)
    emu.faults.add(Fault.unauthorized("1076"), operation="list_all_user_accounts", times=1)
    with pytest.raises(e.SnapTradeAuthError):
        client.list_accounts(alice.user_id)
    assert client.list_accounts(alice.user_id) is not None


@pytest.mark.parametrize(
    "bad", [{"window": 0}, {"error_rate": 1.5}, {"budget": 0}, {"min_calls": -1}, {"unusual_factor": "5"}]
)
def test_bad_settings_are_a_typed_error(bad):
    with pytest.raises(e.SnapTradeValidationError, match=next(iter(bad))):
        HealthMonitor(**bad)


def test_health_command_reports_human_and_json(emu, alice, monkeypatch, capsys):
    from aims_snaptrade.cli.main import main

    for name, value in {
        "CLIENT_ID": emu.client_id,
        "CONSUMER_KEY": emu.consumer_key,
        "ENVIRONMENT": "sandbox",
        "BASE_URL": emu.base_url,
        "SECRET_STORE_URL": "memory://",
    }.items():
        monkeypatch.setenv(f"SNAPTRADE_{name}", value)
    assert main(["health"]) == 0
    out = capsys.readouterr().out
    assert "healthy" in out and "probe signed call ok" in out and "budget customer" in out
    assert main(["health", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is True and report["probes"] == {"api status": "ok", "signed call": "ok"}
    emu.faults.add(Fault.unauthorized("1076"), operation="get_partner_info", times=1)
    assert main(["health", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [a["name"] for a in report["alerts"]] == ["SnapTradeAuthenticationFailures"]
    assert report["probes"]["signed call"].startswith("SnapTradeAuthError")
    assert emu.consumer_key not in json.dumps(report)


def test_health_command_without_probe_sends_nothing(emu, monkeypatch, capsys):
    from aims_snaptrade.cli.main import main

    monkeypatch.setenv("SNAPTRADE_CLIENT_ID", emu.client_id)
    monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", emu.consumer_key)
    monkeypatch.setenv("SNAPTRADE_ENVIRONMENT", "sandbox")
    monkeypatch.setenv("SNAPTRADE_BASE_URL", emu.base_url)
    monkeypatch.setenv("SNAPTRADE_SECRET_STORE_URL", "memory://")
    before = len(emu.journal)
    assert main(["health", "--no-probe"]) == 0
    assert len(emu.journal) == before
    assert "UNHEALTHY" not in capsys.readouterr().out


def test_a_1083_cured_by_the_secret_another_replica_stored_is_no_authentication_failure(make_client, alice, clock):
    replica_a, replica_b = make_client(), make_client()  # one store, as two replicas share one
    replica_a.list_accounts(alice.user_id)  # A caches the secret
    monitor = HealthMonitor(replica_a, clock=clock)
    install()
    SPANS.clear()
    replica_b.rotate_user_secret(alice.user_id)
    replica_a.list_accounts(alice.user_id)  # rejected once (1083), resent with the stored secret
    assert "SnapTradeAuthenticationFailures" not in _names(monitor)
    [span] = finished("SnapTrade list_all_user_accounts")
    assert span.attributes["http.request.resend_count"] == 1 and span.attributes["http.response.status_code"] == 200
