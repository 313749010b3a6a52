"""What the redaction docs promise, as properties (kills the bug classes mutation testing found).

- a registered value (6 characters or more) is masked wherever it sits in a longer run of the
  characters secrets are made of: at the start, in the middle, at the very end;
- a value is masked whole even when a shorter registered value is its prefix;
- the signature pool keeps the 4,096 latest signatures, and forgetting one never unmasks another;
- log records of the redacted loggers change only where a secret was (formatting, arguments,
  tracebacks kept), and other loggers' records are left as the application made them.
"""

from __future__ import annotations

import logging
import string
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aims_snaptrade import _masking, redaction
from aims_snaptrade._masking import redact_all
from aims_snaptrade.errors import SnapTradeValidationError
from aims_snaptrade.redaction import (
    MASK,
    encoded_forms,
    isolated_registry,
    redact,
    register_secret,
    register_signature,
    scrub_exception,
)

# The characters of base64 signatures, hex and UUID secrets: a secret among them is part of one
# long run, which the matcher walks position by position.
RUN = string.ascii_letters + string.digits + "+/=-_."
runs = st.text(alphabet=RUN, max_size=24)
secrets = st.text(alphabet=RUN, min_size=6, max_size=40)


@given(prefix=runs, secret=secrets, suffix=runs)
@settings(max_examples=150)
def test_a_registered_secret_is_masked_wherever_it_sits_in_a_run(prefix: str, secret: str, suffix: str) -> None:
    with isolated_registry():
        register_secret(secret)
        assert secret not in redact(prefix + secret + suffix)
        assert secret not in redact(f"{prefix} {secret} {suffix}")
        assert MASK in redact(prefix + secret + suffix)


ALNUM = string.ascii_letters + string.digits


@given(
    secret=st.text(alphabet=ALNUM, min_size=6, max_size=16),
    text=st.lists(st.one_of(st.text(alphabet=ALNUM + " ", max_size=12), st.just("<s>")), max_size=8).map("".join),
)
@settings(max_examples=150)
def test_masking_replaces_each_occurrence_and_nothing_else(secret: str, text: str) -> None:
    """One letters-and-digits secret (its only form is itself): masking is exactly str.replace."""
    text = text.replace("<s>", secret)
    with isolated_registry():
        register_secret(secret)
        assert redact(text) == text.replace(secret, MASK)


@given(secret=st.text(alphabet="ab", min_size=6, max_size=9), text=st.text(alphabet="ab ", max_size=40))
@settings(max_examples=200)
@example(secret="aaaaaab", text="a")  # the secret starts one character after a beginning that fails
def test_masking_finds_a_secret_right_after_a_near_miss(secret: str, text: str) -> None:
    """Two letters: beginnings of the secret that do not complete it overlap real occurrences."""
    text = text + secret[:-1] + secret + text[::-1]
    with isolated_registry():
        register_secret(secret)
        assert redact(text) == text.replace(secret, MASK)


@given(secret=st.text(alphabet=RUN, min_size=6, max_size=6), head=st.text(alphabet=RUN, min_size=1, max_size=30))
@settings(max_examples=100)
def test_a_six_character_secret_at_the_end_of_a_longer_run_is_masked(secret: str, head: str) -> None:
    with isolated_registry():
        register_secret(secret)
        assert secret not in redact(head + secret)


@given(secrets=st.lists(secrets, min_size=1, max_size=4, unique=True), glue=st.lists(runs, min_size=5, max_size=5))
@settings(max_examples=100)
def test_several_secrets_in_one_run_are_all_masked(secrets: list[str], glue: list[str]) -> None:
    with isolated_registry():
        for secret in secrets:
            register_secret(secret)
        text = glue[0] + "".join(s + g for s, g in zip(secrets, glue[1:], strict=False))
        masked = redact(text)
        for secret in secrets:
            assert secret not in masked


