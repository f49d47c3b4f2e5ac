"""People: who a peer key is, as this node names it (pure).

A person is an Ed25519 key. Three things can name one, in this order:

1. ``me``: this node's own key is always labelled ``"you"``.
2. A **petname**: a name *you* gave the key on this node
   (``meshnode name PEER "Bob from no. 12"``). It is local, never published,
   and overrides whatever the key claims; the label is the petname as given.
3. A **nickname**: what the key claims about itself in its newest profile
   record. A nickname is a claim, not an identity (anyone can call
   themselves "Bob"), so its label always carries the key's short id:
   ``"Bob (x7k2q9)"``. Two keys with the same nickname therefore get
   different labels.

Without either, the label is the short id alone.

**Short id** (:func:`short_peer`): the last :data:`SHORT_PEER` characters
of the base58 peer id. :func:`resolve_peer` accepts it back (and any longer
suffix of the peer id, and the whole label ``"Bob (x7k2q9)"``).

**Profiles** (:class:`Profiles`): the latest ``profile`` record of each
author, whatever swarm it came through and whatever order records arrived
in: the one with the highest ``(seq, ts, id)``. Building from any
permutation of the same records gives the same result.

**Remote text** is shown literally: a label never interprets what a
nickname contains. It is bounded (at most :data:`MAX_NICKNAME` characters)
and folded onto one line (runs of whitespace become one space); the CLI
escapes what else is not printable. What this node publishes as its own
nickname is checked first by :func:`check_nickname` (one line of visible
text, no control, direction or zero-width characters, not empty, at most
:data:`MAX_NICKNAME` characters), as titles are.

**Resolving** (:func:`resolve_peer`): a PEER argument may be a full peer id
(``12D3KooW…``), the key as 64 hex digits, a petname, a nickname, a short id
(a suffix of at least :data:`MIN_SUFFIX` characters of a known peer id) or a
whole label. A petname or nickname that names several keys is ambiguous:
:class:`~meshnode.errors.BadValue` lists the labels to choose from and says
what to type instead; so does a name nobody has (it may be a mistyped peer id).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from meshnode.errors import BadValue
from meshnode.identity import key_of_peer_id, peer_id_of
from meshnode.records import MAX_BIO, MAX_NICKNAME, ProfileBody, Record

#: How many trailing characters of the peer id a label shows.
SHORT_PEER = 6
#: The shortest peer-id suffix :func:`resolve_peer` accepts.
MIN_SUFFIX = 6
#: The longest petname.
MAX_PETNAME = 60
YOU = "you"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INVISIBLE_RE = re.compile("[\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]")
_LABEL_RE = re.compile(r"^(?P<name>.*?)\s*\((?P<suffix>[1-9A-HJ-NP-Za-km-z]+)\)$")


def short_peer(key: bytes) -> str:
    """The short id of ``key``: the last :data:`SHORT_PEER` characters of its peer id."""
    return peer_id_of(key)[-SHORT_PEER:]


def one_line(text: str, max_len: int = MAX_NICKNAME) -> str:
    """Remote text bounded for a label: whitespace runs folded to one space, at most ``max_len`` long."""
    return " ".join(text.split())[:max_len]


def check_name(text: object, what: str, max_len: int) -> str:
    """A name this node sets (nickname or petname): one line of visible text, stripped, not empty."""
    if not isinstance(text, str):
        raise BadValue(f"{what}: expected text, found {type(text).__name__}")
    name = text.strip()
    if not name:
        raise BadValue(f"{what}: expected some visible text, found {text!r}")
    if len(name) > max_len:
        raise BadValue(f"{what}: expected at most {max_len} characters, found {len(name)}")
    if _CONTROL_RE.search(name) or _INVISIBLE_RE.search(name):
        raise BadValue(
            f"{what}: one line of visible text, found {name!r}"
            " (no line breaks, tabs, control, direction or zero-width characters)"
        )
    return name


def check_nickname(text: object) -> str:
    """The nickname this node publishes (see :func:`check_name`)."""
    return check_name(text, "nickname", MAX_NICKNAME)


def check_bio(text: object) -> str:
    """The bio this node publishes: at most :data:`MAX_BIO` characters, no control characters but newlines."""
    if not isinstance(text, str):
        raise BadValue(f"bio: expected text, found {type(text).__name__}")
    bio = text.strip()
    if len(bio) > MAX_BIO:
        raise BadValue(f"bio: expected at most {MAX_BIO} characters, found {len(bio)}")
    if re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", bio) or _INVISIBLE_RE.search(bio):
        raise BadValue("bio: control, direction or zero-width characters are not allowed")
    return bio


@dataclass(frozen=True)
class Profile:
    """One author's profile as its newest profile record states it."""

    author: bytes
    nickname: str
    bio: str
    seq: int
    ts: int
    record: bytes  # the profile record's id

    @property
    def rank(self) -> tuple[int, int, bytes]:
        return (self.seq, self.ts, self.record)


