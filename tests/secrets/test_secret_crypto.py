"""Keyring parsing and AEAD sealing: typed errors, never garbage, never key material in text."""

from __future__ import annotations

import base64
import pickle

import pytest

from aims_snaptrade.errors import SnapTradeConfigurationError, SnapTradeSecretDecryptionError
from aims_snaptrade.redaction import redact
from aims_snaptrade.secrets import Keyring, SecretCodec
from aims_snaptrade.secrets.crypto import ASSOCIATED_DATA_PREFIX, PLAINTEXT_VERSION, associated_data

KEY_A = base64.urlsafe_b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()  # standard alphabet, padded


def test_parse_orders_current_key_first() -> None:
    keyring = Keyring.parse(f" v2:{KEY_B} , v1:{KEY_A}")
    assert keyring.current_version == "v2"
    assert keyring.versions == ("v2", "v1")
    assert keyring.key("v1") == bytes(range(32))
    assert "v1" in keyring
    assert "v3" not in keyring


def test_parse_accepts_unpadded_urlsafe_keys() -> None:
    key = base64.urlsafe_b64encode(bytes([250] * 32)).decode().rstrip("=")
    assert Keyring.parse(f"k:{key}").key("k") == bytes([250] * 32)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "holds no key"),
        ("v1", "entry 1 is not"),
        (f"v1:{KEY_A},:{KEY_B}", "entry 2 is not"),
        ("v1:not base64!!", "not valid base64"),
        (f"v1:{base64.b64encode(b'short').decode()}", "decodes to 5 bytes"),
        (f"v1:{KEY_A},v1:{KEY_B}", "appears twice"),
        (f"bad version:{KEY_A}", "must be 1-32 characters"),
        (f"v|1:{KEY_A}", "must be 1-32 characters"),
        (f"{PLAINTEXT_VERSION}:{KEY_A}", "must be 1-32 characters"),
    ],
)
def test_parse_errors_are_configuration_errors_without_key_material(text: str, fragment: str) -> None:
    with pytest.raises(SnapTradeConfigurationError) as info:
        Keyring.parse(text)
    assert fragment in str(info.value)
    assert "SNAPTRADE_ENCRYPTION_KEYS" in str(info.value)
    assert KEY_A not in str(info.value)
    assert KEY_B not in str(info.value)


def test_generate_rotated_and_export_round_trip() -> None:
    first = Keyring.generate()
    assert first.versions == ("v1",)
    second = first.rotated()
    assert second.versions == ("v2", "v1")
    assert second.key("v1") == first.key("v1")
    assert second.key("v2") != first.key("v1")
    again = Keyring.parse(second.export())
    assert again.versions == second.versions
    assert all(again.key(v) == second.key(v) for v in second.versions)
    assert second.rotated("blue").current_version == "blue"


def test_keyring_text_shows_no_key_material() -> None:
    keyring = Keyring.parse(f"v2:{KEY_B},v1:{KEY_A}")
    for text in (repr(keyring), str(keyring), f"{keyring}"):
        assert text == "Keyring(versions=['v2', 'v1'])"
    # Keys are registered for redaction, so any accidental log of the export is masked.
    assert KEY_A not in redact(f"leak {keyring.export()}")


def test_keyring_refuses_pickling() -> None:
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(Keyring.generate())


def test_seal_then_open_round_trips_and_hides_the_secret() -> None:
    codec = SecretCodec(Keyring.generate())
    version, blob = codec.seal("user-1", "the-user-secret-ü")
    assert version == "v1"
    assert b"the-user-secret" not in blob
    assert codec.open("user-1", version, blob) == "the-user-secret-ü"
    # A fresh nonce every time: equal secrets never give equal ciphertexts.
    assert codec.seal("user-1", "the-user-secret-ü")[1] != blob


def test_associated_data_binds_purpose_and_user() -> None:
    assert associated_data("u1") == ASSOCIATED_DATA_PREFIX + b"u1"
    assert ASSOCIATED_DATA_PREFIX.startswith(b"aims-snaptrade/user-secret/")


def test_ciphertext_moved_to_another_user_fails_to_decrypt() -> None:
    codec = SecretCodec(Keyring.generate())
    version, blob = codec.seal("alice", "alice-secret-123456")
    with pytest.raises(SnapTradeSecretDecryptionError, match="copied from another user's row"):
        codec.open("bob", version, blob)


def test_tampered_ciphertext_fails_to_decrypt() -> None:
    codec = SecretCodec(Keyring.generate())
    version, blob = codec.seal("alice", "alice-secret-123456")
    for position in (1, 13, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(SnapTradeSecretDecryptionError, match="failed authentication"):
            codec.open("alice", version, bytes(tampered))


def test_wrong_key_under_the_same_version_fails_to_decrypt() -> None:
    version, blob = SecretCodec(Keyring.generate("v1")).seal("alice", "alice-secret-123456")
    with pytest.raises(SnapTradeSecretDecryptionError, match="failed authentication with key 'v1'"):
        SecretCodec(Keyring.generate("v1")).open("alice", version, blob)


def test_missing_key_version_names_the_version_and_the_fix() -> None:
    version, blob = SecretCodec(Keyring.generate("v1")).seal("alice", "alice-secret-123456")
    with pytest.raises(SnapTradeSecretDecryptionError) as info:
        SecretCodec(Keyring.generate("v7")).open("alice", version, blob)
    assert "'v1', which is not in the keyring (have v7)" in str(info.value)
    assert "SNAPTRADE_ENCRYPTION_KEYS" in str(info.value)


def test_no_keyring_cannot_read_encrypted_rows() -> None:
    version, blob = SecretCodec(Keyring.generate("v1")).seal("alice", "alice-secret-123456")
    with pytest.raises(SnapTradeSecretDecryptionError, match="no keyring is configured"):
        SecretCodec(None).open("alice", version, blob)


def test_encrypted_codec_refuses_plaintext_rows() -> None:
    version, blob = SecretCodec(None).seal("alice", "alice-secret-123456")
    assert (version, blob) == (PLAINTEXT_VERSION, b"alice-secret-123456")
    with pytest.raises(SnapTradeSecretDecryptionError, match="rotate-keys"):
        SecretCodec(Keyring.generate()).open("alice", version, blob)


@pytest.mark.parametrize("blob", [b"", b"\x01short", b"\x02" + bytes(40)])
def test_malformed_blobs_are_typed_errors(blob: bytes) -> None:
    with pytest.raises(SnapTradeSecretDecryptionError, match="malformed"):
        SecretCodec(Keyring.generate()).open("alice", "v1", blob)


def test_decrypted_secret_is_registered_for_redaction() -> None:
    codec = SecretCodec(Keyring.generate())
    version, blob = codec.seal("alice", "fresh-secret-registered-on-read")
    assert codec.open("alice", version, blob) == "fresh-secret-registered-on-read"
    assert redact("x fresh-secret-registered-on-read y") == "x *** y"


def test_codec_repr_shows_no_key() -> None:
    keyring = Keyring.parse(f"v1:{KEY_A}")
    assert repr(SecretCodec(keyring)) == "SecretCodec(encrypted=True, current_version='v1')"
