"""Module paths of 0.1 that moved in 0.2, importable for one more minor release with a warning.

0.2 put each concern in its own package (docs/architecture.md): the command line under ``cli``,
operability under ``observability``. An import of an old path returns the new module itself (the
same object, so ``isinstance`` checks and monkeypatching keep working) and warns once with
:class:`DeprecationWarning`, naming the new path. The versioning policy (docs/versioning.md) says
when these go.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED: dict[str, str] = {
    "aims_snaptrade.telemetry": "aims_snaptrade.observability.telemetry",
    "aims_snaptrade.metric_table": "aims_snaptrade.observability.metric_table",
    "aims_snaptrade.alert_rules": "aims_snaptrade.observability.alert_rules",
    "aims_snaptrade.health": "aims_snaptrade.observability.health",
    "aims_snaptrade.verify": "aims_snaptrade.cli.verify",
    "aims_snaptrade.demo": "aims_snaptrade.cli.demo",
    "aims_snaptrade.compliance.cli": "aims_snaptrade.cli.compliance",
    "aims_snaptrade.sync.cli": "aims_snaptrade.cli.sync",
}
"""Old dotted path -> where the module lives now."""


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new} in aims-snaptrade 0.2; the old path is removed in 0.4 at the earliest",
            DeprecationWarning,
            stacklevel=2,
        )
        # The new module itself: its own name, spec and loader stay as they are.
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its new name."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``import aims_snaptrade`` does this)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