class Profiles:
    """The latest profile per author (highest ``(seq, ts, id)``), independent of arrival order."""

    def __init__(self) -> None:
        self._latest: dict[bytes, Profile] = {}

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> Profiles:
        profiles = cls()
        for r in records:
            profiles.add(r)
        return profiles

    def add(self, record: Record) -> bool:
        """Take ``record`` into account; True when it is now its author's latest profile."""
        if record.type != "profile" or not isinstance(record.body, ProfileBody):
            return False
        new = Profile(record.author, record.body.nickname, record.body.bio, record.seq, record.ts, record.id)
        old = self._latest.get(record.author)
        if old is not None and old.rank >= new.rank:
            return False
        self._latest[record.author] = new
        return True

    def get(self, key: bytes) -> Profile | None:
        return self._latest.get(key)

    def nickname(self, key: bytes) -> str:
        """``key``'s claimed nickname, one line and bounded ("" when it has none)."""
        p = self._latest.get(key)
        return one_line(p.nickname) if p is not None else ""

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._latest.values())

    def __len__(self) -> int:
        return len(self._latest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profiles) and self._latest == other._latest

    __hash__ = None  # type: ignore[assignment]  # mutable


def label(key: bytes, me: bytes, profiles: Profiles, petnames: Mapping[bytes, str]) -> str:
    """How this node names ``key``: "you", a petname, "Nick (abc123)" or the short id."""
    if key == me:
        return YOU
    pet = petnames.get(key)
    if pet:
        return one_line(pet, MAX_PETNAME)
    nick = profiles.nickname(key)
    if nick:
        return f"{nick} ({short_peer(key)})"
    return short_peer(key)


def resolve_peer(
    text: str, known: Iterable[bytes], profiles: Profiles, petnames: Mapping[bytes, str]
) -> bytes:
    """The key a PEER argument names (see the module's docstring), or BadValue saying what to type."""
    if not isinstance(text, str):
        raise BadValue(f"peer: expected text, found {type(text).__name__}")
    wanted = text.strip()
    if not wanted:
        raise BadValue("peer: expected a peer id, a nickname, a petname or a short id, found nothing")
    try:
        return key_of_peer_id(wanted)
    except BadValue:
        pass
    keys = set(known) | {p.author for p in profiles} | set(petnames)

    def pick(matches: set[bytes], what: str) -> bytes | None:
        if len(matches) == 1:
            return next(iter(matches))
        if len(matches) > 1:
            choices = sorted(
                f"{profiles.nickname(k) or petnames.get(k, '')} ({peer_id_of(k)})" for k in matches
            )
            raise BadValue(
                f"{what} {wanted!r} names {len(matches)} people: {', '.join(choices)};"
                " type the peer id (or its last characters) of the one you mean,"
                ' or give one a petname with: meshnode name PEER "NAME"'
            )
        return None

    folded = wanted.casefold()
    found = pick(
        {k for k, name in petnames.items() if one_line(name, MAX_PETNAME).casefold() == folded}, "petname"
    )
    if found is None:
        found = pick({p.author for p in profiles if one_line(p.nickname).casefold() == folded}, "nickname")
    if found is not None:
        return found
    suffix = wanted
    labelled = _LABEL_RE.match(wanted)
    if labelled:
        suffix = labelled.group("suffix")
    if len(suffix) >= MIN_SUFFIX:
        found = pick({k for k in keys if peer_id_of(k).endswith(suffix)}, "short id")
        if found is not None:
            return found
    raise BadValue(
        f"no one called {wanted!r} on this node: give a peer id (12D3KooW…), a nickname,"
        f" a petname, or the {SHORT_PEER} characters in brackets after a name (as meshnode shows it)"
    )