@given(short=secrets, tail=st.text(alphabet=RUN, min_size=1, max_size=12), after=runs)
@settings(max_examples=100)
def test_a_secret_is_masked_whole_when_a_shorter_secret_is_its_prefix(short: str, tail: str, after: str) -> None:
    """No part of the longer value may survive next to the mask (its tail is as secret as the rest)."""
    with isolated_registry():
        register_secret(short)
        register_secret(short + tail)
        assert redact(short + tail) == MASK
        masked = redact(short + tail + after)
        assert masked.startswith(MASK)
        assert tail not in masked[len(MASK) :] or tail in after


def test_text_without_secrets_is_returned_unchanged() -> None:
    with isolated_registry():
        register_secret("Zq9Zq9Zq9")
        for text in ("", "plain words only", "abcdefghijklmnop", "a-run-of-characters-that-is-long"):
            assert redact(text) == text


def test_six_characters_is_long_enough_to_register_five_is_not() -> None:
    with isolated_registry():
        register_secret("k3Y9q")
        register_secret("k3Y9qZ")
        assert redact("xx k3Y9q yy") == "xx k3Y9q yy"
        assert redact("xx k3Y9qZ yy") == f"xx {MASK} yy"


@given(words=st.lists(st.sampled_from(["key", "signature", "authorization", "secret", "note", "id"]), max_size=8))
@settings(max_examples=60)
def test_positional_credentials_are_masked_whatever_else_the_line_says(words: list[str]) -> None:
    value = "n3ver-registered-v4lue"
    line = " ".join(words) + f" /accounts?userSecret={value}&userId=u1 " + " ".join(reversed(words))
    assert value not in redact(line)
    assert "userId=u1" in redact(line)


def test_redact_all_masks_strings_and_keeps_other_values() -> None:
    with isolated_registry():
        register_secret("argument-secret-1")
        marker = object()
        assert redact_all(["x argument-secret-1", 7, marker, b"raw", None]) == (f"x {MASK}", 7, marker, b"raw", None)


def test_the_signature_pool_keeps_the_latest_4096_and_forgets_the_older() -> None:
    with isolated_registry():
        first = "c2lnbmF0dXJlLTAwMDA="
        register_signature(first)
        assert redact(first) == MASK
        for i in range(4_096):
            register_signature(f"c2lnbmF0dXJl{i:08d}")
        assert redact(first) == first  # the oldest signature was forgotten, as documented
        assert redact("c2lnbmF0dXJl00004095") == MASK
        register_secret("a-user-secret-kept")  # secrets are kept whatever the signatures do
        for i in range(4_096, 4_200):
            register_signature(f"c2lnbmF0dXJl{i:08d}")
        assert redact("a-user-secret-kept") == MASK


def test_forgetting_a_signature_never_unmasks_another_with_the_same_beginning() -> None:
    """Evicted forms leave the lookup tables; the kept forms that share their first six characters stay."""
    with isolated_registry():
        for i in range(4_096 + 50):
            register_signature(f"SAMEPREFIX{i:06d}")
        kept = [f"SAMEPREFIX{i:06d}" for i in range(50, 4_096 + 50)]
        assert all(redact(value) == MASK for value in kept[::97] + kept[-3:])
        assert redact("SAMEPREFIX000049") == "SAMEPREFIX000049"
        # The tables hold the kept values' forms only: memory stays bounded however many requests run.
        held = {
            form
            for value in _masking._registry.pools["signature"]
            for form in _masking._registry.pools["signature"][value]
        }
        assert set(_masking._registry.forms) == held
        assert sum(sum(lengths.values()) for lengths in _masking._registry.prefixes.values()) == len(held)


