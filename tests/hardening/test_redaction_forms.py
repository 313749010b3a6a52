"""Redaction of every form of a registered value, and registration that cannot be poisoned."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid

import pytest
from hardening_helpers import COUNTS, PROFILE, forms_of, secrets_
from hypothesis import given
from hypothesis import strategies as st

from aims_snaptrade import SnapTradeValidationError
from aims_snaptrade.redaction import (
    MASK,
    REDACTED_LOGGERS,
    install_log_redaction,
    redact,
    register_secret,
    register_signature,
)


@PROFILE
@given(secret=secrets_(), before=st.text(max_size=40), after=st.text(max_size=40))
def test_every_encoded_form_of_a_registered_secret_is_masked(secret, before, after):
    register_secret(secret)
    COUNTS["redaction forms (property)"]["examples"] += 1
    for form in forms_of(secret):
        cleaned = redact(f"{before}{form}{after}")
        assert form not in cleaned, (form, cleaned)
    COUNTS["redaction forms (property)"]["forms checked"] += len(forms_of(secret))


@PROFILE
@given(key=secrets_(), payload=st.text(max_size=200))
def test_a_registered_signature_is_masked_in_every_form(key, payload):
    digest = hmac.new(key.encode(), payload.encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    register_signature(signature)
    COUNTS["signature forms (property)"]["examples"] += 1
    for form in forms_of(signature):
        assert form not in redact(f"x {form} y")


@pytest.mark.parametrize(
    "text",
    [
        "Signature: c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA=",
        "GET /x HTTP/1.1\\r\\nSignature: c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA=\\r\\nAccept: */*",
        "b'...\\nSignature: c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA=\\n...'",
        '{\\"Signature\\": \\"c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA=\\"}',
        "Signature=c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA%3D&Accept=x",
        "%22Signature%22%3A%20%22c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA%3D%22",
        "Authorization: c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA=",
        "userSecret=c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA",
        "&quot;userSecret&quot;: &quot;c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA&quot;",
    ],
)
def test_credentials_are_masked_by_position_escaped_or_not(text):
    # Never registered: only the positional patterns can catch these.
    assert "c2lnbmF0dXJlLXZhbHVlLTEyMzQ1Njc4OTA" not in redact(text)


def test_ordinary_words_after_credential_names_are_left_alone():
    message = "Unable to verify signature sent; set SNAPTRADE_CONSUMER_KEY is missing; secret_store_url=sqlite:///x"
    assert redact(message) == message


@pytest.mark.parametrize("bad", [b"bytes-secret-1", 12345678, ["list-secret"], object()])
def test_registration_rejects_non_text_before_touching_state(bad):
    register_secret("first-secret-abcdef")
    before = redact("first-secret-abcdef next-secret-ghijkl")
    with pytest.raises(SnapTradeValidationError, match="must be text"):
        register_secret(bad)
    assert redact("first-secret-abcdef next-secret-ghijkl") == before
    register_secret("next-secret-ghijkl")  # the registry still works after the bad call
    assert redact("first-secret-abcdef next-secret-ghijkl") == f"{MASK} {MASK}"


def test_the_least_recently_used_user_secrets_are_forgotten_never_the_keys(monkeypatch):
    from aims_snaptrade import _masking

    monkeypatch.setitem(_masking._LIMITS, "secret", 3)
    register_secret("consumer-key-pinned", kind="key")
    users = [f"user-secret-{i}-{uuid.uuid4().hex[:6]}" for i in range(4)]
    for secret in users:
        register_secret(secret)
    assert users[0] in redact(users[0])  # evicted: the oldest of four with room for three
    assert all(redact(s) == MASK for s in users[1:])
    assert redact("consumer-key-pinned") == MASK


@pytest.mark.parametrize("logger_name", [*REDACTED_LOGGERS, "aiohttp.client", "urllib3.connectionpool"])
def test_every_transport_logger_is_scrubbed_message_and_traceback(logger_name, caplog):
    install_log_redaction()
    secret = f"logged-secret-{uuid.uuid4().hex}"
    register_secret(secret)
    logger = logging.getLogger(logger_name)
    with caplog.at_level(logging.DEBUG, logger=logger_name):
        try:
            raise ValueError(f"boom {secret}")
        except ValueError:
            logger.exception("failed with %s", secret, stack_info=True)
    (record,) = [r for r in caplog.records if r.name == logger_name]
    assert secret not in record.getMessage()
    assert secret not in (record.exc_text or "")
    assert secret not in caplog.text


def test_stack_info_is_scrubbed(caplog):
    install_log_redaction()
    secret = f"stack-secret-{uuid.uuid4().hex}"
    register_secret(secret)

    def frame_named_after_the_secret() -> None:
        # The stack text quotes this line, so the secret's value is in it before scrubbing.
        logging.getLogger("aims_snaptrade.test").warning("here", stack_info=True)  # stack-secret-marker

    with caplog.at_level(logging.DEBUG, logger="aims_snaptrade.test"):
        register_secret("stack-secret-marker")
        frame_named_after_the_secret()
    (record,) = [r for r in caplog.records if r.name == "aims_snaptrade.test"]
    assert "frame_named_after_the_secret" in record.stack_info
    assert "stack-secret-marker" not in record.stack_info
