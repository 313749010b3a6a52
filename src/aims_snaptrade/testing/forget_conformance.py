"""The forget rule every store holding personal data must pass, shared by the conformance suites.

After a store forgets a user, no byte of that user's id (nor of what identifies them: account
ids, secrets) may remain in the store's storage: not in a live row, not in a deleted page of a
file, not in a write-ahead log. Each suite (secrets, consents, the audit trail, order intents,
the sync ledger) stores two users, forgets one, then reads :meth:`ForgetRule.stored_bytes`.

By default that is every file under the test's ``tmp_path`` (SQLite files with their WAL and
SHM): a store keeping its data elsewhere (a server, memory) overrides it to return every byte it
holds (dumped rows, keys). A store that returns nothing skips the rule, saying why.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ForgetRule", "assert_forgotten", "files_under", "forms_of", "postgres_rows"]


def files_under(directory: Path) -> bytes:
    """Every byte of every file under ``directory`` (WAL and SHM files included)."""
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def forms_of(value: str) -> list[bytes]:
    """The encodings an id may be stored in: UTF-8, UTF-16 (LE), hex, base64."""
    raw = value.encode()
    return [raw, value.encode("utf-16-le"), raw.hex().encode(), base64.b64encode(raw)]


def assert_forgotten(raw: bytes, gone: tuple[str, ...], kept: str | None) -> None:
    """No form of any value in ``gone`` is in ``raw``; ``kept`` is (the scan sees real data)."""
    if kept is not None:
        assert kept.encode() in raw, (
            f"the other user's id {kept!r} is not in the stored bytes: stored_bytes does not read the storage"
        )
    for value in gone:
        for form in forms_of(value):
            assert form not in raw, f"{value!r} is still in the store's storage (as {form[:40]!r}) after forgetting"


class ForgetRule:
    """Mixed into every conformance suite of a store holding personal data."""

    def stored_bytes(self, store: Any, tmp_path: Path) -> bytes:
        """Every byte the store holds (default: the files under ``tmp_path``); override for servers."""
        return files_under(tmp_path)

    def _raw_or_skip(self, store: Any, tmp_path: Path) -> bytes:
        raw = self.stored_bytes(store, tmp_path)
        if not raw:
            pytest.skip("stored_bytes returned nothing (a store in memory): implement it to check the forget rule")
        return raw


def postgres_rows(conninfo: str, schema: str) -> bytes:
    """Every row of every table in ``schema``, as PostgreSQL's text form (for :meth:`ForgetRule.stored_bytes`)."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchall()
        ]
        rows = [
            str(row[0])
            for table in tables
            for row in conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t').fetchall()  # noqa: S608
        ]
    return "\n".join(rows).encode()
