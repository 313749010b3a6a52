"""Acceptance: several processes append to one chain; SIGKILL mid-append loses no returned record.

The kill test forks a child that makes real calls through the client (emulator on loopback),
reporting each call's request id on a pipe only after the call returned; the parent kills it at a
random moment. ``AIMS_AUDIT_KILLS`` sets the number of kills (the nox session ``audit_kills`` runs
100; the normal suite a bounded slice).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import pytest
from compliance_helpers import AUDIT_SECRET, POSTGRES_URL

from aims_snaptrade import SafeSnapTradeClient
from aims_snaptrade.compliance import AuditEvent, AuditKey, PostgresAuditTrail, SQLiteAuditTrail
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import SnapTradeEmulator

KILLS = int(os.environ.get("AIMS_AUDIT_KILLS", "10"))
PROCESSES, PER_PROCESS = 4, 40
FORK = multiprocessing.get_context("fork")


def _open(backend: str, where: str):
    key = AuditKey(AUDIT_SECRET)
    if backend == "sqlite":
        return SQLiteAuditTrail(where, key)
    return PostgresAuditTrail(POSTGRES_URL, key, schema=where)


def _appender(backend: str, where: str, worker: int) -> None:
    trail = _open(backend, where)
    for i in range(PER_PROCESS):
        trail.append(AuditEvent("call", "check", detail={"worker": worker, "i": i}, durable=i % 2 == 0))
    trail.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_append_one_valid_chain_with_every_record(backend, tmp_path, pg_schema):
    where = str(tmp_path / "audit.db") if backend == "sqlite" else pg_schema
    _open(backend, where).close()  # tables created once, before the race
    workers = [FORK.Process(target=_appender, args=(backend, where, w)) for w in range(PROCESSES)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    trail = _open(backend, where)
    report = trail.verify()
    details = {(r.to_json()["detail"]["worker"], r.to_json()["detail"]["i"]) for r in trail.tail(10_000)}
    trail.close()
    assert report.ok, report
    assert report.checked == report.head_seq == PROCESSES * PER_PROCESS
    assert details == {(w, i) for w in range(PROCESSES) for i in range(PER_PROCESS)}
    print(f"{backend}: {PROCESSES} processes x {PER_PROCESS} appends -> one chain of {report.checked} records")


def _caller(kwargs: dict, user_id: str, out: int) -> None:
    # In the forked child: call until killed, reporting each request id once the call returned.
    with SafeSnapTradeClient(**kwargs) as client:
        while True:
            response = client.call("list_all_user_accounts", user_id=user_id)
            os.write(out, (response.request_id or "?").encode() + b"\n")


@pytest.fixture
def unthrottled():
    # Hundreds of calls across the kills: SnapTrade's 250/min customer limit is not under test here.
    with SnapTradeEmulator(customer_rate_limit=None) as emulator:
        yield emulator


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_during_appends_leaves_a_verifying_chain_and_every_returned_call(
    backend, tmp_path, pg_schema, unthrottled
):
    url = f"sqlite:///{tmp_path}/audit.db" if backend == "sqlite" else f"{POSTGRES_URL}?schema={pg_schema}"
    alice = unthrottled.connect("alice", brokerage="ALPACA")
    secrets = MemorySecretStore()
    secrets.put(alice.user_id, alice.user_secret)
    settings = {
        "client_id": unthrottled.client_id,
        "consumer_key": unthrottled.consumer_key,
        "environment": "sandbox",
        "base_url": unthrottled.base_url,
        "secret_store": secrets,
        "retry": "none",
        "audit_key": AUDIT_SECRET,
        "audit_store_url": url,
        # Each child must still be calling when the kill lands (sliding-window: O(1) at this size).
        "customer_limit": 1_000_000,
        "rate_limit_strategy": "sliding-window",
    }
    rng = random.Random(1234)
    returned: list[str] = []
    for _ in range(KILLS):
        read, write = os.pipe()
        child = FORK.Process(target=_caller, args=(settings, alice.user_id, write))
        child.start()
        os.close(write)
        time.sleep(rng.uniform(0.3, 0.7))
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        with os.fdopen(read, "rb") as pipe:
            returned += [line.decode() for line in pipe.read().split(b"\n")[:-1]]  # complete lines only
    with SafeSnapTradeClient(**settings) as client:
        trail = client.audit_trail
        report = trail.verify()
        recorded = {r.request_id for r in trail.tail(1_000_000)}
    assert report.ok, report
    assert returned, "no call returned before the kills; raise the delays"
    missing = [rid for rid in returned if rid not in recorded]
    assert not missing
    print(
        f"{backend}: {KILLS} SIGKILLs, {len(returned)} returned calls all recorded, chain of {report.checked} verifies"
    )