def test_forgetting_signatures_empties_their_lookup_entries_and_keeps_the_neighbours() -> None:
    """Distinct beginnings leave the tables entirely; one beginning shared at two lengths keeps the other."""
    with isolated_registry():
        register_signature("SharedStartShort")
        register_secret("SharedStartLonger-user-secret")  # same first six characters, kept for good
        for i in range(4_096 + 20):
            register_signature(f"{i:06d}-Sig")
        assert redact("SharedStartShort") == "SharedStartShort"  # forgotten
        assert redact("x SharedStartLonger-user-secret y") == f"x {MASK} y"
        pools = _masking._registry.pools
        held = {form for pool in pools.values() for forms in pool.values() for form in forms}
        assert set(_masking._registry.prefixes) == {form[:6] for form in held}
        assert all(_masking._registry.prefixes.values())


@pytest.mark.parametrize("bad", [b"bytes-secret", 123456, ["a-list-secret"]])
def test_a_secret_that_is_not_text_is_refused_with_its_type_and_fix(bad: object) -> None:
    with pytest.raises(SnapTradeValidationError) as raised:
        register_secret(bad)  # type: ignore[arg-type]
    assert type(bad).__name__ in str(raised.value)
    assert "must be text (str)" in str(raised.value)
    assert raised.value.hint is not None and raised.value.hint.startswith("Decode bytes before passing them")


def test_an_unknown_kind_is_refused_naming_the_kinds() -> None:
    with pytest.raises(SnapTradeValidationError) as raised:
        register_secret("a-secret-value", kind="password")  # type: ignore[arg-type]
    assert "'password'" in str(raised.value)
    assert "['key', 'secret', 'signature']" in str(raised.value)


@given(st.text(alphabet=RUN, min_size=3, max_size=10), st.sampled_from(["\ud800", "\udfff", "\udc80"]))
@settings(max_examples=40)
def test_a_secret_with_a_lone_surrogate_is_masked_in_its_json_and_bytes_forms(body: str, surrogate: str) -> None:
    """Percent-encoding cannot hold a lone surrogate; the encodings that can are still registered."""
    secret = body + surrogate + body
    forms = encoded_forms(secret)
    import json

    assert json.dumps(secret)[1:-1] in forms
    assert repr(secret.encode("utf-8", "surrogatepass"))[2:-1] in forms
    with isolated_registry():
        register_secret(secret)
        assert secret not in redact(f"x {secret} y")
        assert json.dumps(secret)[1:-1] not in redact(f"body {json.dumps(secret)}")


def test_scrub_exception_describes_http_errors_by_status_and_reason_only() -> None:
    class HttpError(Exception):
        def __init__(self, text: str) -> None:
            super().__init__(text)
            self.status, self.reason, self.body = 401, "Unauthorized", b"{}"

    class HalfHttpError(Exception):
        status, reason = 500, "Internal"  # no body: an ordinary exception with a status

    described = scrub_exception(HttpError("headers: echo-of-the-request"))
    assert described.endswith("HttpError: (401) Unauthorized (headers and body omitted)")
    assert "echo-of-the-request" not in described
    for partial in (HalfHttpError("plain text kept"),):
        assert scrub_exception(partial).endswith("HalfHttpError: plain text kept")
    body_only = ValueError("kept too")
    body_only.body = b"x"  # type: ignore[attr-defined]
    assert scrub_exception(body_only) == "builtins.ValueError: kept too"


def test_scrub_exception_survives_a_broken_str_and_masks_secrets() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert scrub_exception(Broken()).endswith("Broken: <unprintable>")
    with isolated_registry():
        register_secret("exception-secret-9")
        assert scrub_exception(KeyError("exception-secret-9")) == f"builtins.KeyError: '{MASK}'"


