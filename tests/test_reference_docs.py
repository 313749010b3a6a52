"""docs/reference.md documents every public name of ``aims_snaptrade`` and ``aims_snaptrade.testing``.

A name is covered when a ``::: path`` directive names it, or names the module (or class) that
defines it and that module exports it (its ``__all__``), which is what mkdocstrings renders.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

import aims_snaptrade
import aims_snaptrade.testing

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"
DIRECTIVES = set(re.findall(r"^::: ([\w.]+)\s*$", REFERENCE.read_text(encoding="utf-8"), flags=re.MULTILINE))


def _home(package: ModuleType, name: str) -> tuple[str, str]:
    """(defining module, dotted name inside it) of ``package.name``."""
    value = getattr(package, name)
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and module.startswith("aims_snaptrade"):
        return module, qualname
    # A constant: the package's lazy-import table says where it lives.
    where = package._WHERE[name]  # type: ignore[attr-defined]
    return (where if "." in where else f"{package.__name__}.{where}"), name


def _covered(module: str, qualname: str) -> bool:
    parts = qualname.split(".")
    if f"{module}.{qualname}" in DIRECTIVES:
        return True
    for i in range(len(parts) - 1, 0, -1):  # an enclosing class is documented
        if f"{module}.{'.'.join(parts[:i])}" in DIRECTIVES:
            return True
    if module in DIRECTIVES:
        exported = getattr(importlib.import_module(module), "__all__", None)
        return exported is None or parts[0] in exported
    return False


PUBLIC = [
    (package, name)
    for package in (aims_snaptrade, aims_snaptrade.testing)
    for name in package.__all__
    if not (name.startswith("__") and name.endswith("__"))
]


@pytest.mark.parametrize(("package", "name"), PUBLIC, ids=[f"{p.__name__}.{n}" for p, n in PUBLIC])
def test_every_public_name_is_in_the_reference(package: ModuleType, name: str) -> None:
    module, qualname = _home(package, name)
    assert _covered(module, qualname), f"docs/reference.md does not document {package.__name__}.{name} ({module})"


def test_dunder_names_are_mentioned_and_directives_resolve() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for package in (aims_snaptrade, aims_snaptrade.testing):
        for name in package.__all__:
            if name.startswith("__") and name.endswith("__"):
                assert f"{package.__name__}.{name}" in text
    for directive in DIRECTIVES:
        module_name, attribute = directive, None
        while True:
            try:
                target = importlib.import_module(module_name)
                break
            except ModuleNotFoundError:
                module_name, _, tail = module_name.rpartition(".")
                attribute = tail if attribute is None else f"{tail}.{attribute}"
        for part in (attribute or "").split(".") if attribute else []:
            target = getattr(target, part)
