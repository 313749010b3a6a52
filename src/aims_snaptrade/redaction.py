"""Credential redaction: nothing that leaves the library may carry a secret.

Redaction wraps every road out of the library rather than being a step on one of them:

* a process-wide registry of secret values (the consumer key, every user secret the library has
  seen, request signatures) that are masked wherever they appear;
* patterns that mask credentials by position even when their value was never registered
  (``userSecret=...`` in URLs, ``"userSecret": "..."`` in JSON, ``Signature`` headers);
* a log-record hook that scrubs every record of the library's loggers and of the SDK's
  transports (``snaptrade_client``, ``urllib3``, ``aiohttp``), message, arguments and traceback;
* :func:`scrub_exception`, used where third-party exceptions become ours.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable

__all__ = [
    "MASK",
    "REDACTED_LOGGERS",
    "install_log_redaction",
    "redact",
    "register_secret",
    "scrub_exception",
]

MASK = "***"

REDACTED_LOGGERS: tuple[str, ...] = ("aims_snaptrade", "snaptrade_client", "urllib3", "aiohttp")
"""Loggers whose records are scrubbed (with their children)."""

# Secrets shorter than this are not registered: masking "ab" everywhere would mangle logs and
# such values are not credentials SnapTrade issues.
_MIN_SECRET_LENGTH = 6
_MAX_REGISTERED = 100_000

_lock = threading.Lock()
_secrets: set[str] = set()
_lengths: tuple[int, ...] = ()  # distinct secret lengths, longest first
_chars: frozenset[str] = frozenset()
_run_pattern: re.Pattern[str] | None = None

_POSITIONAL = (
    # userSecret / consumerKey / signature as query parameters or form fields.
    re.compile(r"(?i)((?:user_?secret|consumer_?key|signature|secret)=)[^&\s'\"<>]+"),
    # ... as JSON / Python-dict keys: "userSecret": "value" or 'Signature': 'value'.
    re.compile(r"(?i)([\"'](?:user_?secret|consumer_?key|signature|secret|x-signature)[\"']\s*[:=]\s*[\"'])[^\"']*"),
    # ... as HTTP header lines: Signature: value.
    re.compile(r"(?im)(^\s*(?:signature|authorization)\s*:\s*)\S+"),
)


def register_secret(value: str | None) -> None:
    """Add ``value`` to the registry of strings masked everywhere. Empty or tiny values are ignored.

    Registration is O(1) however many secrets are known (a multi-tenant service registers one
    per user): matching uses a set lookup over runs of the characters secrets are made of,
    instead of one alternation regex that would be recompiled for every new secret.
    """
    global _lengths, _chars, _run_pattern
    if not value or len(value) < _MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        if len(_secrets) >= _MAX_REGISTERED:
            # Bounded memory for long-running multi-tenant services: the positional patterns
            # still mask user secrets in URLs and bodies.
            _secrets.clear()
        _secrets.add(value)
        if len(value) not in _lengths:
            _lengths = tuple(sorted({*_lengths, len(value)}, reverse=True))
        if not _chars.issuperset(value):
            _chars = _chars.union(value)
            alphabet = "".join(re.escape(c) for c in sorted(_chars))
            _run_pattern = re.compile(f"[{alphabet}]{{{_MIN_SECRET_LENGTH},}}")


def _mask_run(run: str) -> str:
    if run in _secrets:
        return MASK
    out: list[str] = []
    i, n, plain_from = 0, len(run), 0
    while i < n:
        for length in _lengths:
            if i + length <= n and run[i : i + length] in _secrets:
                out.append(run[plain_from:i])
                out.append(MASK)
                i += length
                plain_from = i
                break
        else:
            i += 1
    if not out:
        return run
    out.append(run[plain_from:])
    return "".join(out)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and every positional credential masked."""
    if not text:
        return text
    pattern = _run_pattern
    if pattern is not None:
        text = pattern.sub(lambda m: _mask_run(m.group()), text)
    for positional in _POSITIONAL:
        text = positional.sub(lambda m: m.group(1) + MASK, text)
    return text


def redact_all(values: Iterable[object]) -> tuple[object, ...]:
    """Redact the strings among ``values`` (log-record arguments), leaving other types alone."""
    return tuple(redact(v) if isinstance(v, str) else v for v in values)


def scrub_exception(exc: BaseException) -> str:
    """Return a redacted one-line description of ``exc``: its qualified type name and text."""
    kind = type(exc)
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not hide the original failure
        text = "<unprintable>"
    return redact(f"{kind.__module__}.{kind.__qualname__}: {text}")


def _is_redacted_logger(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in REDACTED_LOGGERS)


_installed = False
_previous_factory = logging.getLogRecordFactory()


def _scrub_record(record: logging.LogRecord) -> None:
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