# Log records ------------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def collect() -> Iterator[tuple[_Collect, logging.Logger, logging.Logger]]:
    redaction.install_log_redaction()
    handler = _Collect()
    ours, theirs = logging.getLogger("aims_snaptrade.test_props"), logging.getLogger("aims_snaptrade_app.test_props")
    for logger in (ours, theirs):
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    yield handler, ours, theirs
    for logger in (ours, theirs):
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def _fail(secret: str, end: str = "") -> BaseException:
    try:
        raise RuntimeError(f"failed with {secret}{end}")
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize("end", ["", " ", "\tX", " X"])
def test_a_scrubbed_record_differs_only_where_a_secret_was(
    collect: tuple[_Collect, logging.Logger, logging.Logger], end: str
) -> None:
    handler, ours, _ = collect
    with isolated_registry():
        secret = "log-record-secret-5"
        register_secret(secret)
        exc = _fail(secret, end)
        ours.error("user %s got %d (%s)", "alice", 3, secret, exc_info=exc, stack_info=True)
        [record] = handler.records
        assert record.getMessage() == f"user alice got 3 ({MASK})"
        assert record.args is None or record.args == ()
        expected_exc = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")
        assert record.exc_text == expected_exc.replace(secret, MASK)
        assert record.stack_info is not None and record.stack_info.startswith("Stack (most recent call last):")
        assert secret not in handler.lines[0]


def test_an_exception_logged_without_a_traceback_is_scrubbed(
    collect: tuple[_Collect, logging.Logger, logging.Logger],
) -> None:
    handler, ours, _ = collect
    with isolated_registry():
        register_secret("never-raised-secret-3")
        ours.warning("gave up", exc_info=ValueError("with never-raised-secret-3"))  # built, never raised
        assert "never-raised-secret-3" not in handler.lines[0]
        assert handler.records[0].exc_text == f"ValueError: with {MASK}"


def test_bytes_arguments_are_decoded_then_masked(collect: tuple[_Collect, logging.Logger, logging.Logger]) -> None:
    handler, ours, _ = collect
    with isolated_registry():
        register_secret("bytes-arg-secret-7")
        ours.info("body %s", b"\xff{bytes-arg-secret-7}\xfe")  # not valid UTF-8 either
        assert handler.records[0].getMessage() == f"body \ufffd{{{MASK}}}\ufffd"


def test_a_message_that_cannot_be_formatted_is_still_masked(
    collect: tuple[_Collect, logging.Logger, logging.Logger],
) -> None:
    handler, ours, _ = collect
    with isolated_registry():
        register_secret("unformattable-secret-2")
        ours.info("needs two %s %s unformattable-secret-2", "one")
        assert handler.records[0].getMessage() == f"needs two %s %s {MASK}"


def test_other_loggers_records_are_left_as_the_application_made_them(
    collect: tuple[_Collect, logging.Logger, logging.Logger],
) -> None:
    handler, _, theirs = collect
    with isolated_registry():
        register_secret("app-owned-value-11")
        theirs.info("app %s", "app-owned-value-11")  # "aims_snaptrade_app" is not a child of "aims_snaptrade"
        [record] = handler.records
        assert record.args == ("app-owned-value-11",)
        assert record.msg == "app %s"


def test_installing_twice_wraps_the_applications_factory_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    installed = logging.getLogRecordFactory()

    def app_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = logging.LogRecord(*args, **kwargs)
        seen.append(record.name)
        return record

    monkeypatch.setattr(redaction, "_installed", False)
    monkeypatch.setattr(redaction, "_previous_factory", redaction._previous_factory)
    logging.setLogRecordFactory(app_factory)
    try:
        redaction.install_log_redaction()
        redaction.install_log_redaction()
        with isolated_registry():
            register_secret("factory-chain-secret")
            record = logging.getLogger("aims_snaptrade.chain").makeRecord(
                "aims_snaptrade.chain", logging.INFO, "f", 1, "v=%s", ("factory-chain-secret",), None
            )
        assert record.getMessage() == f"v={MASK}"
        assert seen == ["aims_snaptrade.chain"]  # the application's factory ran, once
        # Factories may be called with keywords (logging documents func= and sinfo=): they are passed on.
        keyed = logging.getLogRecordFactory()(
            "aims_snaptrade.chain", logging.INFO, "f", 1, "m", (), None, func="caller", sinfo="Stack: here"
        )
        assert (keyed.funcName, keyed.stack_info) == ("caller", "Stack: here")
    finally:
        logging.setLogRecordFactory(installed)
