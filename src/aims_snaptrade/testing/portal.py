"""Complete a Connection Portal link over HTTP, as the person would, against any running emulator.

:meth:`SnapTradeEmulator.complete_connection` does this in-process; :func:`complete_portal_link`
does it through the emulator's portal page, so it also works against a standalone emulator
(``aims-snaptrade emulator``) in another process. The page itself is
``GET <link.redirect_uri>`` (lists the scenarios); connecting is
``GET /portal/<sessionId>/connect?scenario=<scenario>[&broker=<SLUG>]`` on the emulator's host,
and leaving without connecting ``GET /portal/<sessionId>/abandon``.

The emulator reports the outcome as SnapTrade's portal does (a window message, and the return to
``customRedirect``, at once with ``immediateRedirect``), and :func:`portal_outcome` reads it back
with :class:`~aims_snaptrade.portal.PortalResult`, the helper a service uses on its own redirect
page.
"""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.portal import PortalResult, PortalStatus
from aims_snaptrade.testing.seed import ConnectionPortalError, Scenario

__all__ = ["complete_portal_link", "portal_outcome"]

_MESSAGE = re.compile(r'<script id="snaptrade-portal-message" type="application/json">(.*?)</script>', re.S)
_DONE = re.compile(r'<a id="snaptrade-done" href="([^"]*)"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a customRedirect is the caller's own page: report it instead of following it


def portal_outcome(
    redirect_uri: str,
    *,
    scenario: Scenario | str = Scenario.SELF_DIRECTED,
    brokerage: str | None = None,
    action: Literal["connect", "abandon"] = "connect",
    timeout: float = 10.0,
) -> tuple[PortalResult, str | None]:
    """Go through the emulator's portal as a person would; return what the app is told.

    Returns:
        The outcome, read with :class:`~aims_snaptrade.portal.PortalResult` from the return to
        ``customRedirect`` when the portal redirects at once (``immediateRedirect``), else from
        the page's window message; and the URL the person comes back on (the ``Location`` or the
        finish screen's Done link), ``None`` without a ``customRedirect``.

    Raises:
        ConnectionPortalError: the link is not an emulator portal link, or the portal reported
            nothing readable.
    """
    parts = urlsplit(redirect_uri)
    path = parts.path.rstrip("/")
    if "/portal/" not in path or path.endswith(("/connect", "/abandon")):
        raise ConnectionPortalError("not_a_portal_link", f"{redirect_uri!r} is not an emulator portal link")
    query = {"scenario": Scenario(scenario).value}
    broker = brokerage or parse_qs(parts.query).get("broker", [""])[0]
    if broker:
        query["broker"] = broker
    url = urlunsplit((parts.scheme, parts.netloc, f"{path}/{action}", urlencode(query), ""))
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as answer:
            page = answer.read().decode()
    except urllib.error.HTTPError as answered:
        location = answered.headers.get("Location")
        if answered.code in (301, 302, 303, 307) and location:
            return _read(PortalResult.from_redirect, location), location
        page = answered.read().decode(errors="replace")
    message = _MESSAGE.search(page)
    if message is None:
        raise ConnectionPortalError("unexpected_page", "the emulator's portal page reported no outcome")
    try:
        data = json.loads(message.group(1))  # what the page posts: the message's own value
    except ValueError:
        raise ConnectionPortalError("unexpected_page", "the portal's window message is not JSON") from None
    done = _DONE.search(page)
    return _read(PortalResult.from_message, data), html.unescape(done.group(1)) if done else None


def complete_portal_link(
    redirect_uri: str,
    *,
    scenario: Scenario | str = Scenario.SELF_DIRECTED,
    brokerage: str | None = None,
    timeout: float = 10.0,
) -> str:
    """Connect a brokerage through the emulator's portal page; return the new connection id.

    Args:
        redirect_uri: ``link.redirect_uri`` from ``connection_portal_url`` (an emulator's link).
        scenario: The sandbox scenario seeding the accounts (``"self_directed"``, ``"cash_only"``...).
        brokerage: Brokerage slug; defaults to the link's ``broker``, else ``SANDBOX``.
        timeout: Seconds to wait for the emulator.

    Raises:
        ConnectionPortalError: the link is not an emulator portal link, or the emulator refused it
            (failing scenario, unknown, used or expired link).
    """
    result, _ = portal_outcome(redirect_uri, scenario=scenario, brokerage=brokerage, timeout=timeout)
    if result.status is PortalStatus.SUCCESS and result.connection_id:
        return result.connection_id
    reason = result.error_code or result.status.value.lower()
    raise ConnectionPortalError(reason, f"the emulator refused the portal link ({reason})")


def _read(parse: Callable[[Any], PortalResult], reported: Any) -> PortalResult:
    try:
        return parse(reported)
    except SnapTradeValidationError as exc:
        raise ConnectionPortalError("unexpected_page", exc.message) from None
