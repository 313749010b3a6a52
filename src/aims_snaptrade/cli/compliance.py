"""Compliance commands of ``aims-snaptrade``: ``consent``, ``audit``, ``export-user``, ``erase-user``.

``audit verify [--checkpoint FILE]``, ``audit checkpoint [-o FILE]``, ``audit purge`` and
``consent sweep`` (``--before DATE`` or ``--older-than-days N``) are the retention and
anchoring operations of docs/compliance.md.

Each reads the service's ``SNAPTRADE_*`` environment (the consent store and audit trail default to
the secret store's database) and takes ``--json``. Consent changes and erasures go through the
client, so they are audited like the service's own.

Exit codes: 0 done, 1 the audit chain does not verify, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

__all__ = ["add_compliance_commands"]


@contextmanager
def _client() -> Iterator[Any]:
    from aims_snaptrade.client import SafeSnapTradeClient
    from aims_snaptrade.compliance.factory import consent_store_url, open_consent_store
    from aims_snaptrade.settings import Settings

    settings = Settings.from_env()
    consent = open_consent_store(consent_store_url(settings), settings)
    try:
        with SafeSnapTradeClient(settings, consent=consent) as client:
            yield client
    finally:
        consent.close()


def _print(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else "\n".join(lines))


def _consent_grant(args: argparse.Namespace) -> int:
    with _client() as client:
        record = client.grant_consent(
            args.user_id, args.scope, disclosure_version=args.disclosure_version, source=args.source
        )
    _print(args, record.to_json(), [f"granted {record.scope} consent to {record.user_id} until {record.expires_at}"])
    return 0


def _consent_revoke(args: argparse.Namespace) -> int:
    with _client() as client:
        revoked = client.revoke_consent(args.user_id, args.scope, source=args.source)
    data = {"user_id": args.user_id, "scope": args.scope or "all", "revoked": revoked}
    _print(args, data, [f"revoked {revoked} consent(s) of {args.user_id}"])
    return 0


def _consent_show(args: argparse.Namespace) -> int:
    from aims_snaptrade.compliance.consent import SCOPES

    with _client() as client:
        store = client.consent_store
        decisions = {scope: store.decide(args.user_id, scope) for scope in SCOPES}
        records = store.records(args.user_id)
    data = {
        "user_id": args.user_id,
        "current": {
            s: {"allowed": d.allowed, "reason": d.reason, "expires_at": d.expires_at} for s, d in decisions.items()
        },
        "records": [r.to_json() for r in records],
    }
    lines = [f"{s:6} {d.reason:8} expires {d.expires_at or '-'}" for s, d in decisions.items()]
    lines += [
        f"  {r.granted_at:%Y-%m-%d} {r.scope} v={r.disclosure_version} from {r.source}"
        + (f", revoked {r.revoked_at:%Y-%m-%d}" if r.revoked_at else "")
        for r in records
    ]
    _print(args, data, lines)
    return 0


@contextmanager
def _trail() -> Iterator[Any]:
    from aims_snaptrade.compliance.factory import audit_store_url, open_audit_trail
    from aims_snaptrade.settings import Settings

    settings = Settings.from_env()
    trail = open_audit_trail(audit_store_url(settings), settings)
    try:
        yield trail
    finally:
        trail.close()


def _read_checkpoints(path: str) -> list[Any]:
    from aims_snaptrade.compliance.audit import AuditCheckpoint
    from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeValidationError

    try:
        with open(path, encoding="utf-8") as file:
            lines = [(n, line) for n, line in enumerate(file, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapTradeConfigurationError(f"cannot read the checkpoint file {path!r}: {exc}") from None
    if not lines:
        raise SnapTradeConfigurationError(f"the checkpoint file {path!r} holds no checkpoint")
    checkpoints = []
    for number, line in lines:
        try:
            checkpoints.append(AuditCheckpoint.from_json(json.loads(line)))
        except (ValueError, SnapTradeValidationError) as exc:
            message = getattr(exc, "message", None) or type(exc).__name__
            raise SnapTradeConfigurationError(f"line {number} of {path!r} is not a checkpoint: {message}") from None
    return checkpoints


def _audit_verify(args: argparse.Namespace) -> int:
    checkpoints = _read_checkpoints(args.checkpoint) if args.checkpoint else []
    with _trail() as trail:
        report = trail.verify(checkpoints) if checkpoints else trail.verify()
    where = "" if report.position is None else f" at seq {report.position}"
    verdict = "OK" if report.ok else f"BROKEN: {report.problem}{where}"
    line = f"audit chain {verdict}: {report.checked} records from seq {report.anchor_seq} to {report.head_seq}"
    if report.ok and checkpoints:
        line += f"; consistent with {len(checkpoints)} checkpoint(s)"
    _print(args, report.to_json(), [line if report.ok else f"{line}; {report.message}"])
    return 0 if report.ok else 1


def _audit_checkpoint(args: argparse.Namespace) -> int:
    with _trail() as trail:
        checkpoint = trail.checkpoint()
    line = json.dumps(checkpoint.to_json(), separators=(",", ":"), sort_keys=True)
    if args.output:
        # Appended, one JSON line per checkpoint: verify checks the chain against every one.
        fd = os.open(args.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as file:
            file.write(line + "\n")
            file.flush()
            os.fsync(file.fileno())
        print(f"checkpoint of chain {checkpoint.chain_id} at seq {checkpoint.seq} appended to {args.output}")
    else:
        print(line)
    return 0


def _instant(text: str) -> datetime:
    """``--before``: an ISO 8601 date (midnight UTC) or date and time with a UTC offset."""
    from aims_snaptrade.errors import SnapTradeValidationError

    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise SnapTradeValidationError(
            f"--before {text!r} is not an ISO 8601 date; write 2026-01-31 or 2026-01-31T00:00:00+00:00."
        ) from None
    if len(text) == 10:  # a bare date: its start, in UTC
        return value.replace(tzinfo=UTC)
    if value.tzinfo is None:
        raise SnapTradeValidationError(f"--before {text!r} has a time but no UTC offset; add +00:00 (or Z).")
    return value


def _before(args: argparse.Namespace) -> datetime:
    from aims_snaptrade.compliance.retention import days_ago

    if args.before is not None:
        return _instant(args.before)
    return days_ago(args.older_than_days)


def _audit_purge(args: argparse.Namespace) -> int:
    from aims_snaptrade.compliance.retention import purge_audit_trail
    from aims_snaptrade.settings import Settings

    before = _before(args)
    report = purge_audit_trail(Settings.from_env(), before)
    data = {"removed": report.removed, "anchor_seq": report.anchor_seq, "before": before.isoformat()}
    _print(args, data, [f"purged {report.removed} audit record(s) before {before.isoformat()}"])
    return 0


def _consent_sweep(args: argparse.Namespace) -> int:
    from aims_snaptrade.compliance.retention import sweep_consents
    from aims_snaptrade.settings import Settings

    before = _before(args)
    removed = sweep_consents(Settings.from_env(), before)
    data = {"removed": removed, "before": before.isoformat()}
    _print(args, data, [f"removed {removed} lapsed consent grant(s) (expired or revoked before {before.isoformat()})"])
    return 0


def _audit_tail(args: argparse.Namespace) -> int:
    with _trail() as trail:
        records = trail.tail(args.n)
    lines = [
        f"{r.to_json()['time']} #{r.seq} {r.kind:10} {r.action} user={r.user_id or r.user_ref or '-'} "
        f"{r.outcome} status={r.status} attempts={r.attempts} request={r.request_id or '-'}"
        for r in records
    ]
    _print(args, [r.to_json() for r in records], lines)
    return 0


def _export_user(args: argparse.Namespace) -> int:
    with _client() as client:
        document = client.export_user(args.user_id)
    remote = document["snaptrade"]
    lines = [
        f"user {args.user_id}: registered at SnapTrade: {remote['user']['registered']}",
        f"consents: {len(document['local']['consents'])}, audit records: {len(document['local']['audit_records'])}",
        f"accounts: {len(remote.get('account_data', {}))} (use --json for the whole document)",
    ]
    _print(args, document, lines)
    return 0


def _erase_user(args: argparse.Namespace) -> int:
    if not args.confirm:
        print(f"erase-user deletes {args.user_id} at SnapTrade and locally: add --confirm; nothing was deleted.")
        return 2
    with _client() as client:
        receipt = client.erase_user(args.user_id, confirm=args.confirm)
    data = receipt.to_json()
    lines = [
        f"erased {args.user_id} (now {receipt.user_ref} in the audit trail)",
        f"SnapTrade: {receipt.snaptrade}",
        f"local: {receipt.local}",
    ]
    _print(args, data, lines)
    return 0


def add_compliance_commands(commands: Any) -> None:
    """Add the compliance sub-commands to the ``aims-snaptrade`` parser's sub-parsers."""

    def json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    def retention_window(parser: argparse.ArgumentParser, what: str) -> None:
        window = parser.add_mutually_exclusive_group(required=True)
        window.add_argument("--before", metavar="DATE", help=f"{what} DATE (ISO 8601; a bare date is UTC midnight)")
        window.add_argument("--older-than-days", type=int, metavar="N", help=f"{what} N days ago")

    consent = commands.add_parser("consent", help="grant, revoke or show a user's consent")
    actions = consent.add_subparsers(dest="consent_command", required=True)
    grant = json_flag(actions.add_parser("grant", help="record a consent (audited)"))
    grant.add_argument("user_id")
    grant.add_argument("--scope", choices=["read", "trade"], default="read")
    grant.add_argument("--disclosure-version", required=True, help="the disclosure text the person accepted")
    grant.add_argument("--source", required=True, help="where the consent was taken")
    grant.set_defaults(handler=_consent_grant)
    revoke = json_flag(actions.add_parser("revoke", help="revoke consents in force (audited)"))
    revoke.add_argument("user_id")
    revoke.add_argument("--scope", choices=["read", "trade"], default=None, help="default: every scope")
    revoke.add_argument("--source", required=True, help="who or what asked for the revocation")
    revoke.set_defaults(handler=_consent_revoke)
    show = json_flag(actions.add_parser("show", help="current decision per scope and every grant"))
    show.add_argument("user_id")
    show.set_defaults(handler=_consent_show)
    sweep = json_flag(actions.add_parser("sweep", help="delete grants that lapsed (expired or revoked) long ago"))
    retention_window(sweep, "grants that lapsed before")
    sweep.set_defaults(handler=_consent_sweep)

    audit = commands.add_parser("audit", help="verify or read the audit trail")
    audit_actions = audit.add_subparsers(dest="audit_command", required=True)
    verify = json_flag(audit_actions.add_parser("verify", help="check the whole chain; exit 1 if broken"))
    verify.add_argument(
        "--checkpoint", metavar="FILE", help="also check against every checkpoint in FILE (audit checkpoint -o)"
    )
    verify.set_defaults(handler=_audit_verify)
    checkpoint = audit_actions.add_parser("checkpoint", help="write the signed head, to keep outside the database")
    checkpoint.add_argument("-o", "--output", metavar="FILE", help="append it to FILE (default: print it)")
    checkpoint.set_defaults(handler=_audit_checkpoint)
    purge = json_flag(audit_actions.add_parser("purge", help="remove old records (refused if the chain is broken)"))
    retention_window(purge, "records older than")
    purge.set_defaults(handler=_audit_purge)
    tail = json_flag(audit_actions.add_parser("tail", help="the last records"))
    tail.add_argument("-n", type=int, default=20, help="how many (default 20)")
    tail.set_defaults(handler=_audit_tail)

    export = json_flag(
        commands.add_parser("export-user", help="everything held about a user, locally and at SnapTrade")
    )
    export.add_argument("user_id")
    export.set_defaults(handler=_export_user)
    erase = json_flag(commands.add_parser("erase-user", help="delete a user at SnapTrade and locally (audited)"))
    erase.add_argument("user_id")
    erase.add_argument("--confirm", action="store_true", help="required: really erase")
    erase.set_defaults(handler=_erase_user)
