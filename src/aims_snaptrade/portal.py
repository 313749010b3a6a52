"""The Connection Portal's result, as SnapTrade reports it to the partner's app.

SnapTrade documents two ways the portal tells an app how a connection attempt ended
(docs.snaptrade.com, "Connection Portal"):

* **The return to the redirect URL** (``customRedirect``, or the default one set in the
  dashboard; with ``immediateRedirect=true`` the portal skips its finish screen):
  ``?status=SUCCESS&connection_id=<id>``, ``?status=ERROR&status_code=<n>&error_code=<code>``,
  or ``?status=ABANDONED``.
* **Window messages** to a web app that opened the portal with ``window.open`` or in an iframe:
  ``{status: 'SUCCESS', authorizationId}``, ``{status: 'ERROR', errorCode, statusCode, detail}``,
  and the plain strings ``'CLOSED'`` (the OAuth tab was closed, iframe only), ``'CLOSE_MODAL'``
  and ``'ABANDONED'``. The older iframe form sends the strings ``'SUCCESS'`` and
  ``'ERROR:<status code>'``.

:meth:`PortalResult.from_redirect` and :meth:`PortalResult.from_message` read either into one
typed result, so a service never parses URLs or messages itself. Both are reached by the
person's browser, so both are untrusted input: anything that is not one of the shapes above is
refused with :class:`~aims_snaptrade.errors.SnapTradeValidationError`, and a successful result is
a *hint*, not proof. Nothing signs it, so anyone can craft one: confirm the connection exists
(``list_accounts``, or the signed ``CONNECTION_ADDED`` webhook) before relying on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import Field

from aims_snaptrade import errors as e
from aims_snaptrade.models import SnapTradeModel

__all__ = ["PortalResult", "PortalStatus"]

# Connection ids are UUIDs today; accept any short printable token so a change of format at
# SnapTrade does not turn a real success into an error, but never markup, spaces or controls.
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DETAIL_LIMIT = 500


class PortalStatus(StrEnum):
    """How a Connection Portal attempt ended."""

    SUCCESS = "SUCCESS"
    """A connection was made (or repaired): ``connection_id`` names it."""
    ERROR = "ERROR"
    """The attempt failed: ``error_code``, ``status_code`` and ``detail`` say why, when sent."""
    ABANDONED = "ABANDONED"
    """The person left the portal without connecting (``ABANDONED`` or ``CLOSE_MODAL``)."""
    CLOSED = "CLOSED"
    """The person closed the brokerage's OAuth tab (sent to iframe integrations only)."""


