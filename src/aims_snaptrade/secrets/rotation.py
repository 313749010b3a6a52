"""Key rotation (re-encrypt every row to the current key) and interrupted user-secret rotations.

Key rotation procedure (also in docs/secret-stores.md):

1. Put a new key in front of ``SNAPTRADE_ENCRYPTION_KEYS`` (``v2:...,v1:...``) and restart every
   process, so all writers encrypt with ``v2`` while ``v1`` rows stay readable.
2. Run ``aims-snaptrade rotate-keys`` (:func:`rotate_keys`). It walks the rows in user-id order,
   one transaction per batch, each row rewritten by compare-and-swap. A crash leaves every row
   under either key, both in the keyring; running it again finishes the job.
3. When the report says no row is left on ``v1``, remove ``v1`` from the setting.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeError, SnapTradeSecretRotationError
from aims_snaptrade.secrets.protocol import BatchOutcome, KeyRotatable, SecretStore

if TYPE_CHECKING:
    from aims_snaptrade.settings import Settings

__all__ = ["RotationReport", "check_pending_rotations", "rotate_keys", "rotate_keys_command"]

logger = logging.getLogger("aims_snaptrade.secrets")


@dataclass(frozen=True)
class RotationReport:
    """The outcome of :func:`rotate_keys`. Holds counts and user ids, never secrets.

    Attributes:
        current_version: The key version every row should now use.
        scanned: Rows examined.
        reencrypted: Rows rewritten under the current key by this run.
        already_current: Rows that were already under the current key.
        failed: User ids whose secret no key in the keyring opens (add the missing key, rerun).
        batches: Transactions committed.
        versions_after: Rows per key version after the run; safe to drop an old key when it is absent.
    """

    current_version: str
    scanned: int = 0
    reencrypted: int = 0
    already_current: int = 0
    failed: tuple[str, ...] = ()
    batches: int = 0
    versions_after: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """``True`` when every row is under the current key."""
        return not self.failed and set(self.versions_after) <= {self.current_version}

    def summary(self) -> str:
        """A few lines for humans (CLI output, logs)."""
        lines = [
            f"Key rotation to {self.current_version}: scanned {self.scanned}, re-encrypted {self.reencrypted}, "
            f"already current {self.already_current}, failed {len(self.failed)} ({self.batches} batches).",
            "Rows per key version now: "
            + (", ".join(f"{v}={n}" for v, n in sorted(self.versions_after.items())) or "none"),
        ]
        if self.failed:
            shown = ", ".join(self.failed[:20]) + (" ..." if len(self.failed) > 20 else "")
            lines.append(
                f"Could not decrypt the secrets of {len(self.failed)} users ({shown}): add the key they were "
                "written with to SNAPTRADE_ENCRYPTION_KEYS and run again."
            )
        elif self.complete:
            lines.append(
                f"Every row uses {self.current_version}: older keys may now be removed from SNAPTRADE_ENCRYPTION_KEYS."
            )
        else:
            lines.append("Rows were written under other keys meanwhile; restart every writer with the new keyring.")
        return "\n".join(lines)


def rotate_keys(
    store: SecretStore,
    *,
    batch_size: int = 100,
    progress: Callable[[BatchOutcome], None] | None = None,
) -> RotationReport:
    """Re-encrypt every row of ``store`` under its keyring's current key.

    Resumable and safe to run while the store is in use: each batch is one transaction and each
    row is rewritten only if unchanged since it was read. ``progress`` is called after every
    committed batch. Raises :class:`SnapTradeConfigurationError` for a store without a keyring or
    one that manages its own encryption (not :class:`KeyRotatable`).
    """
    if batch_size < 1:
        raise SnapTradeConfigurationError("rotate_keys: batch_size must be at least 1")
    if not isinstance(store, KeyRotatable):
        raise SnapTradeConfigurationError(
            f"{type(store).__name__} does not support key rotation here; rotate keys with its own tooling"
        )
    current = store.current_key_version()
    after: str | None = None
    totals = {"scanned": 0, "reencrypted": 0, "already_current": 0, "batches": 0}
    failed: list[str] = []
    while True:
        batch = store.reencrypt_batch(after, batch_size)
        if batch.scanned == 0:
            break
        totals["batches"] += 1
        totals["scanned"] += batch.scanned
        totals["reencrypted"] += batch.reencrypted
        totals["already_current"] += batch.already_current
        failed.extend(batch.failed)
        after = batch.last_user_id
        if progress is not None:
            progress(batch)
        if batch.scanned < batch_size:
            break
    report = RotationReport(
        current_version=current,
        failed=tuple(failed),
        versions_after=store.key_version_counts(),
        **totals,
    )
    logger.info(
        "key rotation to %s: scanned=%d reencrypted=%d failed=%d",
        current,
        report.scanned,
        report.reencrypted,
        len(report.failed),
    )
    return report


def check_pending_rotations(store: SecretStore) -> None:
    """Raise :class:`SnapTradeSecretRotationError` if any user-secret rotation was interrupted.

    Call it at start-up: a crash between ``resetUserSecret`` and storing its answer may have lost
    the new secret, and that must be reported, never left silent.
    """
    pending = store.pending_rotations()
    if pending:
        shown = ", ".join(repr(u) for u in pending[:20]) + (" ..." if len(pending) > 20 else "")
        raise SnapTradeSecretRotationError(
            f"{len(pending)} user-secret rotation(s) were interrupted ({shown}); for each user try the stored "
            "secret: if SnapTrade accepts it, call abort_rotation; if it answers 1083, delete the SnapTrade "
            "user, register it again and have the person reconnect their brokerage"
        )


def rotate_keys_command(
    settings: Settings, *, batch_size: int = 100, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``aims-snaptrade rotate-keys``: open the store from ``settings``, rotate, print a summary.

    Returns the exit status: 0 when every row is under the current key, 1 when some rows could not
    be decrypted or remain under other keys, 2 on a configuration or store error. Prints no secret.
    """
    from aims_snaptrade.secrets.factory import open_secret_store_from_settings

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        store = open_secret_store_from_settings(settings)
    except SnapTradeError as exc:
        print(f"rotate-keys: {exc}", file=err)
        return 2
    try:
        if getattr(store, "persistent", None) is False:
            print(
                f"rotate-keys: the {getattr(store, 'kind', 'memory')} store keeps nothing beyond the process that "
                "opened it, so this command has nothing to rotate; set SNAPTRADE_SECRET_STORE_URL to the store "
                "your services use (sqlite:///... or postgresql://...)",
                file=err,
            )
            return 2
        if not getattr(store, "encrypted", False):
            print("rotate-keys: set SNAPTRADE_ENCRYPTION_KEYS first; this store is unencrypted", file=err)
            return 2

        done = {"batches": 0, "rows": 0}

        def show(batch: BatchOutcome) -> None:
            done["batches"] += 1
            done["rows"] += batch.scanned
            if done["batches"] % 10 == 0:
                print(f"  ... {done['rows']} rows examined", file=out)

        report = rotate_keys(store, batch_size=batch_size, progress=show)
    except SnapTradeError as exc:
        print(f"rotate-keys: {exc}", file=err)
        return 2
    finally:
        store.close()
    print(report.summary(), file=out)
    _audit_rotation(settings, report, err)
    return 0 if report.complete else 1


def _audit_rotation(settings: Settings, report: RotationReport, err: TextIO) -> None:
    # An encryption-key event belongs in the audit trail (docs/compliance.md) when one is kept.
    from aims_snaptrade.compliance.audit import AuditEvent
    from aims_snaptrade.compliance.factory import append_audit_event

    detail: dict[str, str | int | float | bool | None] = {
        "current_version": report.current_version,
        "scanned": report.scanned,
        "reencrypted": report.reencrypted,
        "failed": len(report.failed),
    }
    outcome = "ok" if report.complete else "incomplete"
    try:
        append_audit_event(settings, AuditEvent("key", "key.rotate", outcome=outcome, detail=detail))
    except SnapTradeError as exc:
        print(f"rotate-keys: the rotation is done but could not be audited: {exc}", file=err)
