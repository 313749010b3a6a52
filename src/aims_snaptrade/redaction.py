"""Credential redaction: nothing that leaves the library may carry a secret, in any encoding.

Redaction wraps every road out of the library rather than being a step on one of them:

* a process-wide registry of secret values (the consumer key, every user secret the library has
  seen, every request signature it sent) masked wherever they appear. Each value is registered
  with every form in which text we emit or carry can hold it: raw, percent-encoded (``quote``
  and ``quote_plus``), JSON-escaped, Python-repr-escaped (``str`` and ``bytes``), HTML-escaped,
  and those escapings applied twice (the SDK's exception text holds ``repr(bytes)`` of a JSON
  body that itself escapes the request);
* patterns that mask credentials by position even when their value was never registered
  (``userSecret=...`` in URLs, ``"userSecret": "..."`` in JSON, ``Signature: ...`` header lines,
  escaped or not);
* a log-record hook that scrubs every record of the library's loggers and of the SDK's
  transports (``snaptrade_client``, ``urllib3``, ``aiohttp``): message, arguments, traceback
  and stack;
* :func:`scrub_exception`, used where third-party exceptions become ours.

Cost: encodings are computed once, when a value is registered. Matching a line is one regex pass
finding runs of the characters secrets are made of, then, inside each run, one dictionary lookup
per position (keyed by the first six characters of every form) and a set lookup per candidate.
It grows with the length of the text, not with the number of secrets (figures in
``docs/security.md``, measured by ``benchmarks/redaction_cost.py``).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "REDACTED_LOGGERS",
    "SecretKind",
    "encoded_forms",
    "install_log_redaction",
    "isolated_registry",
    "redact",
    "register_secret",
    "register_signature",
    "scrub_exception",
]

MASK = "***"

REDACTED_LOGGERS: tuple[str, ...] = ("aims_snaptrade", "snaptrade_client", "urllib3", "aiohttp")
"""Loggers whose records are scrubbed (with their children)."""

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


def encoded_forms(value: str) -> frozenset[str]:
    """Every form of ``value`` the registry masks: raw, each encoding, and each pair of encodings."""
    if _CHARWISE.issuperset(value):
        # A fresh request signature is registered on every call: translations instead of the
        # 30 encoder calls of _encoded (about 60 us); equal to them (tests/test_redaction.py).
        found = {value}
        found.update(value.translate(table) for table in _charwise_tables())
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
        for form in forms:
            self._count(form, +1)
        limit = _LIMITS[kind]
        if limit is not None and len(pool) > limit:
            for form in pool.popitem(last=False)[1]:
                self._count(form, -1)
        if not all(map(self.chars.issuperset, forms)):  # without building the forms' alphabet
            self.chars = self.chars.union(*forms)
            escaped = "".join(re.escape(c) for c in sorted(self.chars))
            self.run_pattern = re.compile(f"[{escaped}]{{{_MIN_SECRET_LENGTH},}}")

    def _count(self, form: str, delta: int) -> None:
        held = self.forms.get(form, 0) + delta
        lengths = self.prefixes.setdefault(form[:_MIN_SECRET_LENGTH], {})
        size = len(form)
        left = lengths.get(size, 0) + delta
        if held:
            self.forms[form] = held
        else:
            self.forms.pop(form, None)
        if left:
            lengths[size] = left
        else:
            lengths.pop(size, None)
            if not lengths:
                del self.prefixes[form[:_MIN_SECRET_LENGTH]]


_lock = threading.Lock()
_registry = _Registry()


def register_secret(value: str | None, *, kind: SecretKind = "secret") -> None:
    """Mask ``value`` (and every encoded form of it) wherever it appears. Empty or tiny values are ignored.

    Raises :class:`~aims_snaptrade.errors.SnapTradeValidationError` for anything but text,
    before any state changes: a bad call cannot leave the registry half-updated.
    """
    if value is None:
        return
    if not isinstance(value, str):
        from aims_snaptrade.errors import SnapTradeValidationError

        raise SnapTradeValidationError(
            f"A secret to redact must be text (str), got {type(value).__name__}.",
            hint="Decode bytes before passing them (value.decode('utf-8')).",
        )
    if kind not in _LIMITS:
        from aims_snaptrade.errors import SnapTradeValidationError

        raise SnapTradeValidationError(f"kind must be one of {sorted(_LIMITS)}, got {kind!r}.")
    if len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _registry.add(kind, value)


def register_signature(value: str | None) -> None:
    """Mask a request ``Signature`` header value; called by the transport for every request it signs."""
    if isinstance(value, str):
        register_secret(value, kind="signature")


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


def scrub_exception(exc: BaseException) -> str:
    """Return a redacted one-line description of ``exc``: its qualified type name and text.

    An HTTP error that carries a response (the SDK's ``ApiException``) is described by its status
    and reason only: its text repeats the headers and ``repr`` of the body bytes, an encoding of
    an encoding of whatever the server echoed, and the library's own error already holds the
    body's redacted detail.
    """
    kind = type(exc)
    try:
        if hasattr(exc, "body") and hasattr(exc, "status") and hasattr(exc, "reason"):
            text = f"({getattr(exc, 'status', None)}) {getattr(exc, 'reason', None)} (headers and body omitted)"
        else:
            text = str(exc)
    except Exception:  # a broken __str__ must not hide the original failure
        text = "<unprintable>"
    return redact(f"{kind.__module__}.{kind.__qualname__}: {text}")


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


def _is_redacted_logger(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in REDACTED_LOGGERS)


_installed = False
_previous_factory = logging.getLogRecordFactory()


def _decoded(value: object) -> object:
    # Bytes would be formatted as repr(bytes): one more escaping over whatever they hold. Decoded,
    # they hold the forms the registry knows.
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value


def _scrub_record(record: logging.LogRecord) -> None:
    if isinstance(record.args, tuple):
        record.args = tuple(_decoded(arg) for arg in record.args)
    try:
        message = record.getMessage()
    except Exception:
        message = str(record.msg)
    record.msg = redact(message)
    record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        formatted = "".join(traceback.format_exception(*record.exc_info))
        record.exc_text = redact(formatted.rstrip("\n"))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _redacting_factory(*args: object, **kwargs: object) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    if _is_redacted_logger(record.name):
        _scrub_record(record)
    return record


def install_log_redaction() -> None:
    """Scrub every log record of :data:`REDACTED_LOGGERS`, whatever handler later receives it.

    A logger filter would only see records created by that exact logger (not by children such as
    ``urllib3.connectionpool``), and handler filters belong to the application, so the record
    factory is wrapped instead. Idempotent; called when a client is built.
    """
    global _installed, _previous_factory
    with _lock:
        if _installed:
            return
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)
        _installed = True
