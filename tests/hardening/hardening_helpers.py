"""Shared pieces of the hardening tests: profiles, generated secrets, every encoded form, where to look."""

from __future__ import annotations

import html
import json
import logging
import os
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock
from urllib.parse import quote, quote_plus

import aiohttp
import urllib3
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

COUNTS: defaultdict[str, Counter[str]] = defaultdict(Counter)
"""Figures printed at the end of the run (``hardening figures``): examples, cases, cells, failures."""

settings.register_profile(
    "hardening-ci",
    max_examples=int(os.environ.get("AIMS_HARDENING_EXAMPLES", "20")),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile(
    "hardening",
    max_examples=int(os.environ.get("AIMS_HARDENING_EXAMPLES", "10000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
PROFILE = settings.get_profile(os.environ.get("AIMS_HARDENING_PROFILE", "hardening-ci"))
"""Decorate every property with ``@PROFILE`` (not a global load: other tests keep their settings)."""

_ALPHABET = st.characters(codec="utf-8", exclude_categories=["Cs"])


# Letters outside a-f and digits, both present: no English word, number or hex request id the
# library prints can contain the core, so finding it anywhere is a leak, never a coincidence.
_CORE = "ghjkmnpqrstuvwxyz0123456789"


def _mixed(core: str) -> bool:
    return any(c.isdigit() for c in core) and any(c.isalpha() for c in core)


@st.composite
def secret_parts(draw: Any) -> tuple[str, str]:
    """A secret of arbitrary characters (quotes, backslashes, control characters, non-ASCII) and its core.

    The core, eight letters and digits in the middle, is what a partial leak shows: it is
    searched for on its own. It also keeps the secret from being a word the library prints
    itself (a class name in a traceback would read as a leak without being one).
    """
    head = draw(st.text(_ALPHABET, max_size=12))
    tail = draw(st.text(_ALPHABET, max_size=12))
    core = draw(st.text(_CORE, min_size=8, max_size=8).filter(_mixed))
    return head + core + tail, core


def secrets_() -> st.SearchStrategy[str]:
    """Secrets as :func:`secret_parts` makes them, without the core."""
    return secret_parts().map(lambda parts: parts[0])


def consumer_key_parts() -> st.SearchStrategy[tuple[str, str]]:
    """Keys as Settings accept them (no leading or trailing whitespace), with their core."""
    return secret_parts().map(lambda parts: ("k" + parts[0] + "k", parts[1]))


def against(emu: Any, **overrides: Any) -> dict[str, Any]:
    """Client keyword arguments for the emulator ``emu`` (no retries unless overridden, stores in memory)."""
    base = {"client_id": emu.client_id, "consumer_key": emu.consumer_key, "base_url": emu.base_url}
    # Every store in memory: no files in the working directory, nothing shared between tests.
    stores = {"sync_ledger_url": "memory://", "order_intent_store_url": "memory://", "webhook_dedupe_url": "memory://"}
    return {**base, **stores, "environment": "sandbox", "retry": "none", **overrides}


def forms_of(value: str) -> set[str]:
    """Every form in which ``value`` may appear, computed here independently of the library."""
    one = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        repr(value.encode())[2:-1],
        html.escape(value),
    }
    # Escaped twice: the SDK's exception text holds repr(bytes) of a JSON body echoing the request.
    two = {json.dumps(f)[1:-1] for f in one} | {repr(f.encode())[2:-1] for f in one} | {repr(f)[1:-1] for f in one}
    return {f for f in one | two if len(f) >= 6}


def exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr, formatted traceback and vars() of ``exc`` and of everything in its cause/context chain."""
    yield "".join(traceback.format_exception(exc))
    seen: set[int] = set()
    current: BaseException | None = exc
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(vars(current)) if hasattr(current, "__dict__") else ""
        yield repr(current.args)
        stack.extend(x for x in (current.__cause__, current.__context__) if x is not None)


def span_texts(spans: Iterable[Any]) -> Iterator[str]:
    """Names, attributes, events and status descriptions of finished spans."""
    for span in spans:
        yield span.name
        yield repr(dict(span.attributes or {}))
        yield repr(span.status.description)
        for event in span.events:
            yield event.name
            yield repr(dict(event.attributes or {}))


def leaks(secrets: Iterable[str], texts: Iterable[str], cores: Iterable[str] = ()) -> list[str]:
    """The forms of ``secrets`` and the ``cores`` found in ``texts`` (empty when nothing leaked)."""
    blob = "\n".join(texts)
    found = {form for secret in secrets for form in forms_of(secret) if form in blob}
    return sorted(found | {core for core in cores if core in blob})


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if record.stack_info:
            self.lines.append(record.stack_info)


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every record of every logger at DEBUG, formatted (tracebacks included)."""
    handler = _Capture()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@contextmanager
def signatures_on_the_wire() -> Iterator[list[str]]:
    """Every ``Signature`` header the transports put on the wire, read where urllib3/aiohttp get it."""
    seen: list[str] = []
    sync_request = urllib3.PoolManager.request
    async_request = aiohttp.ClientSession.request

    def record(headers: Any) -> None:
        for name, value in dict(headers or {}).items():
            if name.lower() == "signature":
                seen.append(value)

    def sync_spy(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        record(kwargs.get("headers"))
        return sync_request(self, method, url, *args, **kwargs)

    def async_spy(self: Any, method: str, url: Any, **kwargs: Any) -> Any:
        record(kwargs.get("headers"))
        return async_request(self, method, url, **kwargs)

    with (
        mock.patch.object(urllib3.PoolManager, "request", sync_spy),
        mock.patch.object(aiohttp.ClientSession, "request", async_spy),
    ):
        yield seen
