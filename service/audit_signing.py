"""Signatures on the audit log, with a key the database does not hold.

The hash chain (``service.audit_log``) shows that entries were not altered *after the
fact* by someone who could not recompute it; whoever can write the tables can rewrite the
tail and recompute every hash. Each entry's hash is therefore also signed with an Ed25519
key that only the service's processes hold (``UNLEARN_AUDIT_SIGNING_KEY`` or
``UNLEARN_AUDIT_SIGNING_KEY_FILE``, never stored in the database): rewriting an entry needs
that key. Because an entry's hash covers the previous entry's hash, one valid signature
vouches for the whole chain up to it.

What a signature cannot show alone is that nothing was cut off the end: a verifier that
holds a signed entry from outside the database (a certificate, or the head printed by
``unlearnd audit verify``) checks that the chain still contains it.

The key is 32 random bytes, base64 (``unlearnd audit keygen`` prints one and its public
key); its id is the first 16 hex digits of the public key's SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["Signer", "PublicKey", "generate", "message", "decode_key"]

ALGORITHM = "Ed25519"
_DOMAIN = b"unlearnd audit log v1\n"  # a signature over an entry means nothing elsewhere


def message(entry_id: int, entry_hash: str) -> bytes:
    return _DOMAIN + f"{entry_id}\n{entry_hash}".encode("ascii")


def decode_key(text: str) -> bytes:
    """32 bytes from base64 (standard or URL-safe, padding optional); ValueError otherwise,
    never quoting the text."""
    return _decoded(text, 32, "an Ed25519 key")


def decode_signature(text: str) -> bytes:
    return _decoded(text, 64, "an Ed25519 signature")


def _decoded(text: str, size: int, what: str) -> bytes:
    cleaned = text.strip().replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != size:
        raise ValueError(f"{len(raw)} bytes where {what} has {size}")
    return raw


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        return cls(decode_key(text))

    @property
    def key_id(self) -> str:
        return _key_id(self.raw)

    @property
    def text(self) -> str:
        return _b64(self.raw)

    def verifies(self, entry_id: int, entry_hash: str, signature: str) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(
                decode_signature(signature), message(entry_id, entry_hash)
            )
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """The service's private key (from the settings)."""

    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = PublicKey(public)

    def sign(self, entry_id: int, entry_hash: str) -> str:
        return _b64(self._key.sign(message(entry_id, entry_hash)))


def generate() -> tuple[str, str]:
    """A new key: (private key, public key), both base64 without padding."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return _b64(seed), Signer(seed).public_key.text
