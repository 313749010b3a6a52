"""Randomised fault trials (``fault_trials``): a bounded slice here, 10,000 in ``nox -s trading``.

``AIMS_TRADING_TRIALS`` sets the number of trials (half sync, half async); the figures are printed.
"""

from __future__ import annotations

import os

from fault_trials import LATE_LOOKUP_NAMES, LOOKUPS, run_all

TRIALS = int(os.environ.get("AIMS_TRADING_TRIALS", "1000"))
WORKERS = int(os.environ.get("AIMS_TRADING_WORKERS", "4"))


def test_no_intent_is_placed_twice_and_unknown_outcomes_settle() -> None:
    figures = run_all(TRIALS, WORKERS, seed=int(os.environ.get("AIMS_TRADING_SEED", "14")))
    print("\n" + figures.report(f"trading fault trials ({WORKERS} sync + {WORKERS} async workers)"))
    assert figures.counts["trials"] >= TRIALS - 2 * WORKERS
    assert figures.counts["sync trials"] > 0
    assert figures.counts["async trials"] > 0
    assert figures.counts["duplicates"] == 0
    assert figures.problems == []
    assert figures.counts["unknown outcomes"] > TRIALS // 10  # the faults did lose answers
    # Requests delayed before they left, and first look-ups that prove nothing, were mixed in.
    assert figures.counts["delay slot_wait"] > 0 and figures.counts["delay retry_after"] > 0
    assert all(figures.counts[f"lookup {name}"] > 0 for name in LOOKUPS)
    assert all(figures.counts[f"late lookup {name}"] > 0 for name in set(LATE_LOOKUP_NAMES))
    # problems == [] above includes: no not_placed verdict (or journal entry) for an order that exists.
    assert figures.settled_share >= 0.99
