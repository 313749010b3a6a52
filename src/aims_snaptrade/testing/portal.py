"""Complete a Connection Portal link over HTTP, as the person would, against any running emulator.

:meth:`SnapTradeEmulator.complete_connection` does this in-process; :func:`complete_portal_link`
does it through the emulator's portal page, so it also works against a standalone emulator
(``aims-snaptrade emulator``) in another process. The page itself is
``GET <link.redirect_uri>`` (lists the scenarios); connecting is
``GET /portal/<sessionId>/connect?scenario=<scenario>[&broker=<SLUG>]`` on the emulator's host.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from aims_snaptrade.testing.seed import ConnectionPortalError, Scenario

__all__ = ["complete_portal_link"]

_CONNECTION_ID = re.compile(r"connection_id: ([0-9a-fA-F-]{36})")
_REFUSAL = re.compile(r"<p>([a-z_]+): ")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a customRedirect is the caller's own page: report it instead of following it


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
    parts = urlsplit(redirect_uri)
    path = parts.path.rstrip("/")
    if "/portal/" not in path or path.endswith("/connect"):
        raise ConnectionPortalError("not_a_portal_link", f"{redirect_uri!r} is not an emulator portal link")
    query = {"scenario": Scenario(scenario).value}
    broker = brokerage or parse_qs(parts.query).get("broker", [""])[0]
    if broker:
        query["broker"] = broker
    url = urlunsplit((parts.scheme, parts.netloc, path + "/connect", urlencode(query), ""))
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as answer:
            page = answer.read().decode()
    except urllib.error.HTTPError as redirected:
        location = redirected.headers.get("Location", "")
        outcome = parse_qs(urlsplit(location).query)
        if redirected.code in (301, 302, 303, 307) and outcome.get("status") == ["SUCCESS"]:
            return outcome["connection_id"][0]
        refused = _REFUSAL.search(redirected.read().decode(errors="replace"))
        reason = outcome.get("error_code", [refused.group(1) if refused else f"http_{redirected.code}"])[0]
        raise ConnectionPortalError(reason, f"the emulator refused the portal link ({reason})") from None
    found = _CONNECTION_ID.search(page)
    if found is None:
        raise ConnectionPortalError("unexpected_page", "the emulator's portal page named no connection")
    return found.group(1)
