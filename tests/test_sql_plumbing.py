"""The SQL plumbing is written once: only ``aims_snaptrade._sql`` talks to a database driver.

Every SQL store (secrets, consent, audit, order intents, webhook claims, sync ledger) keeps only
its own queries and reaches SQLite and PostgreSQL through :mod:`aims_snaptrade._sql.database`, so
connections, busy retries, pragmas, durability and error mapping cannot drift between stores.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aims_snaptrade

PACKAGE = Path(aims_snaptrade.__file__).parent
DRIVERS = {"sqlite3", "psycopg"}
# The plumbing itself, and the conformance kit, which reads a user's PostgreSQL store directly to
# check the forget rule (it is test tooling, not a store).
ALLOWED = {"_sql", "testing"}
STORES = (
    "secrets/sqlite.py",
    "secrets/postgres.py",
    "compliance/consent.py",
    "compliance/audit.py",
    "trading/intents.py",
    "webhooks/dedupe/sqlite.py",
    "webhooks/dedupe/postgres.py",
    "sync/ledger/_sql.py",
    "sync/ledger/sqlite.py",
    "sync/ledger/postgres.py",
)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_sql_package_imports_a_database_driver() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(name for name in imports if name.split(".")[0] in DRIVERS)
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in ALLOWED
        for imports in [_runtime_imports(path)]
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_every_sql_store_opens_its_database_through_the_sql_package() -> None:
    # A store reaches the plumbing directly or through its family's shared module (sync/ledger/_sql.py).
    missing = [
        store
        for store in STORES
        if not any(
            name == "aims_snaptrade._sql.database" or name.endswith("ledger._sql")
            for name in _runtime_imports(PACKAGE / store)
        )
    ]
    assert missing == []
