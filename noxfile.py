"""Developer sessions: `nox -s tests lint typecheck docs`."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session(python=["3.11", "3.12"])
def tests(session: nox.Session) -> None:
    """The README's test command on each supported Python (needs Redis and PostgreSQL on 127.0.0.1)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6,<1")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples", "noxfile.py")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy, strict on src/."""
    session.install("-e", ".[test]", "mypy>=1.10,<3")
    session.run("mypy")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the mkdocs site strictly."""
    session.install("-e", ".[dev]")
    session.run("mkdocs", "build", "--strict")


def _many_examples(session: nox.Session, test: str, variable: str, examples: int) -> None:
    """Run ``test`` with its hypothesis example count raised through ``variable``."""
    session.install("-e", ".[test]")
    session.run("pytest", "-p", "no:cacheprovider", "-s", test, *session.posargs, env={variable: str(examples)})


@nox.session(python="3.11")
def webhooks(session: nox.Session) -> None:
    """Webhook verification properties over 10,000 generated payloads each (the suite runs a slice)."""
    _many_examples(session, "tests/webhooks/test_webhook_verify_properties.py", "AIMS_WEBHOOK_EXAMPLES", 10_000)


@nox.session(python="3.11")
def telemetry(session: nox.Session) -> None:
    """The secret search of spans and metrics over 200 generated key/secret sets (the suite runs 8)."""
    test = "tests/client/test_telemetry.py::test_no_attribute_of_any_span_event_or_metric_holds_a_secret"
    _many_examples(session, test, "AIMS_TELEMETRY_EXAMPLES", 200)


@nox.session(python="3.11")
def trading(session: nox.Session) -> None:
    """10,000 randomised fault trials around orders (sync and async) and 100 SIGKILLs; prints the figures."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-s",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout=1800",
        "tests/trading/test_trading_faults.py",
        "tests/trading/test_trading_crash.py",
        *session.posargs,
        env={"AIMS_TRADING_TRIALS": "10000", "AIMS_TRADING_WORKERS": "4", "AIMS_TRADING_KILLS": "100"},
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against the raw SDK measured in the same run."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/client_speed.py", "--json", "benchmarks/results/client_speed.json")
    session.run("python", "benchmarks/road_breakdown.py")
    session.run("python", "benchmarks/telemetry_overhead.py")


@nox.session(python="3.11")
def audit_kills(session: nox.Session) -> None:
    """The audit trail under 100 SIGKILLs per backend (the normal suite runs a slice of 10)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-s", "tests/compliance/test_audit_processes.py", env={"AIMS_AUDIT_KILLS": "100"})


@nox.session(python="3.11")
def sync_load(session: nox.Session) -> None:
    """Portfolio sync at the issue's scale: 1,000 users (batch, faults, SIGKILL resume, webhooks, Celery)."""
    session.install("-e", ".[test,celery]")
    # SnapTrade's default customer limit, 250 requests, in a window shrunk from 60 s to 5 s: the
    # batch's 4,840 requests take 19 windows, as they would in production (a 1,000-request window
    # passed them in 5 windows, each opening with a burst of 1,000). The limiter's margin is 0.1 s.
    env = {"AIMS_SYNC_LOAD_USERS": "1000", "AIMS_SYNC_LOAD_LIMIT": "250", "AIMS_SYNC_LOAD_WINDOW": "5"}
    session.run("pytest", "tests/sync", "-s", "-p", "no:cacheprovider", *session.posargs, env=env)


@nox.session(python="3.11")
def hardening(session: nox.Session) -> None:
    """Issue 9's proofs at full size: 10,000 examples per property and every fault-matrix cell.

    Prints the figures at the end (``hardening figures``): examples, leaking examples, fuzz cases,
    unexpected exception types, orphaned registrations, matrix cells.
    """
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/hardening",
        "-q",
        "-p",
        "no:cacheprovider",
        "--timeout=7200",
        *session.posargs,
        env={"AIMS_HARDENING_PROFILE": "hardening"},
    )


