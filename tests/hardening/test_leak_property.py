"""Property: no consumer key, user secret or request signature escapes, in any form, on any failure path.

Generated keys and secrets of arbitrary characters go through every failure the emulator can
produce (error answers echoing the request as plain text, header lines, JSON, HTML and form
fields; SnapTrade-shaped errors; dropped connections; timeouts; lost and malformed answers),
with the sync and the async client. Searched: every log record of every logger, ``str``,
``repr``, formatted tracebacks, ``vars()`` and ``args`` of the error and of its whole
cause/context chain, and the spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest import mock

import pytest
from hardening_helpers import (
    COUNTS,
    PROFILE,
    against,
    captured_logs,
    consumer_key_parts,
    exception_texts,
    leaks,
    secret_parts,
    signatures_on_the_wire,
    span_texts,
)
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aims_snaptrade import AsyncSafeSnapTradeClient, CallOptions, SafeSnapTradeClient, SnapTradeError
from aims_snaptrade.observability import telemetry
from aims_snaptrade.redaction import isolated_registry
from aims_snaptrade.secrets import MemorySecretStore
from aims_snaptrade.testing import Fault, SnapTradeEmulator
from aims_snaptrade.testing.faults import ECHO_FORMATS

FAULTS: list[tuple[str, Fault]] = [
    *[(f"echo {fmt} {status}", Fault.echo(status, fmt)) for fmt in ECHO_FORMATS for status in (400, 401, 500)],
    ("status 401 1083", Fault.unauthorized("1083")),
    ("status 503", Fault.status(503)),
    ("rate limited", Fault.rate_limited(1)),
    ("drop", Fault.drop()),
    ("timeout", Fault.timeout(hold=1.0)),
    ("lost response", Fault.lost_response()),
    ("malformed json", Fault.malformed_json()),
]
"""Every failure path the emulator produces, with bodies echoing the request in every format."""

# The user secret travels in the query of the first and in the JSON body of the second.
OPERATIONS = ["list_all_user_accounts", "reset_snap_trade_user_secret"]

_SHORT = CallOptions(timeout=(2.0, 0.3))


@pytest.fixture(scope="module")
def emu() -> Iterator[SnapTradeEmulator]:
    with SnapTradeEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    # A private provider: the global one belongs to whichever test sets it first.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with mock.patch.object(telemetry, "_tracer", provider.get_tracer("hardening")):
        yield exporter


async def _async_call(emu: SnapTradeEmulator, key: str, operation: str, secret: str) -> BaseException | None:
    async with AsyncSafeSnapTradeClient(**against(emu, consumer_key=key, secret_store=MemorySecretStore())) as client:
        try:
            await client.call(operation, options=_SHORT, user_id="leak-user", user_secret=secret)
        except SnapTradeError as error:
            return error
    return None


def _sync_call(emu: SnapTradeEmulator, key: str, operation: str, secret: str) -> BaseException | None:
    with SafeSnapTradeClient(**against(emu, consumer_key=key, secret_store=MemorySecretStore())) as client:
        try:
            client.call(operation, options=_SHORT, user_id="leak-user", user_secret=secret)
        except SnapTradeError as error:
            return error
    return None


@PROFILE
@given(
    key=consumer_key_parts(),
    secret=secret_parts(),
    fault=st.sampled_from(FAULTS),
    operation=st.sampled_from(OPERATIONS),
    mode=st.sampled_from(["sync", "async"]),
)
def test_no_secret_escapes_any_failure_path(emu, spans, key, secret, fault, operation, mode):
    name, injected = fault
    op = operation
    (key, key_core), (secret, secret_core) = key, secret
    emu.faults.clear()
    spans.clear()
    emu.faults.add(injected, operation=op)
    with isolated_registry(), captured_logs() as lines, signatures_on_the_wire() as signatures:
        sync = mode == "sync"
        error = _sync_call(emu, key, op, secret) if sync else asyncio.run(_async_call(emu, key, op, secret))
    figures = COUNTS["leak property (examples through the emulator)"]
    figures["examples"] += 1
    figures["leaking examples"] += 0  # printed even when zero
    assert error is not None, name  # every fault fails the call (the emulator rejects a made-up key too)
    assert signatures, "the call was signed"
    texts = [*exception_texts(error), *lines, *span_texts(spans.get_finished_spans())]
    found = leaks([key, secret, *signatures], texts, cores=[key_core, secret_core])
    if found:
        figures["leaking examples"] += 1
    assert not found, (name, mode, op)
