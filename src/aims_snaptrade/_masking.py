"""The masking engine under :mod:`aims_snaptrade.redaction`: the registry of secret values and their
encoded forms, and :func:`redact`.

It imports nothing of the library, so :mod:`aims_snaptrade.errors` can redact every error's text
when it is built while :mod:`aims_snaptrade.redaction` (the public face: registration with typed
errors for bad input, the log-record hook, :func:`~aims_snaptrade.redaction.scrub_exception`)
raises those errors. How the matching works and what it costs: the redaction module's docstring.
"""

from __future__ import annotations

import functools
import html
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, quote_plus

MASK = "***"

SecretKind = Literal["secret", "key", "signature"]
"""``key``: consumer and encryption keys, never forgotten. ``secret``: user secrets, the least
recently used forgotten beyond 100,000. ``signature``: request signatures, the 4,096 latest kept
(an echoed signature is scrubbed when the answer arrives)."""

# Values shorter than this are not registered: masking "ab" everywhere would mangle logs and
# such values are not credentials SnapTrade issues.
_MIN_SECRET_LENGTH = 6
_LIMITS: dict[str, int | None] = {"key": None, "secret": 100_000, "signature": 4_096}


def _html(value: str) -> str:
    return html.escape(value, quote=True)


def _bytes_repr(value: str) -> str:
    return repr(value.encode("utf-8", "surrogatepass"))[2:-1]


_ENCODERS: tuple[Callable[[str], str], ...] = (
    lambda v: quote(v, safe=""),
    quote,  # safe="/": how the SDK encodes query values
    quote_plus,
    lambda v: json.dumps(v)[1:-1],
    lambda v: json.dumps(v, ensure_ascii=False)[1:-1],
    lambda v: repr(v)[1:-1],
    lambda v: ascii(v)[1:-1],
    _bytes_repr,
    _html,
    lambda v: html.escape(v, quote=False),
)


# Characters on which every encoder above works one character at a time, and whose encodings are
# made of them again: base64 (signatures), url-safe base64, hex, UUIDs and percent-escapes. No
# quote (repr's quoting depends on the whole string), no &<>, nothing a percent-encoder rejects.
_CHARWISE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_.~%")


@functools.cache
def _charwise_tables() -> tuple[dict[int, str], ...]:
    """Every distinct map of ``_CHARWISE`` that one encoder, or a pair of them, makes (for ``str.translate``).

    On such a string an encoder's output is the concatenation of its outputs for each character,
    so each encoder is a translation table, a pair of encoders the composed table, and equal
    tables give equal forms: the forms of a value are its translations by the distinct tables.
    """
    singles = {tuple((c, encode(c)) for c in sorted(_CHARWISE)) for encode in _ENCODERS}
    pairs = {
        tuple((c, "".join(dict(second)[d] for d in text)) for c, text in first)
        for first in singles
        for second in singles
    }
    return tuple({ord(c): text for c, text in table} for table in singles | pairs)


@functools.cache
def _charwise_replacements() -> tuple[tuple[tuple[str, str], ...] | dict[int, str], ...]:
    """Each of :func:`_charwise_tables` as the few characters it changes, ``%`` first, for ``str.replace``.

    ``str.translate`` with tables mapping characters to strings leaves CPython's fast path at the
    first such character and looks every character up as an int key (about 40 k instructions for
    one signature's six tables). Replacing the three or four characters a table changes, one after
    the other, gives the same text when no replacement holds a changed character other than
    ``%``, which is replaced first, before any replacement brings one in; a table for which that
    does not hold stays a table and is translated.
    """
    found: list[tuple[tuple[str, str], ...] | dict[int, str]] = []
    for table in _charwise_tables():
        changes = sorted(((chr(c), text) for c, text in table.items() if chr(c) != text), key=lambda ct: ct[0] != "%")
        changed = {char for char, _ in changes} - {"%"}
        found.append(table if any(changed.intersection(text) for _, text in changes) else tuple(changes))
    return tuple(found)


def _replaced(value: str, changes: tuple[tuple[str, str], ...] | dict[int, str]) -> str:
    if isinstance(changes, dict):
        return value.translate(changes)
    for char, text in changes:
        if char in value:
            value = value.replace(char, text)
    return value


def encoded_forms(value: str) -> frozenset[str]:
    """Every form of ``value`` the registry masks: raw, each encoding, and each pair of encodings."""
    if _CHARWISE.issuperset(value):
        # A fresh request signature is registered on every call: translations instead of the
        # 30 encoder calls of _encoded (about 60 us); equal to them (tests/test_redaction.py).
        found = {value}
        found.update([_replaced(value, changes) for changes in _charwise_replacements()])
        if len(value) >= _MIN_SECRET_LENGTH:  # no translation shortens a value: every form is long enough
            return frozenset(found)
        return frozenset(f for f in found if len(f) >= _MIN_SECRET_LENGTH)
    return _encoded(value)


def _encoded(value: str) -> frozenset[str]:
    """The definition of :func:`encoded_forms`: every encoder, then every encoder on each new form."""
    forms = {value}
    frontier = {value}
    for _ in range(2):
        grown: set[str] = set()
        for text in frontier:
            for encode in _ENCODERS:
                try:
                    grown.add(encode(text))
                except (UnicodeError, ValueError):  # lone surrogates cannot be percent-encoded
                    continue
        frontier = grown - forms
        forms |= frontier
    return frozenset(f for f in forms if len(f) >= _MIN_SECRET_LENGTH)


