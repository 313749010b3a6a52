"""Crash safety: SIGKILL processes at random points, then prove nothing acknowledged was lost.

Each child is a forked process (fork, not spawn: the library is already imported, so a child
costs milliseconds instead of the SDK's import time) that opens its own store and reports
progress on a pipe with one unbuffered ``os.write`` per line, *after* the operation it reports
returned. The parent reads a random number of lines, SIGKILLs the child, and checks the store
with a fresh connection. Seeds are fixed per scenario so a failure can be replayed.

Secret values are short tokens (:func:`token`, at most 5 characters): the redaction registry
ignores values that short, and otherwise would recompile its pattern for each of the thousands
of fresh secrets these tests write, which is not what they measure.
"""

from __future__ import annotations

import os
import random
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from secret_store_helpers import POSTGRES_URL

from aims_snaptrade.secrets import Keyring, SecretStore, open_secret_store, rotate_keys

KILLS = 30
Emit = Callable[[str], None]
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def token(*parts: int) -> str:
    """A unique short secret for ``parts`` (each below 1000; base 36, at most 5 characters)."""
    number = 0
    for part in parts:
        assert 0 <= part < 1000
        number = number * 1000 + part
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if number == 0:
            return text


KEY_A = Keyring.generate("a")
KEY_B = Keyring.generate("b")
RING_AB = Keyring.parse(KEY_A.export() + "," + KEY_B.export())  # a encrypts, b decrypts
RING_BA = Keyring.parse(KEY_B.export() + "," + KEY_A.export())  # b encrypts, a decrypts


