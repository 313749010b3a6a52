"""The aims-snaptrade command: verify, health, alert-rules, demo, emulator, generate-key, rotate-keys,
migrate, consent, audit, export-user, erase-user, sync.

Exit codes: 0 success, 1 a check failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from aims_snaptrade.cli.compliance import add_compliance_commands
from aims_snaptrade.cli.sync import add_sync_command
from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeError, SnapTradeValidationError

__all__ = ["main"]


def _verify(args: argparse.Namespace) -> int:
    import json

    from aims_snaptrade.cli.verify import run_verify

    report = run_verify()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return report.exit_code


def _health(args: argparse.Namespace) -> int:
    from aims_snaptrade.cli.health import health_command

    return health_command(as_json=args.json, probe=args.probe)


def _alert_rules(args: argparse.Namespace) -> int:
    from aims_snaptrade.observability.alert_rules import prometheus_rules_yaml, write_prometheus_rules

    if args.output:
        print(f"wrote {write_prometheus_rules(args.output)}", file=sys.stderr)
    else:
        print(prometheus_rules_yaml(), end="")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aims_snaptrade.cli.demo import run_demo

    return run_demo(verbose=args.verbose)


def _emulator(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from aims_snaptrade.testing.emulator import run
    from aims_snaptrade.webhooks.verify import SNAPTRADE_RETRY_DELAYS

    for url in args.webhook_url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SnapTradeConfigurationError(
                f"--webhook-url must be an http(s) URL with a host, like http://127.0.0.1:8000/webhooks/snaptrade/; "
                f"got {url!r}"
            )
    scale = args.webhook_retry_scale
    if not scale >= 0 or scale == float("inf"):
        raise SnapTradeConfigurationError(f"--webhook-retry-scale must be a finite number >= 0, got {scale!r}")
    overrides: dict[str, Any] = {}
    if args.client_id or args.consumer_key:
        from aims_snaptrade.testing.config import DEFAULT_CLIENTS, ClientCredentials

        if not (args.client_id and args.consumer_key):
            raise SnapTradeConfigurationError("--client-id and --consumer-key go together")
        others = tuple(c for c in DEFAULT_CLIENTS if c.personal and c.client_id != args.client_id)
        overrides["clients"] = (ClientCredentials(args.client_id, args.consumer_key), *others)
    run(
        host=args.host,
        port=args.port,
        **overrides,
        webhook_urls=tuple(args.webhook_url),
        webhook_retry_delays=tuple(delay * scale for delay in SNAPTRADE_RETRY_DELAYS),
        journal_file=args.journal,
    )
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    from aims_snaptrade.secrets import Keyring

    keys = Keyring.generate(args.version).export()
    if args.output is None:
        print(keys)
        return 0
    # A key file is read by every later shell through SNAPTRADE_ENCRYPTION_KEYS_FILE. Owner-only
    # from the first byte, and never overwritten: the stored secrets need the key that wrote them.
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(
            f"configuration error: {args.output} exists; keep it (the stored secrets need its key). To add a "
            "new key for rotation, see docs/secret-stores.md.",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        print(f"configuration error: cannot create {args.output} ({exc.strerror})", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(keys + "\n")
    print(f"wrote a new key to {args.output}; export SNAPTRADE_ENCRYPTION_KEYS_FILE={args.output}", file=sys.stderr)
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    from aims_snaptrade.secrets import rotate_keys_command
    from aims_snaptrade.settings import Settings

    return rotate_keys_command(Settings.from_env(), batch_size=args.batch_size)


def _migrate(args: argparse.Namespace) -> int:
    from aims_snaptrade.cli.migrate import migrate_command
    from aims_snaptrade.settings import Settings

    return migrate_command(Settings.from_env())


def _parser() -> argparse.ArgumentParser:
    from aims_snaptrade import __version__

    parser = argparse.ArgumentParser(
        prog="aims-snaptrade",
        description="A safe, typed SnapTrade client for AIMS services: operations commands.",
        epilog="Exit codes: 0 success, 1 a check failed, 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"aims-snaptrade {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser(
        "verify",
        help="prove the deployment: signed call with the key, secret store, encryption, rate-limit storage, clock",
        description=(
            "Check the SNAPTRADE_* settings the way a service starts (same guardrails, same consent start-up "
            "path), without creating or changing anything: a signed read-only call proves the key, the secret "
            "store is opened read-only and its encryption checked, the rate-limit storage must answer, and the "
            "clock must agree with SnapTrade's."
        ),
        epilog="Exit codes: 0 every check passed, 1 a check failed, 2 the settings cannot be read.",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(handler=_verify)

    health = commands.add_parser("health", help="probe SnapTrade and report the health monitor's alerts and budgets")
    health.add_argument("--json", action="store_true", help="print the report as JSON")
    health.add_argument(
        "--no-probe", dest="probe", action="store_false", help="send nothing: only read the rate-limit budgets"
    )
    health.set_defaults(handler=_health)

    rules = commands.add_parser("alert-rules", help="write the guide's alerts as a Prometheus rule file")
    rules.add_argument("-o", "--output", help="file to write (default: standard output)")
    rules.set_defaults(handler=_alert_rules)

    demo = commands.add_parser("demo", help="run the whole flow against an embedded emulator")
    demo.add_argument("-v", "--verbose", action="store_true", help="log every call")
    demo.set_defaults(handler=_demo)

    emulator = commands.add_parser("emulator", help="run the SnapTrade emulator until interrupted")
    emulator.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    emulator.add_argument(
        "--webhook-url",
        action="append",
        default=[],
        metavar="URL",
        help="deliver signed webhooks to URL (repeatable: round-robin, as through a load balancer)",
    )
    emulator.add_argument(
        "--webhook-retry-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="multiply SnapTrade's redelivery schedule (30, 60, 120 minutes) by FACTOR; 0.001 for tests",
    )
    emulator.add_argument("--client-id", help="the commercial client id it accepts (default AIMS-EMULATOR)")
    emulator.add_argument("--consumer-key", help="that client's consumer key (with --client-id)")
    emulator.add_argument("--journal", metavar="FILE", help="append every request and webhook delivery to FILE (JSONL)")
    emulator.set_defaults(handler=_emulator)

    generate = commands.add_parser("generate-key", help="print a new encryption key for SNAPTRADE_ENCRYPTION_KEYS")
    generate.add_argument("--version", default="v1", help="key version label (default v1)")
    generate.add_argument(
        "-o", "--output", metavar="FILE", help="write the key to FILE (created owner-only; never overwritten)"
    )
    generate.set_defaults(handler=_generate_key)

    rotate = commands.add_parser("rotate-keys", help="re-encrypt every stored secret with the current key")
    rotate.add_argument("--batch-size", type=int, default=100, help="rows per transaction (default 100)")
    rotate.set_defaults(handler=_rotate_keys)

    migrate = commands.add_parser(
        "migrate",
        help="create or migrate every SQL store the settings name to this release's schema",
        description=(
            "Open every SQL store the SNAPTRADE_* settings name (secrets, consent, audit, order intents, sync "
            "ledger, webhook claims), which creates its tables or migrates them in place, and print one line per "
            "store. Run it with a role that may alter tables before starting services that may not."
        ),
        epilog="Exit codes: 0 every store is up to date or skipped, 1 a store was refused, 2 bad settings.",
    )
    migrate.set_defaults(handler=_migrate)

    # consent, audit, export-user, erase-user (docs/compliance.md)
    add_compliance_commands(commands)
    add_sync_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except SnapTradeConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except SnapTradeValidationError as exc:  # a value given on the command line: bad usage
        print(f"invalid input: {exc}", file=sys.stderr)
        return 2
    except SnapTradeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
