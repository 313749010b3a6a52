"""The conformance suite must fail a broken store: the one of issue 11, written from the docs.

Its ``put`` drops the pending-rotation marker and its ``complete_rotation`` does not re-create a
row deleted meanwhile; an earlier suite passed it 22 of 22. The suite runs against it in a pytest
subprocess, and pytest's own report must name exactly the rules it breaks, while the same store
with the two bugs fixed passes every test.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

STORES = '''
import threading

from aims_snaptrade.errors import SnapTradeSecretRotationError, SnapTradeSecretStoreError
from aims_snaptrade.testing.secret_store_conformance import SecretStoreConformance


class BrokenStore:
    """A dict store, correct except for the two bugs of issue 11."""

    kind = "broken"
    persistent = False
    encrypted = False

    def __init__(self):
        self._rows = {}
        self._pending = set()
        self._lock = threading.Lock()

    def get(self, user_id):
        with self._lock:
            return self._rows.get(user_id)

    def put(self, user_id, secret):
        with self._lock:
            self._rows[user_id] = secret
            self._pending.discard(user_id)  # BUG: put drops the pending-rotation marker

    def delete(self, user_id):
        with self._lock:
            self._pending.discard(user_id)
            return self._rows.pop(user_id, None) is not None

    def user_ids(self):
        with self._lock:
            return sorted(self._rows)

    def begin_rotation(self, user_id):
        with self._lock:
            if user_id not in self._rows:
                raise SnapTradeSecretStoreError(f"no secret is stored for user {user_id!r}")
            if user_id in self._pending:
                raise SnapTradeSecretRotationError(f"a rotation of {user_id!r} is still pending")
            self._pending.add(user_id)

    def complete_rotation(self, user_id, new_secret):
        with self._lock:
            if user_id in self._rows:  # BUG: a row deleted meanwhile is not re-created
                self._rows[user_id] = new_secret
            self._pending.discard(user_id)

    def abort_rotation(self, user_id):
        with self._lock:
            self._pending.discard(user_id)

    def pending_rotations(self):
        with self._lock:
            return sorted(self._pending)

    def close(self):
        pass


class FixedStore(BrokenStore):
    kind = "fixed"

    def put(self, user_id, secret):
        with self._lock:
            self._rows[user_id] = secret

    def complete_rotation(self, user_id, new_secret):
        with self._lock:
            self._rows[user_id] = new_secret
            self._pending.discard(user_id)


class TestBrokenStore(SecretStoreConformance):
    concurrency_threads = 4

    def make_store(self, tmp_path):
        return BrokenStore()


class TestFixedStore(SecretStoreConformance):
    concurrency_threads = 4

    def make_store(self, tmp_path):
        return FixedStore()
'''


def test_the_suite_fails_the_broken_store_of_issue_11(tmp_path: Path) -> None:
    (tmp_path / "test_stores.py").write_text(textwrap.dedent(STORES))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "test_stores.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = done.stdout + done.stderr
    print(report)  # the note: pytest's own summary of what the suite caught
    failed = set(re.findall(r"^FAILED test_stores\.py::(\w+::\w+)", done.stdout, flags=re.MULTILINE))
    assert failed == {
        "TestBrokenStore::test_put_keeps_a_pending_rotation_marker",
        "TestBrokenStore::test_complete_rotation_recreates_a_row_deleted_meanwhile",
        "TestBrokenStore::test_complete_rotation_without_begin_still_stores",
    }, report
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed is not None, report
    assert done.returncode == 1


def test_the_docs_rule_table_and_the_suite_name_the_same_tests() -> None:
    from aims_snaptrade.testing.secret_store_conformance import EncryptedAtRestConformance, SecretStoreConformance

    doc = (Path(__file__).resolve().parents[2] / "docs" / "secret-stores.md").read_text()
    table = doc.split("### The rules, one test each", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"\| `(test_\w+)`", table))
    suite = {
        name
        for cls in (SecretStoreConformance, EncryptedAtRestConformance)
        for name in vars(cls)
        if name.startswith("test_")
    }
    assert documented == suite
