"""The daemon's view of people: profiles from stored records, petnames and the own profile from the home.

:class:`PeopleBook` keeps a :class:`~meshnode.people.Profiles` built from the
store's ``profile`` records on first use, then kept current by ingest's
``on_stored`` (profiles are few: one per author) and rebuilt after records
leave the store. Petnames and the own profile come from ``people.cbor``
(:mod:`meshnode.petnames`); this node's own writes go through here so the
cache and the file never disagree. Labels and PEER arguments follow
:mod:`meshnode.people`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from meshnode import people as ppl
from meshnode.petnames import PeopleFile, load_people, set_petname, set_profile
from meshnode.records import ProfileBody, Record


class ProfileSource(Protocol):
    def records_of_type(self, type: str, *, swarm: bytes | None = None) -> list[Record]: ...


class PeopleBook:
    """Names for keys, as this node gives them (see :mod:`meshnode.people`)."""

    def __init__(self, store: ProfileSource, path: Path, me: bytes) -> None:
        self._store = store
        self._path = path
        self.me = me
        self._profiles: ppl.Profiles | None = None
        self._file: PeopleFile = load_people(path)

    # --- listening to the store ------------------------------------------------

    def attach(self, node: Any) -> None:
        node.ingest.on_stored.append(self.on_stored)
        node.on_removed.append(self.invalidate)

    def detach(self, node: Any) -> None:
        if self.on_stored in node.ingest.on_stored:
            node.ingest.on_stored.remove(self.on_stored)
        if self.invalidate in node.on_removed:
            node.on_removed.remove(self.invalidate)

    def on_stored(self, record: Record) -> None:
        if self._profiles is not None and record.type == "profile":
            self._profiles.add(record)

    def invalidate(self) -> None:
        self._profiles = None

    @property
    def profiles(self) -> ppl.Profiles:
        if self._profiles is None:
            self._profiles = ppl.Profiles.from_records(self._store.records_of_type("profile"))
        return self._profiles

    # --- names -------------------------------------------------------------------

    @property
    def petnames(self) -> dict[bytes, str]:
        return self._file.petnames

    @property
    def own(self) -> ProfileBody:
        """This node's own profile as ``people.cbor`` holds it."""
        return self._file.profile

    def label(self, key: bytes) -> str:
        return ppl.label(key, self.me, self.profiles, self._file.petnames)

    def resolve(self, text: str, known: Iterable[bytes] = ()) -> bytes:
        return ppl.resolve_peer(text, known, self.profiles, self._file.petnames)

    def set_petname(self, key: bytes, name: str) -> None:
        self._file = set_petname(self._path, key, name)

    def set_own(self, *, nickname: str | None, bio: str | None) -> ProfileBody:
        self._file = set_profile(self._path, nickname=nickname, bio=bio)
        return self._file.profile

    def own_latest(self, swarm: bytes) -> ProfileBody | None:
        """The body of this node's newest profile record in ``swarm``, if it published one there."""
        mine = ppl.Profiles.from_records(r for r in self._store.records_of_type("profile", swarm=swarm))
        p = mine.get(self.me)
        return ProfileBody(nickname=p.nickname, bio=p.bio) if p is not None else None
