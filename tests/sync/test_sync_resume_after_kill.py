"""Acceptance: a batch SIGKILLed a third of the way and run again, with the default (memory) budget.

``aims-snaptrade sync --users FILE --batch-id B --results FILE`` runs in a subprocess against an
emulator enforcing SnapTrade-like customer limits (L requests per rolling W seconds); the test
SIGKILLs it once a third of the users are in the results file, then runs the same command again
at once, in a new process whose memory budget knows nothing of what the dead one spent. Expected:
no 429 over both runs, no user recorded finished by the first run fetched again, every user's
result in the results file (the first run's lines survived the kill: each is fsynced before its
user is recorded finished).

The suite runs a bounded slice (``AIMS_SYNC_RESUME_USERS``, default 120 users at 250 per 5 s);
the figures for 1,000 users are in docs/portfolio-sync.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aims_snaptrade.secrets import SQLiteSecretStore
from aims_snaptrade.sync import SQLiteSyncLedger
from aims_snaptrade.testing import RateLimit, SnapTradeEmulator
from aims_snaptrade.testing.config import ClientCredentials

USERS = int(os.environ.get("AIMS_SYNC_RESUME_USERS", "120"))
LIMIT, WINDOW = 250, 5.0
pytestmark = pytest.mark.timeout(max(180, USERS))


def result_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_a_killed_batch_resumes_without_429_refetch_or_lost_results(tmp_path: Path) -> None:
    client = ClientCredentials(f"RESUME-{uuid.uuid4().hex[:12]}", "resume-test-consumer-key-" + uuid.uuid4().hex)
    with SnapTradeEmulator(
        customer_rate_limit=RateLimit(LIMIT, WINDOW), clients=(client,), journal_size=1_000_000
    ) as emu:
        users = emu.seed_users(USERS, prefix="resume")
        secrets = SQLiteSecretStore(tmp_path / "secrets.db")
        for user in users:
            secrets.put(user.user_id, user.user_secret)
        secrets.close()
        ids_file = tmp_path / "users.txt"
        ids_file.write_text("".join(f"{u.user_id}\n" for u in users))
        results = tmp_path / "results.jsonl"
        env = {
            **os.environ,
            "SNAPTRADE_CLIENT_ID": emu.client_id,
            "SNAPTRADE_CONSUMER_KEY": emu.consumer_key,
            "SNAPTRADE_ENVIRONMENT": "sandbox",
            "SNAPTRADE_BASE_URL": emu.base_url,
            "SNAPTRADE_CONSENT_REQUIRED": "false",
            "SNAPTRADE_SECRET_STORE_URL": f"sqlite:///{tmp_path}/secrets.db",
            "SNAPTRADE_SYNC_LEDGER_URL": f"sqlite:///{tmp_path}/ledger.db",
            "SNAPTRADE_CUSTOMER_LIMIT": str(LIMIT),
            "SNAPTRADE_CUSTOMER_LIMIT_WINDOW": str(WINDOW),
            "SNAPTRADE_RATE_LIMIT_MAX_WAIT": "120",
        }
        env.pop("SNAPTRADE_RATE_LIMIT_STORAGE_URL", None)  # the default memory budget
        command = [
            sys.executable, "-m", "aims_snaptrade", "sync", "--users", str(ids_file), "--batch-id", "nightly",
            "--results", str(results), "--no-progress", "--concurrency", "16",
        ]  # fmt: skip
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(result_lines(results)) < USERS // 3:
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never got a third of the way"
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.time()

        ledger = SQLiteSyncLedger(tmp_path / "ledger.db")
        finished = ledger.finished_in_batch("nightly", [u.user_id for u in users])
        ledger.close()
        before = result_lines(results)
        assert 0 < len(finished) < USERS
        # Every user recorded finished has its result (with its account states) in the file.
        assert finished <= {line["user_id"] for line in before if line["status"] == "synced"}

        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]

        journal = emu.journal.entries()
        refetched = {e.user_id for e in journal if e.time > killed_at and e.user_id in finished}
        after = result_lines(results)
        print(
            f"resume: {USERS} users at {LIMIT} per {WINDOW:g} s, killed with {len(finished)} finished, "
            f"{len(journal)} requests, 429s={sum(e.status == 429 for e in journal)}"
        )
    assert sum(e.status == 429 for e in journal) == 0  # over both runs
    assert refetched == set()  # no finished user fetched again
    synced = {line["user_id"] for line in after if line["status"] == "synced"}
    assert synced == {u.user_id for u in users}  # every user's result is in the file
    assert {line["user_id"] for line in after if line["status"] == "finished"} == finished
    assert all("accounts" in line for line in after if line["status"] == "synced")
