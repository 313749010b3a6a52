"""No consumer key or signature in any log record, exception or response body of the receiver.

Generated keys (any printable text) and payloads; every way a delivery can end: processed,
duplicate, forged, stale, malformed, and a handler whose exception text quotes the key.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import string
import urllib.parse
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhook_helpers import payload, signed

from aims_snaptrade.webhooks import WebhookEvent, WebhookReceiver

keys = st.text(string.ascii_letters + string.digits + "-_.~+/=!@#$%^&*", min_size=16, max_size=64)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def forms(secret: str) -> list[str]:
    return [secret, base64.b64encode(secret.encode()).decode(), urllib.parse.quote(secret, safe="")]


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, user=st.text(min_size=1, max_size=20), use_async=st.booleans())
def test_nothing_the_receiver_says_holds_the_key_or_a_signature(key: str, user: str, use_async: bool) -> None:
    def handler(event: WebhookEvent) -> None:
        if event.user_id == "explode":
            raise RuntimeError(f"cannot use key {key} with signature {event.webhook_id}")

    receiver = WebhookReceiver(handler, consumer_key=key, tolerance=60)
    deliveries = [signed(payload(userId=user), key) for _ in range(2)]
    deliveries.append(deliveries[0])  # duplicate
    deliveries.append(signed(payload(userId="explode"), key))  # handler failure quoting the key
    deliveries.append(signed(payload(when=0), key))  # stale
    forged_headers, forged_body = signed(payload(), key + "-other")
    deliveries.append(({"Signature": deliveries[0][0]["Signature"]}, forged_body))  # signature of another body
    deliveries.append((forged_headers, forged_body))  # another key
    deliveries.append((deliveries[0][0], b"{not json"))
    collect = Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        answers: list[Any] = []
        for headers, body in deliveries:
            if use_async:
                answers.append(asyncio.run(receiver.ahandle(headers, body)))
            else:
                answers.append(receiver.handle(headers, body))
    finally:
        root.removeHandler(collect)
        root.setLevel(previous)
    assert [a.status for a in answers] == [200, 200, 200, 500, 401, 401, 401, 400]
    said = [a.body.decode() for a in answers] + [repr(a) for a in answers] + collect.lines
    assert any("cannot use key" in line for line in collect.lines)  # the failure was logged, redacted
    secrets = [key] + [h["Signature"] for h, _ in deliveries]
    for text in said:
        for secret in secrets:
            for form in forms(secret):
                assert form not in text
