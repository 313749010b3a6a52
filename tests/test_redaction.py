"""Redaction of credentials in text and in every log record of the redacted loggers."""

from __future__ import annotations

import base64
import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from aims_snaptrade import _masking, redaction
from aims_snaptrade.redaction import install_log_redaction, redact, register_secret, scrub_exception


def test_positional_credentials_are_masked_without_registration():
    url = "http://h/api/v1/accounts?userId=u1&userSecret=never-seen-before-42&clientId=C&timestamp=1"
    assert "never-seen-before-42" not in redact(url)
    assert "userId=u1" in redact(url)
    body = '{"userSecret": "s3cr3t-value-77", "userId": "u1"}'
    assert "s3cr3t-value-77" not in redact(body)
    headers = "HTTPHeaderDict({'Signature': 'c2lnbmF0dXJlLXZhbHVl', 'Accept': 'application/json'})"
    assert "c2lnbmF0dXJlLXZhbHVl" not in redact(headers)
    assert "application/json" in redact(headers)


def test_registered_secrets_are_masked_anywhere():
    register_secret("registered-secret-xyz")
    assert redact("oops registered-secret-xyz leaked") == "oops *** leaked"
    register_secret("ab")  # too short to be a credential: ignored rather than mangling logs
    assert redact("abc") == "abc"


def test_log_records_of_child_loggers_are_scrubbed(caplog):
    install_log_redaction()
    register_secret("child-logger-secret-1")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("urllib3.connectionpool").warning("GET %s", "/x?userSecret=child-logger-secret-1")
        try:
            raise ValueError("boom child-logger-secret-1")
        except ValueError:
            logging.getLogger("snaptrade_client.rest").exception("failed")
        logging.getLogger("someone.else").info("not ours child-logger-secret-1")
    ours = [r for r in caplog.records if not r.name.startswith("someone")]
    assert len(ours) == 2
    for record in ours:
        assert "child-logger-secret-1" not in record.getMessage()
        assert "child-logger-secret-1" not in (record.exc_text or "")
    assert "child-logger-secret-1" not in caplog.text.split("not ours")[0]


def test_scrub_exception_names_the_type_and_masks():
    text = scrub_exception(ConnectionError("to http://h/?userSecret=zzz-secret-zzz"))
    assert text.startswith("builtins.ConnectionError:")
    assert "zzz-secret-zzz" not in text


def test_every_registered_secret_is_masked_even_inside_other_text():
    import uuid

    many = [f"user-secret-{uuid.uuid4()}" for _ in range(2000)]
    for secret in many:
        register_secret(secret)
    text = f"a={many[0]}&b=x{many[1999]}y [{many[777]}]"
    cleaned = redact(text)
    assert not any(secret in cleaned for secret in many)
    assert cleaned.count("***") == 3


CHARWISE_ALPHABET = "".join(sorted(_masking._CHARWISE))


@settings(max_examples=500, deadline=None)
@given(
    value=st.one_of(
        st.text(alphabet=CHARWISE_ALPHABET, max_size=80),
        st.binary(min_size=1, max_size=64).map(lambda raw: base64.b64encode(raw).decode()),  # signatures
        st.uuids().map(str),  # user secrets
    )
)
def test_the_translation_tables_give_exactly_the_encoders_forms(value: str) -> None:
    """The fast path of encoded_forms (one translation per distinct table) equals its definition."""
    assert _masking._CHARWISE.issuperset(value)
    assert redaction.encoded_forms(value) == _masking._encoded(value)


def test_a_value_with_other_characters_takes_the_encoders_themselves() -> None:
    value = 'it\'s a "secret" & <more>'
    assert not _masking._CHARWISE.issuperset(value)
    assert redaction.encoded_forms(value) == _masking._encoded(value)
    assert "it%27s%20a%20%22secret%22%20%26%20%3Cmore%3E" in redaction.encoded_forms(value)