@nox.session(python="3.11")
def fleet(session: nox.Session) -> None:
    """Issue 10's acceptance: 10 windows of N=60 per 2 s against the emulator (1 and 4 processes,
    50 async tasks; Redis on 127.0.0.1), zero 429s and >= 95% utilisation, then the composed
    check's cost per call beside limits alone."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/ratelimit_fleet.py", "--windows", "10", *session.posargs)
    session.run("python", "benchmarks/ratelimit_cost.py")


@nox.session(python="3.11")
def traffic(session: nox.Session) -> None:
    """The no-budget-exceeded property over 1,000 random arrival patterns per storage (the suite runs 40)."""
    _many_examples(session, "tests/traffic/test_traffic_properties.py", "AIMS_TRAFFIC_EXAMPLES", 1000)


# Mutation testing: the modules where a bug costs money, data or a secret, each with the tests
# relevant to it (mutmut runs a mutant only against the selected tests that call the mutated
# function). This table is the one place that names the paths: update it when files move.
# Each entry: module name -> (files to mutate, pytest arguments selecting its tests).
MUTATION_TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "redaction": (
        ("src/aims_snaptrade/redaction.py", "src/aims_snaptrade/_masking.py"),
        ("tests/test_redaction.py", "tests/hardening/test_redaction_forms.py", "tests/test_redaction_properties.py"),
    ),
    "guardrails": (
        ("src/aims_snaptrade/guardrails.py",),
        ("tests/client/test_guardrails.py", "tests/client/test_production_checks.py"),
    ),
    "settings": (
        ("src/aims_snaptrade/settings.py",),
        (
            "tests/test_settings.py",
            "tests/test_settings_properties.py",
            "tests/client/test_guardrails.py",
            "tests/client/test_production_checks.py",
        ),
    ),
    # Rate limiting, in three runs that each fit a sitting: the budget take (memory and the Redis
    # script's arguments), the policy (plans, engine, pauses, queue) and the limiter (the Redis
    # script's callers, sync and async).
    "ratelimit-take": (
        ("src/aims_snaptrade/ratelimit/_take.py",),
        (
            "tests/traffic/test_traffic_composed.py",
            "tests/traffic/test_traffic_ratelimit.py",
            "tests/traffic/test_budget_properties.py",
        ),
    ),
    "ratelimit-policy": (
        ("src/aims_snaptrade/ratelimit/_policy.py",),
        (
            "tests/traffic/test_traffic_ratelimit.py",
            "tests/traffic/test_traffic_waiting.py",
            "tests/traffic/test_traffic_composed.py",
            "tests/traffic/test_budget_properties.py",
            "tests/traffic/test_policy_contract.py",
            "tests/traffic/test_acquire_engine.py",
        ),
    ),
    "ratelimit-limiter": (
        ("src/aims_snaptrade/ratelimit/limiter.py",),
        (
            "tests/traffic/test_traffic_ratelimit.py",
            "tests/traffic/test_traffic_waiting.py",
            "tests/traffic/test_traffic_composed.py",
            "tests/traffic/test_budget_properties.py",
            "tests/traffic/test_policy_contract.py",
            "tests/traffic/test_acquire_engine.py",
            "tests/traffic/test_limiter_contract.py",
        ),
    ),
    "telemetry": (
        ("src/aims_snaptrade/observability/telemetry.py",),
        ("tests/client/test_telemetry.py", "tests/client/test_telemetry_user_ids.py"),
    ),
    "compliance": (
        (
            "src/aims_snaptrade/compliance/consent.py",
            "src/aims_snaptrade/compliance/audit.py",
            "src/aims_snaptrade/compliance/data_rights.py",
        ),
        ("tests/compliance", "--ignore=tests/compliance/test_audit_processes.py"),
    ),
    "webhooks": (
        (
            "src/aims_snaptrade/webhooks/verify.py",
            "src/aims_snaptrade/webhooks/receiver.py",
            "src/aims_snaptrade/webhooks/dedupe/*",
        ),
        ("tests/webhooks", "--ignore=tests/webhooks/test_webhook_end_to_end.py"),
    ),
    "trading": (
        (
            "src/aims_snaptrade/trading/flows.py",
            "src/aims_snaptrade/trading/reconcile.py",
            "src/aims_snaptrade/trading/intents.py",
        ),
        (
            "tests/trading",
            "--ignore=tests/trading/test_trading_faults.py",
            "--ignore=tests/trading/test_trading_crash.py",
        ),
    ),
    "sync": (
        (
            "src/aims_snaptrade/sync/policy.py",
            "src/aims_snaptrade/sync/flow.py",
            "src/aims_snaptrade/sync/ledger/*",
        ),
        ("tests/sync", "--ignore=tests/sync/test_sync_celery.py"),
    ),
}


def _mutmut_project(root: Path, workdir: Path, mutate: tuple[str, ...], tests: tuple[str, ...]) -> None:
    """A directory where mutmut sees only one module: the project's src/, tests/ and docs (links) and a
    pyproject.toml whose ``[tool.mutmut]`` names that module's files and tests (mutmut reads its
    configuration from the working directory only)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    shared = tomllib.loads(text)["tool"]["mutmut"]
    settings = {**shared, "only_mutate": list(mutate), "pytest_add_cli_args_test_selection": list(tests)}
    rest = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[)", "", text)
    table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    workdir.mkdir(parents=True)
    (workdir / "pyproject.toml").write_text(f"{rest}\n[tool.mutmut]\n{table}\n", encoding="utf-8")
    for name in ("src", "tests", "docs", "README.md"):
        (workdir / name).symlink_to(root / name)


