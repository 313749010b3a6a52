"""``.ci/run`` runs the README's test command exactly, then every gate the docs claim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command_then_the_static_gates() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, flags=re.DOTALL)
    assert command is not None
    readme_command = command.group(1).strip()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert readme_command in lines  # exactly as the README states it
    start = next(i for i, line in enumerate(lines) if line.endswith("python -m pytest"))
    after = "\n".join(lines[start + 1 :])
    for gate in ("ruff check src", "ruff format --check src", "mypy", "mkdocs build --strict"):
        assert gate in after, f".ci/run does not run {gate!r} after the tests"


def test_ci_then_builds_checks_and_tests_the_installed_wheel_as_documented() -> None:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    gates = script.index("mkdocs build --strict")
    steps = [
        "python -m build --outdir",
        "twine check --strict",
        'pip install --quiet "$wheel[test]"',
        '(cd / && "$scratch/venv/bin/aims-snaptrade" demo',
        "AIMS_SNAPTRADE_INSTALLED=",
        "--import-mode=importlib",
    ]
    positions = [script.index(step) for step in steps]
    assert gates < positions[0] and positions == sorted(positions), "the wheel job runs after the gates, in order"
    listed = re.search(r"installed_tests=\((.+?)\)", script, flags=re.DOTALL)
    assert listed is not None
    files = listed.group(1).split()
    assert all((ROOT / name).is_file() for name in files)
    testing = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8").split("## The installed wheel", 1)[1]
    assert all(f"`{name}`" in testing for name in files), "docs/testing.md lists what runs against the wheel"
