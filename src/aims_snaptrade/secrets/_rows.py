"""Logic shared by the built-in stores, free of IO (the stores only move rows in and out)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aims_snaptrade._ids import check_id
from aims_snaptrade.errors import (
    SnapTradeConfigurationError,
    SnapTradeSecretDecryptionError,
    SnapTradeSecretRotationError,
    SnapTradeValidationError,
)
from aims_snaptrade.redaction import register_secret
from aims_snaptrade.secrets.crypto import SecretCodec
from aims_snaptrade.secrets.protocol import BatchOutcome


def check_user_id(user_id: object) -> str:
    """Validate a user id by the library's one rule for ids (:func:`aims_snaptrade._ids.check_id`)."""
    return check_id(user_id, "user_id")


def check_secret(secret: object) -> str:
    """Validate a user secret and register it for redaction before anything can log it."""
    if not isinstance(secret, str) or not secret:
        raise SnapTradeValidationError("a user secret must be a non-empty string")
    register_secret(secret)
    return secret


def already_pending(user_id: str) -> SnapTradeSecretRotationError:
    """The error for ``begin_rotation`` on a user whose earlier rotation is unresolved."""
    return SnapTradeSecretRotationError(
        f"an earlier secret rotation of user {user_id!r} was interrupted and is still pending; "
        "resolve it first: if the stored secret still works call abort_rotation, otherwise delete "
        "the SnapTrade user, register it again and have the person reconnect their brokerage"
    )


@dataclass(frozen=True)
class StoredRow:
    """One stored secret as the backend holds it."""

    user_id: str
    key_version: str
    blob: bytes


@dataclass(frozen=True)
class Rewrite:
    """A planned compare-and-swap: replace ``(old_version, old_blob)`` by the new pair."""

    user_id: str
    old_version: str
    old_blob: bytes
    new_version: str
    new_blob: bytes


def plan_reencrypt(codec: SecretCodec, rows: Iterable[StoredRow]) -> tuple[list[Rewrite], int, list[str], str | None]:
    """Decide which rows of a batch to rewrite under the current key.

    Returns ``(rewrites, already_current, failed_user_ids, last_user_id)``. Rows that no key
    opens are reported, never rewritten, so a rerun with the right keyring can still read them.
    """
    if not codec.encrypted:
        raise SnapTradeConfigurationError(
            "key rotation needs SNAPTRADE_ENCRYPTION_KEYS: this store was opened without a keyring"
        )
    current = codec.current_version
    rewrites: list[Rewrite] = []
    failed: list[str] = []
    already = 0
    last: str | None = None
    for row in rows:
        last = row.user_id
        if row.key_version == current:
            already += 1
            continue
        try:
            if row.key_version == "plaintext":
                # Legacy rows written before keys were configured: encrypting them is the point.
                secret = bytes(row.blob).decode("utf-8")
                register_secret(secret)
            else:
                secret = codec.open(row.user_id, row.key_version, row.blob)
        except (SnapTradeSecretDecryptionError, UnicodeDecodeError):
            failed.append(row.user_id)
            continue
        version, blob = codec.seal(row.user_id, secret)
        rewrites.append(Rewrite(row.user_id, row.key_version, bytes(row.blob), version, blob))
    return rewrites, already, failed, last


def outcome(
    rewrites: list[Rewrite], applied: int, already: int, failed: list[str], last: str | None, scanned: int
) -> BatchOutcome:
    """Build the :class:`BatchOutcome` of a batch where ``applied`` rewrites won their swap."""
    return BatchOutcome(
        last_user_id=last,
        scanned=scanned,
        reencrypted=applied,
        # A lost compare-and-swap means a writer replaced or deleted the row meanwhile; whatever
        # it wrote is its own business, and a rerun re-examines the row anyway.
        already_current=already + (len(rewrites) - applied),
        failed=tuple(failed),
    )
