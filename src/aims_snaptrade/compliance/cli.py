"""Compliance commands of ``aims-snaptrade``: ``consent``, ``audit``, ``export-user``, ``erase-user``.

Each reads the service's ``SNAPTRADE_*`` environment (the consent store and audit trail default to
the secret store's database) and takes ``--json``. Consent changes and erasures go through the
client, so they are audited like the service's own.

Exit codes: 0 done, 1 the audit chain does not verify, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
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


def _audit_verify(args: argparse.Namespace) -> int:
    with _trail() as trail:
        report = trail.verify()
    verdict = "OK" if report.ok else f"BROKEN: {report.problem} at seq {report.position}"
    line = f"audit chain {verdict}: {report.checked} records from seq {report.anchor_seq} to {report.head_seq}"
    _print(args, report.to_json(), [line if report.ok else f"{line}; {report.message}"])
    return 0 if report.ok else 1


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

    audit = commands.add_parser("audit", help="verify or read the audit trail")
    audit_actions = audit.add_subparsers(dest="audit_command", required=True)
    json_flag(audit_actions.add_parser("verify", help="check the whole chain; exit 1 if broken")).set_defaults(
        handler=_audit_verify
    )
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
