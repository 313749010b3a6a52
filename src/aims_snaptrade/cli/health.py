"""``aims-snaptrade health``: build a client from the environment, probe, and print the monitor's state."""

from __future__ import annotations

import json

from aims_snaptrade import errors as e
from aims_snaptrade.client import SafeSnapTradeClient
from aims_snaptrade.observability.health import HealthMonitor

__all__ = ["health_command"]


def health_command(*, as_json: bool = False, probe: bool = True) -> int:
    """``aims-snaptrade health``: probe SnapTrade from this configuration and print the monitor's state.

    The client is built as a service builds it, with ``SafeSnapTradeClient.from_env()`` (so in
    production with its consent and audit stores), and closed afterwards.

    The probe sends two calls (the unsigned status check and a signed ``get_partner_info``), so an
    outage, a timeout or a rejected consumer key raises its alert; the budgets are read from the
    configured rate-limit storage, shared with every replica when it is Redis. Call-history alerts
    (error rate, unusual activity) cover only this process: fleet-wide ones are the Prometheus
    rules' job. Returns 0 when healthy, 1 otherwise.
    """
    probes: dict[str, str] = {}
    with SafeSnapTradeClient.from_env() as client:
        settings = client.settings
        monitor = HealthMonitor(client)
        if probe:
            for name, run in (
                ("api status", client.api_status),
                ("signed call", lambda: client.call("get_partner_info")),
            ):
                try:
                    run()
                    probes[name] = "ok"
                except e.SnapTradeError as exc:
                    probes[name] = f"{type(exc).__name__}: {exc.message}"
        report = monitor.check(probe=probe)
        monitor.close()
    failed = [name for name, outcome in probes.items() if outcome != "ok"]
    if as_json:
        print(json.dumps({**report.to_dict(), "probes": probes}, indent=2, default=str))
    else:
        state = "healthy" if report.healthy and report.ready and not failed else "UNHEALTHY"
        print(f"health            {state} ({settings.environment}, {settings.base_url})")
        print(f"{'live / ready':<17} {'yes' if report.live else 'NO'} / {'yes' if report.ready else 'NO'}")
        for name, outcome in probes.items():
            print(f"{'probe ' + name:<17} {outcome}")
        for check in report.checks:
            print(f"{check.probe[:5] + ' ' + check.name:<17} {'ok' if check.ok else 'FAILED'}: {check.detail}")
        if report.budget_error:
            print(f"budgets           UNAVAILABLE: {report.budget_error}")
        for usage in report.budgets:
            subject = usage.name if usage.subject is None else f"{usage.name}:{usage.subject}"
            print(f"{'budget ' + subject:<17} {usage.used}/{usage.limit} per {usage.window} s ({usage.fraction:.0%})")
        for alert in report.alerts:
            print(f"{'ALERT ' + alert.severity:<17} {alert.name}: {alert.summary}")
    return 0 if report.healthy and report.ready and not failed else 1
