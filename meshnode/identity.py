"""A node's identity: one Ed25519 key that signs records and is its libp2p peer id.

Pure: building an :class:`Identity` from a 32-byte seed, and converting
between author keys and libp2p peer ids, touch no files. Loading and creating
the key file lives in :mod:`meshnode.keyfile`.

A libp2p peer id for an Ed25519 key is the *identity* multihash of the
protobuf-encoded public key (``KeyType = Ed25519 (1)``, ``Data = key``),
written in base58btc, so it starts with ``12D3KooW``. It is short enough to
be inlined, so the author key can be read back out of a peer id.
"""

from __future__ import annotations

from dataclasses import dataclass

import base58
import nacl.signing

from meshnode.errors import BadValue

SEED_SIZE = 32
KEY_SIZE = 32
# protobuf PublicKey{Type: Ed25519, Data: <32 bytes>} = 08 01 12 20 <key>
_PB_PREFIX = b"\x08\x01\x12\x20"
# identity multihash: code 0x00, length 0x24 (36 bytes of protobuf)
_MH_PREFIX = b"\x00\x24"


@dataclass(frozen=True)
class Identity:
    """The node's signing key with its public forms."""

    seed: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.seed, bytes) or len(self.seed) != SEED_SIZE:
            raise BadValue(f"expected a {SEED_SIZE}-byte Ed25519 seed")

    def __repr__(self) -> str:  # never print the seed
        return f"Identity(peer_id={self.peer_id!r})"

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key: the ``author`` of this node's records."""
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        """The libp2p peer id (base58btc) of this key."""
        return peer_id_of(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(seed=bytes(nacl.signing.SigningKey.generate()._seed))


def peer_id_of(public_key: bytes) -> str:
    """The libp2p peer id (base58btc) for a 32-byte Ed25519 public key."""
    if not isinstance(public_key, bytes) or len(public_key) != KEY_SIZE:
        raise BadValue(f"expected a {KEY_SIZE}-byte Ed25519 public key")
    return base58.b58encode(_MH_PREFIX + _PB_PREFIX + public_key).decode("ascii")


def key_of_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside a libp2p peer id, or :class:`BadValue`.

    Also accepts the key itself as 64 hex digits, which is how short ids in
    meshnode's output can be completed.
    """
    text = peer_id.strip()
    if len(text) == 2 * KEY_SIZE and all(c in "0123456789abcdefABCDEF" for c in text):
        return bytes.fromhex(text)
    try:
        raw = base58.b58decode(text)
    except Exception:
        raw = b""
    if len(raw) != 2 + 4 + KEY_SIZE or not raw.startswith(_MH_PREFIX + _PB_PREFIX):
        raise BadValue(f"expected an Ed25519 libp2p peer id (starts with 12D3KooW), found {peer_id!r}")
    return raw[len(_MH_PREFIX) + len(_PB_PREFIX) :]
