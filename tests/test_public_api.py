"""The public surface: every name resolves, is documented, and importing the package stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import aims_snaptrade


def test_every_public_name_resolves_and_is_documented():
    for name in aims_snaptrade.__all__:
        value = getattr(aims_snaptrade, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
            for member_name, member in vars(value).items():
                if not member_name.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{name}.{member_name} has no docstring"


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="NotAThing"):
        aims_snaptrade.NotAThing  # noqa: B018


def test_import_does_not_load_the_sdk_or_aiohttp():
    code = "import sys, aims_snaptrade; print(sorted(m for m in ('snaptrade_client', 'aiohttp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
