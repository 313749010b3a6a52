"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aims_snaptrade.redaction import isolated_registry


@pytest.fixture(autouse=True)
def _redaction_registry_per_test() -> Iterator[None]:
    # What a test registers for redaction is forgotten after it: no test sees another's secrets,
    # so every test passes alone and in any order.
    with isolated_registry(empty=False):
        yield
