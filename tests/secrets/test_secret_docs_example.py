"""The custom store worked example of docs/secret-stores.md, run through the conformance suite.

The example's code is read from the documentation itself, so the page cannot drift from what
passes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aims_snaptrade.secrets import Keyring, SecretStore
from aims_snaptrade.testing.secret_store_conformance import (
    EncryptedAtRestConformance,
    SecretStoreConformance,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "secret-stores.md"
KEYRING = Keyring.generate("v1")


def _load_example() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(# example: directory-store\n.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "the worked example is missing from docs/secret-stores.md"
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace


EXAMPLE = _load_example()


class TestDocsDirectoryStore(SecretStoreConformance, EncryptedAtRestConformance):
    def make_store(self, tmp_path: Path) -> SecretStore:
        return self.make_store_with_keyring(tmp_path, KEYRING)

    def make_store_with_keyring(self, tmp_path: Path, keyring: Keyring) -> SecretStore:
        store: SecretStore = EXAMPLE["DirectorySecretStore"](tmp_path / "secrets", keyring)
        return store

    def raw_storage(self, store: SecretStore) -> bytes:
        return b"".join(p.read_bytes() for p in store._dir.iterdir())  # type: ignore[attr-defined]
