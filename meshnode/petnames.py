"""The node's local people file, ``people.cbor`` in the home (``Home.people``).

One small canonical-CBOR map, mode 0600, replaced atomically (temp file,
fsync, rename) on every change::

    {"v": 1,
     "petnames": {<key, 64 hex digits>: "Bob from no. 12", ...},   # yours, never published
     "profile": {"nickname": "Alice", "bio": "..."}}        # your own profile

``petnames`` are the names you gave peers (``meshnode name``); ``profile``
is this node's own profile (``meshnode init --nickname``, ``meshnode profile
set``), which the daemon publishes as a ``profile`` record into its swarms.
A missing file is empty; a corrupt one is a :class:`~meshnode.errors.ConfigError`
naming the file (nothing is overwritten until it is fixed or removed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from meshnode import wire
from meshnode.atomicfile import write_atomically
from meshnode.errors import ConfigError, MeshError
from meshnode.identity import KEY_SIZE
from meshnode.people import MAX_PETNAME, check_bio, check_name, check_nickname
from meshnode.records import ProfileBody

MAX_PETNAMES = 10_000


@dataclass(frozen=True)
class PeopleFile:
    """What ``people.cbor`` holds."""

    petnames: dict[bytes, str] = field(default_factory=dict)
    profile: ProfileBody = field(default_factory=ProfileBody)


def load_people(path: Path) -> PeopleFile:
    """Read the people file at ``path``; a missing file gives an empty one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return PeopleFile()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return _from_value(wire.decode(data))
    except (MeshError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is corrupt ({exc}): fix or remove it") from None


def _from_value(value: Any) -> PeopleFile:
    if not isinstance(value, dict) or value.get("v") != 1 or set(value) - {"v", "petnames", "profile"}:
        raise ValueError("expected a map with v=1, petnames and profile")
    pets = value.get("petnames", {})
    if not isinstance(pets, dict) or len(pets) > MAX_PETNAMES:
        raise ValueError("bad petnames")
    petnames: dict[bytes, str] = {}
    for key, name in pets.items():
        if not isinstance(key, str) or len(key) != 2 * KEY_SIZE:
            raise ValueError("bad petname key")
        petnames[bytes.fromhex(key)] = check_name(name, "petname", MAX_PETNAME)
    prof = value.get("profile", {})
    if not isinstance(prof, dict) or set(prof) - {"nickname", "bio"}:
        raise ValueError("bad profile")
    nickname = prof.get("nickname", "")
    profile = ProfileBody(
        nickname=check_nickname(nickname) if nickname else "", bio=check_bio(prof.get("bio", ""))
    )
    return PeopleFile(petnames=petnames, profile=profile)


def save_people(path: Path, people: PeopleFile) -> None:
    """Write ``people`` to ``path`` atomically, mode 0600."""
    profile = {k: v for k, v in (("nickname", people.profile.nickname), ("bio", people.profile.bio)) if v}
    data = wire.encode(
        {"v": 1, "petnames": {k.hex(): v for k, v in people.petnames.items()}, "profile": profile}
    )
    write_atomically(path, data)


def set_petname(path: Path, key: bytes, name: str) -> PeopleFile:
    """Name ``key`` ``name`` (an empty ``name`` removes its petname); the file as saved."""
    people = load_people(path)
    petnames = dict(people.petnames)
    if name.strip():
        petnames[key] = check_name(name, "petname", MAX_PETNAME)
        if len(petnames) > MAX_PETNAMES:
            raise ConfigError(f"at most {MAX_PETNAMES} petnames: remove some first")
    else:
        petnames.pop(key, None)
    people = replace(people, petnames=petnames)
    save_people(path, people)
    return people


def set_profile(path: Path, *, nickname: str | None = None, bio: str | None = None) -> PeopleFile:
    """Change the own profile's nickname and/or bio (None: keep it); the file as saved."""
    people = load_people(path)
    profile = people.profile
    if nickname is not None:
        profile = replace(profile, nickname=check_nickname(nickname))
    if bio is not None:
        profile = replace(profile, bio=check_bio(bio))
    people = replace(people, profile=profile)
    save_people(path, people)
    return people
