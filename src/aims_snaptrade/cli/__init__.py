"""The ``aims-snaptrade`` command: every subcommand and the demo (``aims-snaptrade --help``).

The command line is one of the few places that build clients (with the Celery integration and the
pytest plugin); flows and stores never do.
"""

from __future__ import annotations

from aims_snaptrade.cli.main import main

__all__ = ["main"]