@dataclass
class _Registry:
    """Every registered value and its forms, with the lookup tables :func:`redact` reads."""

    # kind -> value -> forms, least recently registered first. OrderedDict: evicting the oldest
    # of a plain dict scans past every slot emptied before it (a signature is evicted per call).
    pools: dict[str, OrderedDict[str, frozenset[str]]] = field(
        default_factory=lambda: {kind: OrderedDict() for kind in _LIMITS}
    )
    forms: dict[str, int] = field(default_factory=dict)  # form -> how many values hold it
    prefixes: dict[str, dict[int, int]] = field(default_factory=dict)  # first 6 chars -> length -> count
    chars: frozenset[str] = frozenset()
    run_pattern: re.Pattern[str] | None = None

    def add(self, kind: str, value: str) -> None:
        pool = self.pools[kind]
        if value in pool:
            pool.move_to_end(value)  # most recently used last
            return
        forms = encoded_forms(value)
        pool[value] = forms
        self._count(forms, +1)
        limit = _LIMITS[kind]
        if limit is not None and len(pool) > limit:
            self._count(pool.popitem(last=False)[1], -1)
        if not all(map(self.chars.issuperset, forms)):  # without building the forms' alphabet
            self.chars = self.chars.union(*forms)
            escaped = "".join(re.escape(c) for c in sorted(self.chars))
            self.run_pattern = re.compile(f"[{escaped}]{{{_MIN_SECRET_LENGTH},}}")

    def _count(self, forms: frozenset[str], delta: int) -> None:
        # One pass over a value's forms with the tables bound once: a signature is registered,
        # and another evicted, on every request.
        held, prefixes = self.forms, self.prefixes
        for form in forms:
            count = held.get(form, 0) + delta
            if count:
                held[form] = count
            else:
                held.pop(form, None)
            head = form[:_MIN_SECRET_LENGTH]
            lengths = prefixes.get(head)
            if lengths is None:
                lengths = prefixes[head] = {}
            size = len(form)
            left = lengths.get(size, 0) + delta
            if left:
                lengths[size] = left
            else:
                lengths.pop(size, None)
                if not lengths:
                    del prefixes[head]


_lock = threading.Lock()
_registry = _Registry()


def _mask_run(run: str) -> str:
    forms = _registry.forms
    if run in forms:
        return MASK
    prefixes = _registry.prefixes
    out: list[str] = []
    i, n, plain_from = 0, len(run), 0
    last = n - _MIN_SECRET_LENGTH
    while i <= last:
        lengths = prefixes.get(run[i : i + _MIN_SECRET_LENGTH])
        if lengths:
            for length in sorted(lengths, reverse=True):
                if i + length <= n and run[i : i + length] in forms:
                    out.append(run[plain_from:i])
                    out.append(MASK)
                    i += length
                    plain_from = i
                    break
            else:
                i += 1
        else:
            i += 1
    if not out:
        return run
    out.append(run[plain_from:])
    return "".join(out)


# A credential's name, optional quotes/escapes, ':' or '=' (raw or percent-encoded), more quotes,
# then the value: masks credentials whose value was never registered, in URLs, form bodies, JSON
# (escaped once or twice), Python reprs and header lines (after a real or an escaped line break).
_NAME = r"(?:user_?secret|consumer_?key|partner_?signature|x-signature|signature|authorization|secret)"
_QUOTES = r"(?:[\\\"'\s]|%2[27]|&quot;|&\#x27;|&\#39;)*"
_SEPARATOR = r"(?:[:=]|%3[ADad])"
_VALUE = r"(?:%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|[^\s\"'&<>\\,;{}()\[\]%])+"
# The lookahead lets the engine skip positions that cannot start a name (2-3x faster).
_POSITIONAL = re.compile(f"(?i)(?=[acpsux])({_NAME}{_QUOTES}{_SEPARATOR}(?:{_QUOTES}|\\+)*)({_VALUE})")
_NAME_WORDS = ("secret", "signature", "key", "authorization")


def _mask_positional(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def redact(text: str) -> str:
    """Return ``text`` with every registered secret (in every form) and every positional credential masked."""
    if not text:
        return text
    pattern = _registry.run_pattern
    if pattern is not None:
        text = pattern.sub(lambda m: _mask_run(m.group()), text)
    lowered = text.lower()
    if not any(word in lowered for word in _NAME_WORDS):  # most lines name no credential at all
        return text
    return _POSITIONAL.sub(_mask_positional, text)


def redact_all(values: Iterable[object]) -> tuple[object, ...]:
    """Redact the strings among ``values`` (log-record arguments), leaving other types alone."""
    return tuple(redact(v) if isinstance(v, str) else v for v in values)


@contextmanager
def isolated_registry(*, empty: bool = True) -> Iterator[None]:
    """Run a block with its own registry (empty by default) and restore the previous one after.

    For tests: what a test registers never changes what another test sees, whatever the order.
    """
    global _registry
    with _lock:
        saved = _registry
        _registry = _Registry() if empty else deepcopy(saved)
    try:
        yield
    finally:
        with _lock:
            _registry = saved


def add(kind: str, value: str) -> None:
    """Register ``value`` of ``kind`` (already validated by the caller); values too short are ignored."""
    if len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _registry.add(kind, value)
