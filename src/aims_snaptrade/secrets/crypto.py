"""Keys and sealing: the only module that touches key material.

A :class:`Keyring` is an ordered set of versioned 256-bit keys; the first one (the *current* key)
encrypts, every key decrypts. :class:`SecretCodec` turns a user secret into a stored
``(key_version, blob)`` pair and back with AES-256-GCM from ``cryptography``.

Every ciphertext is bound to its user through the AEAD associated data
``b"aims-snaptrade/user-secret/v1|" + user_id``: a blob copied into another user's row fails
authentication instead of handing user B the secret of user A.

Blob layout: one format byte (``0x01`` = AES-256-GCM with a 96-bit random nonce), the 12-byte
nonce, then the ciphertext with its 16-byte tag. The format byte lets a later release change the
algorithm without guessing what an old row holds.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeSecretDecryptionError
from aims_snaptrade.redaction import register_secret

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _aesgcm() -> type[AESGCM]:
    # cryptography is imported on first use: a service without encryption keys never loads it.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM


__all__ = ["ASSOCIATED_DATA_PREFIX", "PLAINTEXT_VERSION", "Keyring", "SecretCodec"]

ASSOCIATED_DATA_PREFIX = b"aims-snaptrade/user-secret/v1|"
"""Purpose label put in front of the user id in the AEAD associated data."""

PLAINTEXT_VERSION = "plaintext"
"""``key_version`` of a row written by an unencrypted store (sandbox without keys)."""

_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_FORMAT_AESGCM = 0x01
_VERSION_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_ENV_NAME = "SNAPTRADE_ENCRYPTION_KEYS"


def _decode_key(text: str, version: str) -> bytes:
    # Accept URL-safe and standard alphabets, with or without padding: operators paste keys
    # from different tools, and being strict about the alphabet buys nothing.
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SnapTradeConfigurationError(
            f"{_ENV_NAME}: key {version!r} is not valid base64; "
            "generate one with `aims-snaptrade generate-key` or Keyring.generate()"
        ) from None
    if len(raw) != _KEY_BYTES:
        raise SnapTradeConfigurationError(
            f"{_ENV_NAME}: key {version!r} decodes to {len(raw)} bytes, expected {_KEY_BYTES}; "
            "generate one with `aims-snaptrade generate-key` or Keyring.generate()"
        )
    return raw


class Keyring:
    """Versioned AES-256 keys: the first (current) one encrypts, all of them decrypt.

    Build it from settings with :meth:`parse` (``"v2:<base64 key>,v1:<base64 key>"``) or make a
    fresh one with :meth:`generate`. ``repr``/``str`` show the versions only, never key material.
    """

    __slots__ = ("_keys", "_order")

    def __init__(self, keys: Iterable[tuple[str, bytes]]) -> None:
        """Build a keyring from ``(version, 32-byte key)`` pairs, current key first."""
        order: list[str] = []
        table: dict[str, bytes] = {}
        for version, key in keys:
            if not _VERSION_PATTERN.match(version) or version == PLAINTEXT_VERSION:
                raise SnapTradeConfigurationError(
                    f"{_ENV_NAME}: key version {version!r} must be 1-32 characters of letters, digits, "
                    f"'_', '.', '-' (and not {PLAINTEXT_VERSION!r}), e.g. 'v2'"
                )
            if version in table:
                raise SnapTradeConfigurationError(f"{_ENV_NAME}: key version {version!r} appears twice")
            if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
                raise SnapTradeConfigurationError(f"{_ENV_NAME}: key {version!r} must be {_KEY_BYTES} bytes")
            order.append(version)
            table[version] = key
            register_secret(base64.urlsafe_b64encode(key).decode("ascii"), kind="key")
        if not order:
            raise SnapTradeConfigurationError(
                f"{_ENV_NAME} holds no key; expected 'v1:<base64 32 bytes>' (see Keyring.generate())"
            )
        self._order: tuple[str, ...] = tuple(order)
        self._keys = table

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse ``"v2:<base64>,v1:<base64>"`` (current key first).

        Raises :class:`SnapTradeConfigurationError` naming the bad entry, never echoing key material.
        """
        pairs: list[tuple[str, bytes]] = []
        for position, entry in enumerate(text.split(","), start=1):
            entry = entry.strip()
            if not entry:
                continue
            version, sep, encoded = entry.partition(":")
            if not sep or not version.strip() or not encoded.strip():
                raise SnapTradeConfigurationError(
                    f"{_ENV_NAME}: entry {position} is not '<version>:<base64 key>' (e.g. 'v1:...')"
                )
            version = version.strip()
            pairs.append((version, _decode_key(encoded, version)))
        return cls(pairs)

    @classmethod
    def generate(cls, version: str = "v1") -> Keyring:
        """Return a keyring holding one fresh random key named ``version``."""
        return cls([(version, _aesgcm().generate_key(bit_length=256))])

    def rotated(self, version: str | None = None) -> Keyring:
        """Return a new keyring with a fresh current key in front and every existing key kept.

        ``version`` defaults to ``v<N+1>`` where ``N`` is the highest numeric ``vN`` present.
        """
        if version is None:
            numbers = [int(v[1:]) for v in self._order if re.fullmatch(r"v\d+", v)]
            version = f"v{max(numbers, default=0) + 1}"
        fresh = _aesgcm().generate_key(bit_length=256)
        return Keyring([(version, fresh), *((v, self._keys[v]) for v in self._order)])

    def export(self) -> str:
        """Return the keyring as a ``SNAPTRADE_ENCRYPTION_KEYS`` value. This reveals key material."""
        return ",".join(f"{v}:{base64.urlsafe_b64encode(self._keys[v]).decode('ascii')}" for v in self._order)

    @property
    def current_version(self) -> str:
        """The version new secrets are encrypted with."""
        return self._order[0]

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version, current first."""
        return self._order

    def key(self, version: str) -> bytes | None:
        """The key named ``version``, or ``None``. Internal to the stores; do not log it."""
        return self._keys.get(version)

    def __contains__(self, version: object) -> bool:
        return version in self._keys

    def __repr__(self) -> str:
        return f"Keyring(versions={list(self._order)!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy key material into queues and caches; refuse rather than leak.
        raise TypeError("Keyring objects are not picklable; pass Keyring.export() text explicitly")


def associated_data(user_id: str) -> bytes:
    """The AEAD associated data binding a ciphertext to ``user_id`` and its purpose."""
    return ASSOCIATED_DATA_PREFIX + user_id.encode("utf-8")


class SecretCodec:
    """Seals user secrets for storage and opens them again.

    With a keyring, secrets are AES-256-GCM encrypted with the current key. Without one (allowed
    for SQLite in sandbox only; see docs/secret-stores.md) they are stored as UTF-8 under the
    ``"plaintext"`` version and :attr:`encrypted` is ``False`` so guardrails can refuse it.
    """

    __slots__ = ("_ciphers", "_keyring")

    def __init__(self, keyring: Keyring | None) -> None:
        """Use ``keyring`` to encrypt, or store plaintext when it is ``None``."""
        self._keyring = keyring
        self._ciphers: dict[str, AESGCM] = {}
        if keyring is not None:
            for version in keyring.versions:
                key = keyring.key(version)
                if key is not None:  # always true: versions come from the keyring itself
                    self._ciphers[version] = _aesgcm()(key)

    @property
    def encrypted(self) -> bool:
        """``True`` when new secrets are encrypted."""
        return self._keyring is not None

    @property
    def keyring(self) -> Keyring | None:
        """The keyring, if any."""
        return self._keyring

    @property
    def current_version(self) -> str:
        """The ``key_version`` new rows get."""
        return self._keyring.current_version if self._keyring is not None else PLAINTEXT_VERSION

    def seal(self, user_id: str, secret: str) -> tuple[str, bytes]:
        """Return ``(key_version, blob)`` for storing ``secret`` as ``user_id``'s."""
        if self._keyring is None:
            return PLAINTEXT_VERSION, secret.encode("utf-8")
        version = self._keyring.current_version
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[version].encrypt(nonce, secret.encode("utf-8"), associated_data(user_id))
        return version, bytes([_FORMAT_AESGCM]) + nonce + sealed

    def open(self, user_id: str, version: str, blob: bytes) -> str:
        """Return the secret stored as ``(version, blob)`` for ``user_id``.

        Raises :class:`SnapTradeSecretDecryptionError` for a missing key, a tampered or moved
        ciphertext, or a plaintext row read by an encrypted store. Never returns garbage.
        """
        blob = bytes(blob)
        if version == PLAINTEXT_VERSION:
            if self._keyring is not None:
                # Reading plaintext through an encrypted store would let anyone with write access
                # to the table plant a secret; make the operator encrypt legacy rows explicitly.
                raise SnapTradeSecretDecryptionError(
                    f"the secret of user {user_id!r} is stored unencrypted (written without "
                    f"{_ENV_NAME}); run `aims-snaptrade rotate-keys` to encrypt it"
                )
            return self._decode_utf8(user_id, version, blob)
        if self._keyring is None:
            raise SnapTradeSecretDecryptionError(
                f"the secret of user {user_id!r} is encrypted with key {version!r} but no keyring is "
                f"configured; set {_ENV_NAME} with that key"
            )
        cipher = self._ciphers.get(version)
        if cipher is None:
            raise SnapTradeSecretDecryptionError(
                f"the secret of user {user_id!r} is encrypted with key {version!r}, which is not in "
                f"the keyring (have {', '.join(self._keyring.versions)}); add it to {_ENV_NAME}"
            )
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _FORMAT_AESGCM:
            raise SnapTradeSecretDecryptionError(
                f"the stored secret of user {user_id!r} is malformed (unknown format or truncated)"
            )
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        from cryptography.exceptions import InvalidTag

        try:
            plain = cipher.decrypt(nonce, sealed, associated_data(user_id))
        except InvalidTag:
            raise SnapTradeSecretDecryptionError(
                f"the stored secret of user {user_id!r} failed authentication with key {version!r}: "
                "it was tampered with, copied from another user's row, or written with a different "
                "key under the same version name"
            ) from None
        return self._decode_utf8(user_id, version, plain)

    @staticmethod
    def _decode_utf8(user_id: str, version: str, raw: bytes) -> str:
        try:
            secret = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SnapTradeSecretDecryptionError(
                f"the stored secret of user {user_id!r} (key {version!r}) is not valid UTF-8"
            ) from None
        register_secret(secret)
        return secret

    def __repr__(self) -> str:
        return f"SecretCodec(encrypted={self.encrypted}, current_version={self.current_version!r})"
