"""Fault matrix: every operation the emulator implements x every fault it injects x sync and async.

Each cell checks: a typed error or a 2xx result (nothing else escapes), attempts within the retry
policy, a write processed at most once (the emulator's journal), and no consumer key, user
secret or signature in the error, its cause chain, the logs or its formatted traceback.

The arguments of each operation come from the emulator's schema tests (``CASES``), which keep
one valid call per implemented operation. The normal suite runs one fault per operation (the
fault rotates with the operation, both clients); ``AIMS_HARDENING_PROFILE=hardening`` runs every cell.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hardening_helpers import COUNTS, against, captured_logs, exception_texts, leaks, signatures_on_the_wire

from aims_snaptrade import (
    AsyncSafeSnapTradeClient,
    CallOptions,
    SafeSnapTradeClient,
    SnapTradeError,
    SnapTradeGuardrailError,
)
from aims_snaptrade.operations import ORDER_WRITES, get_operation
from aims_snaptrade.redaction import isolated_registry
from aims_snaptrade.retry import RetryPolicy
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import Fault

sys.path.insert(0, str(Path(__file__).parents[1] / "testing"))
schemas = importlib.import_module("test_emulator_schemas")

HOLD = 0.6
FAULTS: dict[str, Fault] = {
    "none": Fault.latency(0.0),
    "500": Fault.status(500),
    "503": Fault.status(503),
    "400": Fault.status(400),
    "401 1083": Fault.unauthorized("1083"),
    "429": Fault.rate_limited(0),
    "timeout": Fault.timeout(hold=HOLD),
    "drop": Fault.drop(),
    "lost response": Fault.lost_response(),
    "malformed json": Fault.malformed_json(),
    "odd 2xx body": Fault.answer([None, {"x": float("1e308")}]),
    "echo": Fault.echo(401, "values"),
}
POLICY = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01, deadline=10.0)
OPTIONS = CallOptions(timeout=(2.0, 0.2))
FULL = os.environ.get("AIMS_HARDENING_PROFILE") == "hardening"
OPERATIONS = sorted(schemas.CASES)


def _cells() -> list[tuple[str, str, str]]:
    if FULL:
        return [(op, fault, mode) for op in OPERATIONS for fault in FAULTS for mode in ("sync", "async")]
    rotation = itertools.cycle(list(FAULTS)[1:])
    return [(op, fault, mode) for op, fault in zip(OPERATIONS, rotation, strict=False) for mode in ("sync", "async")]


# The schema tests' world (an emulator, a connected user, an open order): their CASES need it.
world = schemas.world


def _client_kwargs(world: Any) -> dict[str, Any]:
    return against(world.emu, secret_store=MemorySecretStore(), trading_enabled=True, retry=POLICY)


def _sync(world: Any, name: str, arguments: dict[str, Any]) -> Any:
    with SafeSnapTradeClient(**_client_kwargs(world)) as client:
        try:
            return client.call(name, confirm=True, options=OPTIONS, **arguments)
        except SnapTradeError as error:
            return error


async def _async(world: Any, name: str, arguments: dict[str, Any]) -> Any:
    async with AsyncSafeSnapTradeClient(**_client_kwargs(world)) as client:
        try:
            return await client.call(name, confirm=True, options=OPTIONS, **arguments)
        except SnapTradeError as error:
            return error


@pytest.mark.parametrize(("name", "fault", "mode"), _cells())
def test_cell(world, name, fault, mode):
    emu = world.emu
    emu.faults.clear()
    emu.reset_rate_limits()  # the full matrix sends more than SnapTrade's 250 a minute
    _, method, arguments = schemas.CASES[name](world)
    assert method == name
    journal = emu.journal
    sent_before = journal.count(operation=name)
    processed_before = journal.count(operation=name, processed=True)
    emu.faults.add(FAULTS[fault], operation=name)
    with isolated_registry(), captured_logs() as lines, signatures_on_the_wire() as signatures:
        outcome = _sync(world, name, arguments) if mode == "sync" else asyncio.run(_async(world, name, arguments))
    if fault == "timeout":
        time.sleep(HOLD + 0.2)  # the emulator journals a held request when its hold ends
    figures = COUNTS["fault matrix"]
    figures["cells"] += 1
    figures["typed errors" if isinstance(outcome, SnapTradeError) else "results"] += 1
    if not isinstance(outcome, SnapTradeError):
        assert 200 <= outcome.status < 300
    sent = journal.count(operation=name) - sent_before
    if name in ORDER_WRITES:
        # call() sends no order write (only the journaled flows do): refused locally, nothing sent.
        assert isinstance(outcome, SnapTradeGuardrailError) and sent == 0, (outcome, sent)
    else:
        assert 1 <= sent <= POLICY.max_attempts
    if not get_operation(name).idempotent:
        assert journal.count(operation=name, processed=True) - processed_before <= 1, "a write was processed twice"
    secrets = [emu.consumer_key, *signatures]
    if isinstance(arguments.get("user_secret"), str):
        secrets.append(arguments["user_secret"])
    texts = [*lines, *(exception_texts(outcome) if isinstance(outcome, BaseException) else [])]
    assert not leaks(secrets, texts)
