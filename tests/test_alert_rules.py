"""The generated Prometheus rules: valid rule-file schema, accepted by promtool, and each alert fires and clears.

With ``promtool`` on PATH (``apt-get install prometheus``) the file goes through ``promtool check
rules`` and a ``promtool test rules`` unit test that feeds each alert's series over time; without
it, the file is validated against the rule-file schema only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from aims_snaptrade.cli.main import main
from aims_snaptrade.observability.alert_rules import prometheus_rules, prometheus_rules_yaml, write_prometheus_rules
from aims_snaptrade.observability.metric_table import ALERTS, METRICS

PROMTOOL = shutil.which("promtool")
DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def test_the_yaml_is_the_rule_data_and_follows_the_rule_file_schema():
    parsed = yaml.safe_load(prometheus_rules_yaml())
    assert parsed == prometheus_rules()
    assert set(parsed) == {"groups"}
    [group] = parsed["groups"]
    assert set(group) == {"name", "rules"} and group["name"]
    assert [rule["alert"] for rule in group["rules"]] == [spec.name for spec in ALERTS]
    series = {spec.prometheus_name for spec in METRICS}
    for rule in group["rules"]:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
        assert LABEL.match(rule["alert"]) and isinstance(rule["expr"], str) and rule["expr"]
        assert DURATION.match(rule["for"]) and rule["for"]
        for section in ("labels", "annotations"):
            assert all(LABEL.match(k) and isinstance(v, str) for k, v in rule[section].items())
        names = set(re.findall(r"[a-z_]+(?=[{\[])", rule["expr"]))
        used = {n.removesuffix("_count") for n in names if n not in {"rate", "increase", "sum", "max", "by"}}
        assert used <= series, f"{rule['alert']} uses series the metric table does not produce: {used - series}"


def test_the_cli_writes_the_rule_file(tmp_path, capsys):
    target = tmp_path / "rules.yml"
    assert main(["alert-rules", "-o", str(target)]) == 0
    assert target.read_text() == prometheus_rules_yaml()
    assert main(["alert-rules"]) == 0
    assert capsys.readouterr().out.startswith(prometheus_rules_yaml())


def _expected(name: str, **labels: str) -> dict[str, object]:
    rule = next(r for r in prometheus_rules()["groups"][0]["rules"] if r["alert"] == name)
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": rule["annotations"]}


def _case(name: str, series: dict[str, str], firing_at: str, cleared_at: str, **labels: str) -> dict[str, object]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": firing_at, "alertname": name, "exp_alerts": [_expected(name, **labels)]},
            {"eval_time": cleared_at, "alertname": name, "exp_alerts": []},
        ],
    }


CALLS = "snaptrade_client_calls_total"
ERRORS = "snaptrade_client_errors_total"
CASES = [
    # 10 calls a minute; 2 of them fail from minute 11 to 21 (20% > 5%), then none do.
    _case(
        "SnapTradeHighErrorRate",
        {CALLS: "0+10x40", ERRORS + '{error_type="SnapTradeServerError"}': "0x10 2+2x10 22x19"},
        "16m",
        "38m",
    ),
    # The customer budget is 90% used from minute 6 to 15.
    _case(
        "SnapTradeRateLimitBudgetHigh",
        {
            'snaptrade_client_rate_limit_utilization_ratio{snaptrade_rate_limit_budget="customer"}': (
                "0.5x5 0.9x9 0.2x10"
            )
        },
        "9m",
        "20m",
        snaptrade_rate_limit_budget="customer",
    ),
    # One 401 at minute 6.
    _case("SnapTradeAuthenticationFailures", {ERRORS + '{error_type="SnapTradeAuthError"}': "0x5 1x25"}, "8m", "20m"),
    # One timed-out request at minute 6.
    _case(
        "SnapTradeConnectionTimeouts",
        {'http_client_request_duration_seconds_count{error_type="SnapTradeTimeoutError"}': "0x5 1x25"},
        "8m",
        "20m",
    ),
    # One call a minute for 70 minutes, then 20 a minute for 10 minutes, then quiet.
    _case("SnapTradeUnusualActivity", {CALLS: "0+1x70 90+20x9 270x20"}, "76m", "95m"),
    # 10 calls a minute reach SnapTrade and succeed; 10 more a minute are refused locally (consent):
    # they sent nothing, so they are no error rate of SnapTrade's.
    {
        "interval": "1m",
        "input_series": [
            {"series": CALLS, "values": "0+10x40"},
            {"series": CALLS + '{snaptrade_refused_locally="true"}', "values": "0+10x40"},
            {
                "series": ERRORS + '{error_type="SnapTradeConsentRequiredError",snaptrade_refused_locally="true"}',
                "values": "0+10x40",
            },
        ],
        "alert_rule_test": [{"eval_time": "16m", "alertname": "SnapTradeHighErrorRate", "exp_alerts": []}],
    },
]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_promtool_loads_the_rules_and_each_alert_fires_and_clears(tmp_path):
    rules = write_prometheus_rules(tmp_path / "snaptrade-alerts.yml")
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    tests = tmp_path / "snaptrade-alerts.test.yml"
    tests.write_text(json.dumps({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": CASES}))
    ran = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    print(f"promtool: {len(ALERTS)} rules checked, {len(CASES)} alert tests (fire and clear) passed")