@nox.session(python="3.11")
def mutants(session: nox.Session) -> None:
    """Mutation testing with mutmut, one module at a time with its own tests and ONE worker process.

    ``nox -s mutants`` runs every module of MUTATION_TARGETS; ``nox -s mutants -- redaction`` one
    (or several). Each run starts fresh in build/mutants/<module> and prints the module's figures;
    survivors can be read there afterwards (``cd build/mutants/<module> && mutmut show <name>``).
    """
    session.install("-e", ".[mutation]")
    names = session.posargs or list(MUTATION_TARGETS)
    unknown = sorted(set(names) - set(MUTATION_TARGETS))
    if unknown:
        session.error(f"unknown module(s) {unknown}; choose from {sorted(MUTATION_TARGETS)}")
    root = Path(__file__).resolve().parent
    figures = []
    for name in names:
        mutate, tests = MUTATION_TARGETS[name]
        workdir = root / "build" / "mutants" / name
        shutil.rmtree(workdir, ignore_errors=True)
        _mutmut_project(root, workdir, mutate, tests)
        with session.chdir(workdir):
            session.run("mutmut", "run", "--max-children", "1", success_codes=[0, 1])
            session.run("mutmut", "results")
            session.run("mutmut", "export-cicd-stats", silent=True)
            stats = json.loads((workdir / "mutants" / "mutmut-cicd-stats.json").read_text(encoding="utf-8"))
        # A mutant no selected test reaches is a bug the tests let through: it counts as surviving.
        tested = stats["killed"] + stats["survived"] + stats["timeout"] + stats["suspicious"] + stats["no_tests"]
        score = 100 * (stats["killed"] + stats["timeout"]) / tested if tested else 0.0
        figures.append(
            f"{name}: {stats['total']} mutants, {stats['killed']} killed, {stats['timeout']} timed out, "
            f"{stats['survived']} survived, {stats['no_tests']} not reached by its tests; "
            f"{score:.1f}% of the tested mutants killed (before naming equivalents)"
        )
    session.log("mutation figures:\n" + "\n".join(figures))
