"""Swarms and invite codes (pure: no I/O).

A swarm is one neighbourhood: a human name, a random 32-byte id that every
record of the swarm names, and, for a *private* swarm, a 32-byte key that
libp2p's private-network layer (pnet) uses, so only key holders can connect.

An invite code is one copy-pasteable string that holds all a newcomer needs:
the swarm's id, name and key (if private), and the inviter's dialable
addresses. Layout::

    "mesh1" + base58btc( canonical CBOR {
        "v": 1, "name": str, "id": 32 bytes, "key": 32 bytes (private only),
        "addrs": [multiaddr text with /p2p/<peer id>, ...] }
      + BLAKE2b-4 checksum of the CBOR bytes )

The checksum catches typos and truncation when codes are pasted by hand; the
code is a capability, not a signature: whoever holds it can join.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import base58

from meshnode import wire
from meshnode.errors import BadValue, DecodeError, InviteError
from meshnode.ids import short_id

SWARM_ID_SIZE = 32
SWARM_KEY_SIZE = 32
MAX_SWARM_NAME = 40
MAX_INVITE_ADDRS = 8
MAX_ADDR_LEN = 200
INVITE_PREFIX = "mesh1"
_CHECKSUM = 4
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
_ADDR_RE = re.compile(r"^(/[A-Za-z0-9.\-_:]+)+$")


@dataclass(frozen=True)
class Swarm:
    """One neighbourhood swarm."""

    name: str
    id: bytes
    key: bytes | None = None

    def __post_init__(self) -> None:
        check_swarm_name(self.name)
        if not isinstance(self.id, bytes) or len(self.id) != SWARM_ID_SIZE:
            raise BadValue(f"swarm id: expected {SWARM_ID_SIZE} bytes")
        if self.key is not None and (not isinstance(self.key, bytes) or len(self.key) != SWARM_KEY_SIZE):
            raise BadValue(f"swarm key: expected {SWARM_KEY_SIZE} bytes")

    def __repr__(self) -> str:  # never print the key
        return f"Swarm(name={self.name!r}, id={short_id(self.id)}, private={self.private})"

    @property
    def private(self) -> bool:
        return self.key is not None

    @property
    def topic(self) -> str:
        """The GossipSub topic of the swarm's records."""
        return f"/meshnode/swarm/{self.id.hex()}/records/1"

    @property
    def psk_hex(self) -> str | None:
        """The pnet pre-shared key as the 64-hex-digit string libp2p wants."""
        return self.key.hex() if self.key is not None else None

    @classmethod
    def create(cls, name: str, *, private: bool = False) -> Swarm:
        """A new swarm with a fresh random id (and key, if private)."""
        return cls(
            name=name,
            id=os.urandom(SWARM_ID_SIZE),
            key=os.urandom(SWARM_KEY_SIZE) if private else None,
        )


def check_swarm_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_SWARM_NAME or not _NAME_RE.match(name):
        raise BadValue(
            f"swarm name: expected 1-{MAX_SWARM_NAME} letters, digits, spaces, '.', '_' or '-',"
            f" found {name!r}"
        )
    return name


@dataclass(frozen=True)
class Invite:
    """What an invite code carries: the swarm and where to find the inviter."""

    swarm: Swarm
    addrs: tuple[str, ...]


def encode_invite(invite: Invite) -> str:
    """The invite code for ``invite`` (see the module docstring for the layout)."""
    if not invite.addrs:
        raise BadValue("an invite needs at least one dialable address of the inviter")
    for addr in invite.addrs:
        _check_addr(addr, BadValue)
    payload: dict[str, object] = {
        "v": 1,
        "name": invite.swarm.name,
        "id": invite.swarm.id,
        "addrs": list(invite.addrs[:MAX_INVITE_ADDRS]),
    }
    if invite.swarm.key is not None:
        payload["key"] = invite.swarm.key
    data = wire.encode(payload)
    checksum = hashlib.blake2b(data, digest_size=_CHECKSUM).digest()
    return INVITE_PREFIX + base58.b58encode(data + checksum).decode("ascii")


def decode_invite(code: str) -> Invite:
    """Parse an invite code, or raise :class:`InviteError` saying what is wrong."""
    if not isinstance(code, str):
        raise InviteError("expected an invite code as text")
    text = "".join(code.split())  # tolerate line breaks and spaces from pasting
    if not text.startswith(INVITE_PREFIX):
        raise InviteError(f"an invite code starts with {INVITE_PREFIX!r}; check you copied all of it")
    if len(text) > 4096:
        raise InviteError("invite code is too long to be one")
    try:
        raw = base58.b58decode(text[len(INVITE_PREFIX) :])
    except ValueError:
        raise InviteError("invite code has characters that cannot be in one; copy it again") from None
    if len(raw) <= _CHECKSUM:
        raise InviteError("invite code is truncated; copy it again")
    data, checksum = raw[:-_CHECKSUM], raw[-_CHECKSUM:]
    if hashlib.blake2b(data, digest_size=_CHECKSUM).digest() != checksum:
        raise InviteError("invite code checksum does not match: it was mistyped or cut short")
    try:
        value = wire.decode(data, max_size=4096, max_depth=3)
    except DecodeError as exc:
        raise InviteError(f"invite code content is malformed: {exc}") from None
    if not isinstance(value, dict) or value.get("v") != 1:
        raise InviteError("invite code is of an unknown version; upgrade meshnode")
    if not set(value) <= {"v", "name", "id", "key", "addrs"}:
        raise InviteError("invite code has unknown fields; upgrade meshnode")
    addrs = value.get("addrs")
    if not isinstance(addrs, list) or not 1 <= len(addrs) <= MAX_INVITE_ADDRS:
        raise InviteError(f"invite code: expected 1-{MAX_INVITE_ADDRS} addresses")
    for addr in addrs:
        _check_addr(addr, InviteError)
    try:
        swarm = Swarm(name=value.get("name"), id=value.get("id"), key=value.get("key"))  # type: ignore[arg-type]
    except BadValue as exc:
        raise InviteError(f"invite code: {exc}") from None
    return Invite(swarm=swarm, addrs=tuple(addrs))


def _check_addr(addr: object, error: type[BadValue]) -> None:
    if (
        not isinstance(addr, str)
        or len(addr) > MAX_ADDR_LEN
        or not _ADDR_RE.match(addr)
        or "/p2p/" not in addr
    ):
        raise error(f"expected a multiaddr ending in /p2p/<peer id>, found {addr!r}")
