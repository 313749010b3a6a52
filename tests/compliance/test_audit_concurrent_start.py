"""Replicas that start together on an empty database all open the audit trail: none may fail.

Each round opens the PostgreSQL trail from several threads at once (one connection each) on a
fresh schema; every opening must succeed and leave one genesis head that verifies. (Before the
fix the losers of the race failed on the head's primary key.)
"""

from __future__ import annotations

import threading
import uuid

import psycopg
from compliance_helpers import AUDIT_SECRET, POSTGRES_URL

from aims_snaptrade.compliance import AuditEvent, AuditKey
from aims_snaptrade.compliance.audit import PostgresAuditTrail

THREADS = 8
ROUNDS = 4


def _open_together(schema: str, key: AuditKey) -> tuple[list[PostgresAuditTrail], list[BaseException]]:
    start = threading.Barrier(THREADS)
    lock = threading.Lock()
    trails: list[PostgresAuditTrail] = []
    failures: list[BaseException] = []

    def open_trail() -> None:
        start.wait()
        try:
            trail = PostgresAuditTrail(POSTGRES_URL, key, schema=schema)
        except BaseException as exc:
            with lock:
                failures.append(exc)
        else:
            with lock:
                trails.append(trail)

    threads = [threading.Thread(target=open_trail) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return trails, failures


def test_replicas_opening_a_fresh_trail_at_once_all_succeed() -> None:
    key = AuditKey(AUDIT_SECRET)
    for _ in range(ROUNDS):
        schema = f"aims_audit_start_{uuid.uuid4().hex[:10]}"
        trails: list[PostgresAuditTrail] = []
        try:
            trails, failures = _open_together(schema, key)
            assert failures == [], [str(f) for f in failures]
            trails[0].append(AuditEvent("test", "test.start"))
            assert all(trail.verify().ok for trail in trails)
        finally:
            for trail in trails:
                trail.close()
            with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
