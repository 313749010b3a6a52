"""docs/operations.md maps every item of the operators' guide's checklists, and has every incident procedure.

The items are copied from the guide (pre-production checklist and the production deployment
checklist's sections), since the guide itself is not part of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aims_snaptrade.observability.metric_table import ALERTS

RUNBOOK = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()

CHECKLISTS = {
    "Before going live (pre-production)": [
        "All tests pass in sandbox environment",
        "Error handling covers all edge cases",
        "Rate limiting is implemented",
        "Monitoring is configured",
        "Logging excludes sensitive data",
        "Backup procedures are in place",
        "Rollback plan exists",
        "Security scan completed",
        "Load testing performed",
    ],
    "Security": [
        "Production credentials secured",
        "Encryption implemented for user secrets",
        "SSL/TLS configured",
        "Security headers set",
        "Input validation complete",
        "SQL injection prevention",
        "XSS protection",
    ],
    "Testing": [
        "All unit tests passing",
        "Integration tests complete",
        "Load testing performed",
        "Security scan clean",
        "Penetration testing done",
    ],
    "Monitoring": [
        "Logging configured",
        "Metrics collection active",
        "Alerts configured",
        "Error tracking setup",
        "Performance monitoring",
    ],
    "Documentation": [
        "API documentation updated",
        "User guide complete",
        "Privacy policy updated",
        "Terms of service reviewed",
        "Incident response plan",
    ],
    "Operations": [
        "Backup procedures tested",
        "Rollback plan ready",
        "Support team trained",
        "Escalation process defined",
        "Maintenance windows planned",
    ],
}


def _section(title: str, level: str) -> str:
    body = RUNBOOK.split(f"\n{level} {title}\n", 1)[1]
    return re.split(rf"\n#{{1,{len(level)}}} ", body, maxsplit=1)[0]


@pytest.mark.parametrize("checklist", list(CHECKLISTS))
def test_every_checklist_item_has_a_row_saying_what_covers_it(checklist):
    rows = {}
    for line in _section(checklist, "###").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("item", "---"):
            rows[cells[0]] = cells[1]
    assert set(rows) == set(CHECKLISTS[checklist])
    assert all(len(answer) >= 15 for answer in rows.values()), rows


@pytest.mark.parametrize(
    "incident",
    [
        "Consumer key leaked",
        "Secret store lost or restored from backup",
        "Encryption key compromised",
        "SnapTrade outage",
    ],
)
def test_every_incident_has_a_procedure(incident):
    assert len(_section(incident, "###")) > 400


def test_every_alert_has_its_runbook_anchor():
    for spec in ALERTS:
        assert f'<a id="{spec.runbook}"></a>`{spec.name}`' in RUNBOOK
