"""Every Python code block in README.md and docs/*.md runs, as a reader would run it.

The convention (documented in docs/testing.md, "Examples in these docs"):

* Each page's ```` ```python ```` blocks run in order in one module namespace, like a notebook:
  a later block may use names an earlier block of the same page defined.
* The page runs in a fresh temporary directory as the working directory, with ``SNAPTRADE_*``
  set for a fresh emulator started for that page: ``SNAPTRADE_CLIENT_ID``,
  ``SNAPTRADE_CONSUMER_KEY``, ``SNAPTRADE_ENVIRONMENT=sandbox``, ``SNAPTRADE_BASE_URL`` and a
  generated ``SNAPTRADE_ENCRYPTION_KEYS``; every other ``SNAPTRADE_*`` variable is unset.
  So ``SafeSnapTradeClient.from_env()`` in an example talks to that emulator and keeps its
  secrets in ``secrets.db`` of the reader's own user data directory (``XDG_DATA_HOME`` is a
  fresh directory beside the working directory), never in the working directory.
* Top-level ``await`` / ``async with`` is allowed (the block runs in ``asyncio.run``).
* A block right after the line ``<!-- docs-test: pytest -->`` is a pytest test module: it is
  written to a file and run by pytest in a subprocess, in pytest-asyncio's default strict mode,
  with the library's pytest plugin as installed; it must pass with at least one test.
* A block that is not meant to run is not Python: fence it as ``text``, ``bash``, ``toml``...
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from aims_snaptrade.secrets import Keyring
from aims_snaptrade.testing import SnapTradeEmulator

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON = {"python", "py", "python3"}
PYTEST_MARKER = "<!-- docs-test: pytest -->"
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.DOTALL | re.MULTILINE
)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # line of the opening fence, 1-based
    code: str
    is_pytest_module: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        if match.group("lang").lower() not in PYTHON:
            continue
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
        code = textwrap.dedent(match.group("body"))
        found.append(Block(page, line, code, is_pytest_module=before == PYTEST_MARKER))
    return found


def _pages_with_python() -> list[Path]:
    return [page for page in PAGES if python_blocks(page)]


@pytest.fixture
def reader_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SnapTradeEmulator:
    """The reader's set-up: a running emulator named by ``SNAPTRADE_*``, an empty working directory."""
    for name in [n for n in os.environ if n.startswith("SNAPTRADE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user-data"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with SnapTradeEmulator() as emu:
        monkeypatch.setenv("SNAPTRADE_CLIENT_ID", emu.client_id)
        monkeypatch.setenv("SNAPTRADE_CONSUMER_KEY", emu.consumer_key)
        monkeypatch.setenv("SNAPTRADE_ENVIRONMENT", "sandbox")
        monkeypatch.setenv("SNAPTRADE_BASE_URL", emu.base_url)
        monkeypatch.setenv("SNAPTRADE_ENCRYPTION_KEYS", Keyring.generate("v1").export())
        yield emu


def run_block(block: Block, module: types.ModuleType) -> None:
    # Pad with newlines so a traceback's line number is the markdown file's.
    source = "\n" * block.line + block.code
    code = compile(source, str(block.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
    if code.co_flags & inspect.CO_COROUTINE:
        asyncio.run(eval(code, module.__dict__))
    else:
        exec(code, module.__dict__)


def run_pytest_module(block: Block, directory: Path) -> None:
    directory.mkdir(exist_ok=True)
    path = directory / f"test_{block.page.stem.replace('-', '_')}_{block.line}.py"
    path.write_text(block.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict", path.name],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = f"{block.where} as a pytest module:\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    assert re.search(r"\b[1-9]\d* passed\b", done.stdout), report


@pytest.mark.parametrize("page", _pages_with_python(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_python_block_of_the_page_runs(
    page: Path, reader_env: SnapTradeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType(f"docs_example_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses and pickling look it up
    blocks = python_blocks(page)
    for block in blocks:
        try:
            if block.is_pytest_module:
                run_pytest_module(block, tmp_path / "pytest-modules")
            else:
                run_block(block, module)
        except Exception as exc:
            raise AssertionError(f"the example at {block.where} failed: {type(exc).__name__}: {exc}") from exc
    print(f"{page.relative_to(ROOT)}: {len(blocks)} blocks ran")


def test_the_quick_start_runs_twice_in_a_row(reader_env: SnapTradeEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    quick_start = python_blocks(ROOT / "README.md")[0]
    assert "from_env()" in quick_start.code
    for run in range(2):
        module = types.ModuleType(f"quick_start_{run}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        run_block(quick_start, module)
    assert reader_env.journal.count(operation="register_snap_trade_user", status=200) == 1
    # The secret lives in the user's data directory (owner-only), nothing in the working directory.
    data_dir = Path(os.environ["XDG_DATA_HOME"]) / "aims-snaptrade"
    assert (data_dir / "secrets.db").exists()
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert list(Path.cwd().iterdir()) == []


def test_the_block_finder_sees_indented_and_marked_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n\n```python\na = 1\n```\n\n- item\n\n  ```python\n  b = a\n  ```\n\n"
        f"{PYTEST_MARKER}\n```python\ndef test_x():\n    pass\n```\n\n```bash\nexit 1\n```\n"
    )
    blocks = python_blocks(page)
    assert [(b.line, b.code, b.is_pytest_module) for b in blocks] == [
        (3, "a = 1\n", False),
        (9, "b = a\n", False),
        (14, "def test_x():\n    pass\n", True),
    ]
