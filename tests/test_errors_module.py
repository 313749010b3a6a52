"""Every error class of ``aims_snaptrade.errors`` is importable from the package and documented,
and the HTTP status decides the class where SnapTrade's body code contradicts it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import aims_snaptrade
from aims_snaptrade import errors as e
from aims_snaptrade.error_mapping import _BY_CODE, error_from_response
from aims_snaptrade.operations import OPERATIONS

ERRORS_DOC = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
ERROR_CLASSES = [
    value
    for name, value in vars(e).items()
    if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == e.__name__
]


def test_the_module_defines_error_classes() -> None:
    assert e.SnapTradeSyncInProgressError in ERROR_CLASSES
    assert len(ERROR_CLASSES) >= 40


def test_every_error_class_is_importable_from_the_package() -> None:
    missing = [cls.__name__ for cls in ERROR_CLASSES if getattr(aims_snaptrade, cls.__name__, None) is not cls]
    assert missing == []
    not_listed = [cls.__name__ for cls in ERROR_CLASSES if cls.__name__ not in aims_snaptrade.__all__]
    assert not_listed == []


def test_every_error_class_is_in_the_errors_page() -> None:
    documented = set(re.findall(r"`(\w+)`", ERRORS_DOC))
    assert [cls.__name__ for cls in ERROR_CLASSES if cls.__name__ not in documented] == []


def test_the_sync_in_progress_hint_says_what_happens() -> None:
    hint = e.SnapTradeSyncInProgressError("held").hint
    assert "marks" in hint and "before it releases" in hint
    assert "covers it" not in hint


@given(code=st.one_of(st.none(), st.sampled_from(sorted(_BY_CODE)), st.text(min_size=1, max_size=8)))
def test_410_is_retired_whatever_the_body_code(code: str | None) -> None:
    body = {"detail": "gone", "code": code} if code is not None else {"detail": "gone"}
    error = error_from_response(OPERATIONS["get_all_account_positions"], 410, {}, body)
    assert type(error) is e.SnapTradeEndpointRetiredError
    assert error.retryable is False
    assert error.status == 410


@given(code=st.sampled_from(sorted(_BY_CODE)))
def test_429_is_a_rate_limit_whatever_the_body_code(code: str) -> None:
    error = error_from_response(OPERATIONS["list_all_user_accounts"], 429, {"Retry-After": "3"}, {"code": code})
    assert isinstance(error, e.SnapTradeRateLimitError)
    assert error.retry_after == 3