class Child:
    """A forked process running ``body(emit)``; its emitted lines reach the parent in order."""

    def __init__(self, body: Callable[[Emit], None]) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reports through the pipe
            code = 0
            try:
                os.close(read_end)

                def emit(line: str) -> None:
                    # One write per line (< PIPE_BUF): atomic, and in the kernel once it returns.
                    os.write(write_end, (line + "\n").encode())

                body(emit)
            except BaseException:
                os.write(write_end, ("ERROR " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        self.pid = pid
        self.reader = os.fdopen(read_end, "r")
        self.lines: list[str] = []

    def wait_for(self, count: int) -> None:
        """Read until ``count`` lines arrived or the child closed the pipe."""
        while len(self.lines) < count:
            line = self.reader.readline()
            if not line:
                return
            self.lines.append(line.rstrip("\n"))

    def kill(self) -> bool:
        """SIGKILL the child (if still running), collect every line; ``True`` if it was killed."""
        os.kill(self.pid, signal.SIGKILL)
        _, status = os.waitpid(self.pid, 0)
        self.lines.extend(line.rstrip("\n") for line in self.reader)
        self.reader.close()
        errors = [line for line in self.lines if line.startswith("ERROR")]
        assert not errors, errors[0].replace(" | ", "\n")
        return os.WIFSIGNALED(status)

    def join(self) -> int:
        """Wait for a child that ends by itself; return its exit code."""
        _, status = os.waitpid(self.pid, 0)
        self.lines.extend(line.rstrip("\n") for line in self.reader)
        self.reader.close()
        return os.waitstatus_to_exitcode(status)


@dataclass
class Figures:
    """Measured figures, printed with -s."""

    scenario: str
    kills: int = 0
    mid_operation: int = 0
    rows_verified: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def show(self) -> None:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        print(
            f"\n[crash] {self.scenario}: kills={self.kills} mid_operation={self.mid_operation} "
            f"rows_verified={self.rows_verified} {extra} in {time.monotonic() - self.started:.2f}s"
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str) -> Iterator[str]:
    """A fresh store URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
    else:
        yield f"{POSTGRES_URL}?schema={pg_schema}&table=crash_{tmp_path.name[-24:].replace('-', '_')}"


def verify_store(url: str, keyring: Keyring) -> SecretStore:
    return open_secret_store(url, keyring)


def test_kill_during_writes_loses_no_acknowledged_write(store_url: str) -> None:
    rng = random.Random(20240501)
    figures = Figures(f"writes/{store_url.split(':')[0]}")
    acked: dict[str, str] = {}
    for run in range(KILLS):

        def body(emit: Emit, run: int = run) -> None:
            store = open_secret_store(store_url, RING_AB)
            emit("OPEN")
            for i in range(1000):
                user = f"w-{i % 40:02d}"
                value = token(run, i)
                emit(f"INTENT {user} {value}")
                store.put(user, value)
                emit(f"ACK {user} {value}")

        child = Child(body)
        child.wait_for(rng.randint(0, 160))
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.002))
        assert child.kill(), "the writer was supposed to be killed mid-way"
        figures.kills += 1
        in_flight: dict[str, str] = {}
        for line in child.lines:
            kind, *rest = line.split(" ")
            if kind == "INTENT":
                in_flight[rest[0]] = rest[1]
            elif kind == "ACK":
                acked[rest[0]] = rest[1]
                in_flight.pop(rest[0], None)
        if in_flight:
            figures.mid_operation += 1
        store = verify_store(store_url, RING_AB)
        try:
            assert set(acked) <= set(store.user_ids())
            for user in set(acked) | set(in_flight):
                stored = store.get(user)
                allowed = {acked.get(user), in_flight.get(user)}
                assert stored in allowed, f"run {run}: {user} holds {stored!r}, expected one of {allowed}"
                if stored is not None:
                    acked[user] = stored  # an unacknowledged write that committed is now the truth
                figures.rows_verified += 1
        finally:
            store.close()
    figures.show()
    assert figures.mid_operation >= KILLS // 3, "too few kills landed inside a write"


def test_kill_during_key_rotation_leaves_every_row_readable(store_url: str) -> None:
    rng = random.Random(20240502)
    figures = Figures(f"key-rotation/{store_url.split(':')[0]}")
    users = [f"k-{n:03d}" for n in range(400)]
    setup = open_secret_store(store_url, RING_AB)
    for user in users:
        setup.put(user, token(users.index(user)))
    setup.close()
    completed = 0
    for run in range(KILLS):
        ring = RING_BA if run % 2 == 0 else RING_AB

        def body(emit: Emit, ring: Keyring = ring) -> None:
            store = open_secret_store(store_url, ring)
            emit("OPEN")
            rotate_keys(store, batch_size=10, progress=lambda b: emit(f"BATCH {b.reencrypted}"))
            emit("DONE")

        child = Child(body)
        child.wait_for(rng.randint(1, 40))
        child.kill()
        if "DONE" in child.lines:
            completed += 1
        else:
            figures.kills += 1
        store = verify_store(store_url, RING_AB)
        try:
            counts = store.key_version_counts()  # type: ignore[attr-defined]
            if len(counts) == 2:
                figures.mid_operation += 1
            assert sum(counts.values()) == len(users)
            for user in users:
                assert store.get(user) == token(users.index(user))
                figures.rows_verified += 1
        finally:
            store.close()
    final = rotate_keys(verify_store(store_url, RING_AB))
    assert final.complete
    assert final.versions_after == {"a": len(users)}
    figures.notes["ran_to_completion"] = completed
    figures.show()
    assert figures.mid_operation >= KILLS // 2, "too few kills landed inside a rotation"


def test_kill_during_user_secret_rotation_is_always_detected(store_url: str) -> None:
    rng = random.Random(20240503)
    figures = Figures(f"user-secret-rotation/{store_url.split(':')[0]}")
    users = [f"r-{n:02d}" for n in range(30)]
    # What SnapTrade holds for each user: changes the moment it answers resetUserSecret.
    truth = {user: token(999, n) for n, user in enumerate(users)}
    setup = open_secret_store(store_url, RING_AB)
    for user in users:
        setup.put(user, truth[user])
    setup.close()
    lost = recovered_by_abort = 0
    for run in range(KILLS):
        offset = rng.randrange(len(users))

        def body(emit: Emit, run: int = run, offset: int = offset) -> None:
            jitter = random.Random(run)
            store = open_secret_store(store_url, RING_AB)
            emit("OPEN")
            for n in range(1000):
                user = users[(offset + n) % len(users)]
                store.begin_rotation(user)
                emit(f"BEGUN {user}")
                new = token(run, n)
                # resetUserSecret: SnapTrade has switched to `new` once it answers.
                emit(f"ISSUED {user} {new}")
                time.sleep(jitter.uniform(0, 0.0005))  # the response travelling back
                store.complete_rotation(user, new)
                emit(f"DONE {user}")

        child = Child(body)
        child.wait_for(rng.randint(0, 90))
        assert child.kill()
        figures.kills += 1
        begun: set[str] = set()
        issued: set[str] = set()
        done: set[str] = set()
        for line in child.lines:
            kind, *rest = line.split(" ")
            if kind == "BEGUN":
                begun.add(rest[0])
                issued.discard(rest[0])
                done.discard(rest[0])
            elif kind == "ISSUED":
                truth[rest[0]] = rest[1]
                issued.add(rest[0])
            elif kind == "DONE":
                done.add(rest[0])
        store = verify_store(store_url, RING_AB)
        try:
            pending = set(store.pending_rotations())
            if pending:
                figures.mid_operation += 1
            # Users the child reached: those it reported, plus the one it may have begun unreported.
            reached = {users[(offset + n) % len(users)] for n in range(len(child.lines))}
            assert pending <= reached, "a rotation nobody began is reported pending"
            for user in users:
                stored = store.get(user)
                figures.rows_verified += 1
                if stored != truth[user]:
                    # The dangerous window: SnapTrade switched secrets, the store did not.
                    assert user in pending, f"run {run}: lost secret of {user} went undetected"
                if user in done:
                    assert stored == truth[user]
                    assert user not in pending
                if user in begun and user not in issued:
                    assert user in pending
                    assert stored == truth[user]
            # Recovery, as an operator would do it from the pending list.
            for user in sorted(pending):
                if store.get(user) == truth[user]:
                    store.abort_rotation(user)  # SnapTrade still accepts the stored secret
                    recovered_by_abort += 1
                else:
                    lost += 1  # delete the SnapTrade user, register again: a brand-new secret
                    assert store.delete(user)
                    truth[user] = token(998, run, users.index(user))
                    store.put(user, truth[user])
            assert store.pending_rotations() == []
        finally:
            store.close()
    figures.notes.update(lost_then_detected=lost, pending_resolved_by_abort=recovered_by_abort)
    figures.show()
    assert figures.mid_operation >= KILLS // 2, "too few kills landed inside a rotation"
    assert lost >= 1, "no kill landed in the window between resetUserSecret and storing its answer"


def test_two_processes_writing_concurrently_lose_nothing(store_url: str) -> None:
    go_read, go_write = os.pipe()

    def writer(tag: str, code: int) -> Callable[[Emit], None]:
        def body(emit: Emit) -> None:
            store = open_secret_store(store_url, RING_AB)
            os.read(go_read, 1)  # start together
            emit(f"START {time.monotonic()}")
            for i in range(300):
                store.put(f"{tag}-{i:03d}", token(code, i))
                store.put(f"shared-{i % 20:02d}", token(code + 10, i))
            emit(f"END {time.monotonic()}")

        return body

    children = [Child(writer("A", 1)), Child(writer("B", 2))]
    os.write(go_write, b"gg")
    codes = [child.join() for child in children]
    os.close(go_read)
    os.close(go_write)
    assert codes == [0, 0], [child.lines for child in children]
    spans = [[float(line.split()[1]) for line in child.lines] for child in children]
    starts, ends = [span[0] for span in spans], [span[1] for span in spans]
    assert max(starts) < min(ends), "the writers did not overlap"
    store = verify_store(store_url, RING_AB)
    try:
        for tag, code in (("A", 1), ("B", 2)):
            for i in range(300):
                assert store.get(f"{tag}-{i:03d}") == token(code, i)
        for j in range(20):
            # Last writer wins, and it is one of the two last writes, intact.
            assert store.get(f"shared-{j:02d}") in {token(11, 280 + j), token(12, 280 + j)}
        assert len(store.user_ids()) == 620
    finally:
        store.close()
