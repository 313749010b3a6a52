"""One version everywhere, and a changelog in the Keep a Changelog form that names it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import aims_snaptrade

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
_SECTION = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$", re.MULTILINE)
_KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_build_reads_the_version_from_the_one_place_it_is_written() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "aims_snaptrade._version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", aims_snaptrade.__version__)


def test_the_installed_metadata_the_attribute_and_the_command_agree() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "aims_snaptrade", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert shown == f"aims-snaptrade {aims_snaptrade.__version__}" == f"aims-snaptrade {version('aims-snaptrade')}"


def test_the_changelog_is_keep_a_changelog_and_has_a_dated_section_for_this_version() -> None:
    sections = list(_SECTION.finditer(CHANGELOG))
    assert sections[0]["version"] == "Unreleased"
    released = [(m["version"], m["date"]) for m in sections[1:]]
    assert all(date is not None for _, date in released), "every released section is dated"
    assert released[0][0] == aims_snaptrade.__version__, "bump _version.py and the changelog together"
    numbers = [tuple(int(p) for p in v.split(".")) for v, _ in released]
    assert numbers == sorted(numbers, reverse=True), "newest first"
    assert [d for _, d in released] == sorted((d for _, d in released), reverse=True)
    kinds = set(re.findall(r"^### (.+)$", CHANGELOG, flags=re.MULTILINE))
    assert kinds <= _KINDS, f"Keep a Changelog's kinds only, not {kinds - _KINDS}"


def test_the_package_metadata_names_the_supported_pythons() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    classifiers = set(project["classifiers"])
    assert {"Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12"} <= classifiers
    assert "Typing :: Typed" in classifiers
    assert project["requires-python"] == ">=3.11"
    assert project["urls"]
    assert (ROOT / "src" / "aims_snaptrade" / "py.typed").exists()
