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

import logging
import traceback

from aims_snaptrade import _masking
from aims_snaptrade._masking import MASK, SecretKind, encoded_forms, isolated_registry, redact
from aims_snaptrade.errors import SnapTradeValidationError

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

REDACTED_LOGGERS: tuple[str, ...] = ("aims_snaptrade", "snaptrade_client", "urllib3", "aiohttp")
"""Loggers whose records are scrubbed (with their children)."""


def register_secret(value: str | None, *, kind: SecretKind = "secret") -> None:
    """Mask ``value`` (and every encoded form of it) wherever it appears. Empty or tiny values are ignored.

    Raises :class:`~aims_snaptrade.errors.SnapTradeValidationError` for anything but text,
    before any state changes: a bad call cannot leave the registry half-updated.
    """
    if value is None:
        return
    if not isinstance(value, str):
        raise SnapTradeValidationError(
            f"A secret to redact must be text (str), got {type(value).__name__}.",
            hint="Decode bytes before passing them (value.decode('utf-8')).",
        )
    if kind not in _masking._LIMITS:
        raise SnapTradeValidationError(f"kind must be one of {sorted(_masking._LIMITS)}, got {kind!r}.")
    _masking.add(kind, value)


def register_signature(value: str | None) -> None:
    """Mask a request ``Signature`` header value; called by the transport for every request it signs."""
    if isinstance(value, str):
        register_secret(value, kind="signature")


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
    with _masking._lock:
        if _installed:
            return
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacting_factory)
        _installed = True