class PortalResult(SnapTradeModel):
    """One Connection Portal outcome, from the redirect back to the app or a window message.

    Attributes:
        status: How the attempt ended.
        connection_id: The connection made (SnapTrade's brokerage authorization id) on success,
            when SnapTrade named it (the redirect always does; the old iframe message does not).
        error_code: SnapTrade's error code on failure, if sent.
        status_code: The HTTP status of the failure, if sent.
        detail: SnapTrade's description of the failure, if sent (a window message only).
    """

    status: PortalStatus
    connection_id: str | None = None
    error_code: str | None = None
    status_code: int | None = None
    detail: str | None = Field(default=None, max_length=_DETAIL_LIMIT)

    @property
    def succeeded(self) -> bool:
        """A connection was made (still to be confirmed: see the module's notes)."""
        return self.status is PortalStatus.SUCCESS

    @classmethod
    def from_redirect(cls, url_or_query: str | Mapping[str, Any]) -> PortalResult:
        """Read the portal's return to the redirect URL.

        Args:
            url_or_query: The URL the person's browser came back on (absolute or just
                ``?status=...``), or its query parameters as a web framework hands them over
                (``request.query_params``, ``request.args``: values as strings or lists of strings).

        Raises:
            SnapTradeValidationError: The URL carries no portal result, or a malformed one.
        """
        if isinstance(url_or_query, str):
            query = urlsplit(url_or_query).query if "?" in url_or_query else url_or_query.lstrip("?")
            params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        elif isinstance(url_or_query, Mapping):
            params = {str(k): _single(k, v) for k, v in url_or_query.items()}
        else:
            raise _refused(f"a URL or a mapping of query parameters was expected, got {type(url_or_query).__name__}")
        status = _status(params.get("status"))
        if status is PortalStatus.SUCCESS:
            return cls(status=status, connection_id=_token("connection_id", params.get("connection_id"), required=True))
        if status is PortalStatus.ERROR:
            return cls(
                status=status,
                error_code=_token("error_code", params.get("error_code")),
                status_code=_status_code(params.get("status_code")),
            )
        return cls(status=status)

    @classmethod
    def from_message(cls, data: Any) -> PortalResult:
        """Read a window message the portal posted (``event.data``, or its JSON text).

        Raises:
            SnapTradeValidationError: ``data`` is not one of the portal's messages.
        """
        if isinstance(data, str | bytes):
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            stripped = text.strip()
            if stripped.startswith("{"):
                try:
                    data = json.loads(stripped)
                except ValueError:
                    raise _refused("the message is not valid JSON") from None
            else:
                return cls._from_word(stripped)
        if not isinstance(data, Mapping):
            raise _refused(f"a portal message is an object or a string, got {type(data).__name__}")
        status = _status(data.get("status"))
        if status is PortalStatus.SUCCESS:
            return cls(
                status=status,
                connection_id=_token("authorizationId", data.get("authorizationId"), required=True),
            )
        if status is PortalStatus.ERROR:
            detail = data.get("detail")
            if detail is not None and not isinstance(detail, str):
                raise _refused("detail must be a string")
            return cls(
                status=status,
                error_code=_token("errorCode", _text(data.get("errorCode"))),
                status_code=_status_code(data.get("statusCode")),
                detail=detail[:_DETAIL_LIMIT] if detail else None,
            )
        return cls(status=status)

    @classmethod
    def _from_word(cls, word: str) -> PortalResult:
        """The string messages: ``SUCCESS``, ``ERROR:<status>``, ``CLOSED``, ``CLOSE_MODAL``, ``ABANDONED``."""
        if word.startswith("ERROR:"):
            return cls(status=PortalStatus.ERROR, status_code=_status_code(word[len("ERROR:") :]))
        if word == "CLOSE_MODAL":
            return cls(status=PortalStatus.ABANDONED)
        return cls(status=_status(word))


def _refused(problem: str) -> e.SnapTradeValidationError:
    return e.SnapTradeValidationError(
        f"Not a Connection Portal result: {problem}.",
        hint="Pass the URL the portal sent the person back to (or its query parameters), or the "
        "window message's data, unchanged.",
    )


def _single(name: object, value: Any) -> Any:
    if isinstance(value, list | tuple):
        if not value:
            return None
        value = value[-1]
    if value is not None and not isinstance(value, str):
        raise _refused(f"query parameter {name!s:.40} must be a string")
    return value


def _status(value: Any) -> PortalStatus:
    if not isinstance(value, str):
        raise _refused("no status" if value is None else "the status must be a string")
    try:
        return PortalStatus(value.strip().upper())
    except ValueError:
        shown = value[:40].encode("unicode_escape").decode()
        raise _refused(f"unknown status {shown!r} (SUCCESS, ERROR, ABANDONED or CLOSED)") from None


def _text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _token(name: str, value: Any, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise _refused(f"{name} is missing")
        return None
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise _refused(f"{name} is not an identifier (letters, digits, '.', '_', ':' or '-', at most 128)")
    return value


def _status_code(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _refused("status code must be a number")
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 3:
        value = int(value.strip())
    if not isinstance(value, int) or not 100 <= value <= 599:
        raise _refused("status code must be an HTTP status (100-599)")
    return value
