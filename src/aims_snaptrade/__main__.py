"""``python -m aims_snaptrade``: the ``aims-snaptrade`` command, without relying on PATH."""

import sys

from aims_snaptrade.cli.main import main

sys.exit(main())
