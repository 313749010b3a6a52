"""The confirmation key never shows: settings, signer, tokens, errors, logs."""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aims_snaptrade import Settings
from aims_snaptrade import errors as e
from aims_snaptrade.redaction import redact
from aims_snaptrade.trading import ConfirmationSigner

KEYS = st.text(alphabet=string.ascii_letters + string.digits + "+/_-", min_size=16, max_size=48)


@settings(max_examples=50, deadline=None)
@given(key=KEYS)
def test_the_confirmation_key_never_shows(key: str) -> None:
    base = {"client_id": "c", "consumer_key": "k" * 20, "environment": "sandbox"}
    assume(key not in repr(Settings.build(base)))  # a key that is a word of the repr proves nothing
    configured = Settings.build({**base, "confirmation_key": key})
    signer = ConfirmationSigner.from_text(configured.confirmation_key.get_secret_value())  # type: ignore[union-attr]
    token = signer.sign({"a": 1})
    for text in (repr(configured), str(configured), repr(signer), token, str(e.SnapTradeError(f"bad {key}"))):
        assert key not in text
    assert key not in redact(f"logged {key} here")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (key,), None)
    assert key not in redact(record.getMessage())


def test_a_short_confirmation_key_is_a_configuration_error() -> None:
    with pytest.raises(e.SnapTradeConfigurationError, match="SNAPTRADE_CONFIRMATION_KEY"):
        Settings.from_env(
            {
                "SNAPTRADE_CLIENT_ID": "c",
                "SNAPTRADE_CONSUMER_KEY": "k" * 20,
                "SNAPTRADE_ENVIRONMENT": "sandbox",
                "SNAPTRADE_CONFIRMATION_KEY": "short",
            }
        )
