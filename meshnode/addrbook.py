"""The address book: every peer met in each swarm, where it was, and when that worked (pure).

A node that restarts, or whose inviter is gone, finds its swarm again from
this book: it redials the peers it knew, most recently good first, with
back-off, and it shares what it knows with other members (peer exchange).
Time is a parameter (milliseconds), so the book is tested without clocks.

Rules
    * Entries are per swarm: ``(swarm id, peer id) -> addresses``. A peer in
      two swarms has two entries; leaving a swarm forgets its entries.
    * An address is a multiaddr without ``/p2p/<peer>`` (a relayed one keeps
      its relay's). Each remembers where it came from (``source``), when it
      was last learned, and when a dial to it last worked (``last_ok``).
    * A peer remembers when it was last connected (either direction), its
      consecutive failed dials, and when it may next be dialled: back-off
      doubles from ``base_backoff_ms`` up to ``max_backoff_ms`` per failure
      and resets on any connection; a newly learned address makes the peer
      due at once (the failure count stays).
    * Bounded: at most :data:`MAX_ADDRS` addresses a peer (the oldest never
      good one goes first), :data:`MAX_PEERS` peers a swarm. When a swarm is
      full, a peer never connected makes room only by evicting another never
      connected one (the oldest learned), so hearsay (peer exchange, a
      hostile member's junk) can never push out peers that worked.
    * Expiry: an address not good for :data:`EXPIRE_MS` and not learned again
      within it goes; so does a peer left without addresses.
    * Order to dial (:meth:`AddressBook.due`): peers last connected most
      recently first, never-connected ones after (newest learned first);
      within a peer, addresses that worked (most recent first), then the
      rest by :func:`meshnode.addrs.rank`: public, relayed, private, loopback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshnode.addrs import rank, split_tcp, strip_peer
from meshnode.errors import DecodeError

MAX_ADDRS = 8
MAX_PEERS = 256
MAX_ADDR_LEN = 200
MAX_PEER_LEN = 64
EXPIRE_MS = 30 * 24 * 3600 * 1000
SOURCES = ("invite", "connect", "bootstrap", "lan", "px", "identify", "dialled")


def valid_addr(addr: object) -> bool:
    """A TCP multiaddr (``/ip4|ip6/…/tcp/…``), maybe relayed (``…/p2p/<relay>/p2p-circuit``)."""
    if not isinstance(addr, str) or not 0 < len(addr) <= MAX_ADDR_LEN or not addr.isascii():
        return False
    base = addr
    if addr.endswith("/p2p-circuit"):
        base = addr[: -len("/p2p-circuit")]
        head, sep, relay = base.rpartition("/p2p/")
        if not sep or not valid_peer_text(relay):
            return False
        base = head
    split = split_tcp(base)
    return split is not None and split[3] == "" and split[2] != 0 and not split[1].is_unspecified


def valid_peer_text(peer: object) -> bool:
    """Text that can be a peer id: 1 to 64 base58 characters (ASCII letters and digits but 0, O, I, l)."""
    return (
        isinstance(peer, str)
        and 0 < len(peer) <= MAX_PEER_LEN
        and peer.isascii()
        and peer.isalnum()
        and not any(c in "0OIl" for c in peer)
    )


@dataclass
class _Addr:
    source: str
    learned: int
    last_ok: int | None = None


@dataclass
class _Peer:
    addrs: dict[str, _Addr] = field(default_factory=dict)
    learned: int = 0
    last_seen: int | None = None  # last connected, either direction
    failures: int = 0
    next_try: int = 0


@dataclass(frozen=True)
class BookEntry:
    """One peer of one swarm, as the book knows it (addresses in dial order)."""

    peer: str
    addrs: tuple[str, ...]
    last_seen: int | None
    failures: int
    next_try: int


class AddressBook:
    """Peers per swarm with their addresses; see the module docstring for the rules."""

    def __init__(self, *, base_backoff_ms: int = 5_000, max_backoff_ms: int = 300_000) -> None:
        self.base_backoff_ms = base_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self._swarms: dict[bytes, dict[str, _Peer]] = {}
        self.changed = False  # set on every change; the owner clears it after saving

    # --- learning ----------------------------------------------------------------

    def learn(self, swarm: bytes, peer: str, addrs: Iterable[str], source: str, now: int) -> bool:
        """Remember ``addrs`` of ``peer`` in ``swarm``; False if nothing was kept.

        Invalid addresses are skipped; a ``/p2p/<id>`` suffix must name ``peer``.
        """
        if source not in SOURCES or not valid_peer_text(peer):
            return False
        clean = []
        for addr in addrs:
            if not isinstance(addr, str):
                continue
            base = strip_peer(addr)
            if base != addr and not addr.endswith(f"/p2p/{peer}"):
                continue
            if valid_addr(base) and base not in clean:
                clean.append(base)
        if not clean:
            return False
        peers = self._swarms.setdefault(swarm, {})
        entry = peers.get(peer)
        if entry is None:
            if not self._make_room(peers, now):
                return False
            entry = peers[peer] = _Peer(learned=now)
        for addr in clean[:MAX_ADDRS]:
            known = entry.addrs.get(addr)
            if known is None:
                entry.addrs[addr] = _Addr(source=source, learned=now)
                entry.next_try = min(entry.next_try, now)  # somewhere new to try: no need to wait
            else:
                known.learned = max(known.learned, now)
        while len(entry.addrs) > MAX_ADDRS:
            del entry.addrs[self._worst_addr(entry)]
        entry.learned = max(entry.learned, now)
        self.changed = True
        return True

    def connected(self, swarm: bytes, peer: str, now: int, *, addr: str | None = None) -> None:
        """``peer`` is connected in ``swarm`` now; ``addr`` is the address our dial used, if any."""
        peers = self._swarms.setdefault(swarm, {})
        entry = peers.get(peer)
        if entry is None:
            if not valid_peer_text(peer) or not self._make_room(peers, now, connected=True):
                return
            entry = peers[peer] = _Peer(learned=now)
        entry.last_seen = now
        entry.failures = 0
        entry.next_try = 0
        if addr is not None:
            base = strip_peer(addr)
            if valid_addr(base):
                known = entry.addrs.get(base)
                if known is None:
                    known = entry.addrs[base] = _Addr(source="dialled", learned=now)
                known.last_ok = now
                while len(entry.addrs) > MAX_ADDRS:
                    del entry.addrs[self._worst_addr(entry)]
        self.changed = True

    def dial_failed(self, swarm: bytes, peer: str, now: int) -> int:
        """Count a failed dial of ``peer``; returns the back-off in ms until it is due again."""
        entry = self._swarms.get(swarm, {}).get(peer)
        if entry is None:
            return 0
        entry.failures += 1
        delay: int = min(self.base_backoff_ms * 2 ** min(entry.failures - 1, 30), self.max_backoff_ms)
        entry.next_try = now + delay
        self.changed = True
        return delay

    def forget_swarm(self, swarm: bytes) -> None:
        if self._swarms.pop(swarm, None) is not None:
            self.changed = True

    def forget(self, swarm: bytes, peer: str) -> None:
        if self._swarms.get(swarm, {}).pop(peer, None) is not None:
            self.changed = True

    def expire(self, now: int) -> int:
        """Drop addresses and peers older than :data:`EXPIRE_MS`; how many peers went."""
        gone = 0
        for peers in self._swarms.values():
            for pid in list(peers):
                entry = peers[pid]
                for addr, info in list(entry.addrs.items()):
                    if max(info.learned, info.last_ok or 0) + EXPIRE_MS < now:
                        del entry.addrs[addr]
                        self.changed = True
                if not entry.addrs and (entry.last_seen or entry.learned) + EXPIRE_MS < now:
                    del peers[pid]
                    gone += 1
                    self.changed = True
        return gone

    # --- reading -----------------------------------------------------------------

    def swarms(self) -> list[bytes]:
        return list(self._swarms)

    def peers(self, swarm: bytes) -> list[str]:
        return list(self._swarms.get(swarm, {}))

    def entry(self, swarm: bytes, peer: str) -> BookEntry | None:
        entry = self._swarms.get(swarm, {}).get(peer)
        return None if entry is None else self._view(peer, entry)

    def due(self, swarm: bytes, now: int, *, exclude: Iterable[str] = ()) -> list[BookEntry]:
        """Peers of ``swarm`` that may be dialled now, in the order to dial them."""
        skip = set(exclude)
        peers = self._swarms.get(swarm, {})
        ready = [(pid, e) for pid, e in peers.items() if pid not in skip and e.next_try <= now and e.addrs]
        ready.sort(key=lambda item: (item[1].last_seen is None, -(item[1].last_seen or item[1].learned)))
        return [self._view(pid, e) for pid, e in ready]

    def shareable(
        self,
        swarm: bytes,
        now: int,
        *,
        limit: int = 32,
        exclude: Iterable[str] = (),
        max_age_ms: int = EXPIRE_MS,
    ) -> list[BookEntry]:
        """Peers worth telling another member about: connected within ``max_age_ms``, newest first."""
        skip = set(exclude)
        peers = self._swarms.get(swarm, {})
        good = [
            (pid, e)
            for pid, e in peers.items()
            if pid not in skip and e.addrs and e.last_seen is not None and e.last_seen + max_age_ms >= now
        ]
        good.sort(key=lambda item: -(item[1].last_seen or 0))
        return [self._view(pid, e) for pid, e in good[:limit]]

    # --- persistence -------------------------------------------------------------

    def to_value(self) -> dict[str, Any]:
        """A CBOR-ready value of the whole book (see :meth:`from_value`)."""
        swarms = []
        for sid, peers in self._swarms.items():
            entries = []
            for pid, e in peers.items():
                item: dict[str, Any] = {
                    "p": pid,
                    "l": e.learned,
                    "f": e.failures,
                    "n": e.next_try,
                    "a": [_addr_value(addr, info) for addr, info in e.addrs.items()],
                }
                if e.last_seen is not None:
                    item["c"] = e.last_seen
                entries.append(item)
            swarms.append({"s": sid, "peers": entries})
        return {"v": 1, "swarms": swarms}

    @classmethod
    def from_value(cls, value: object, **kwargs: int) -> AddressBook:
        """Rebuild a book from :meth:`to_value`'s output; raise :class:`DecodeError` if it is not one."""
        book = cls(**kwargs)
        try:
            if not isinstance(value, Mapping) or value.get("v") != 1:
                raise DecodeError("address book: unknown version")
            for sw in value["swarms"]:
                sid = sw["s"]
                if not isinstance(sid, bytes) or len(sid) != 32:
                    raise DecodeError("address book: bad swarm id")
                peers = book._swarms.setdefault(sid, {})
                for item in sw["peers"][:MAX_PEERS]:
                    pid = item["p"]
                    if not valid_peer_text(pid):
                        raise DecodeError("address book: bad peer id")
                    entry = _Peer(
                        learned=_int(item["l"]),
                        last_seen=_int(item["c"]) if "c" in item else None,
                        failures=_int(item.get("f", 0)),
                        next_try=_int(item.get("n", 0)),
                    )
                    for a in item["a"][:MAX_ADDRS]:
                        if valid_addr(a["a"]) and a["s"] in SOURCES:
                            entry.addrs[a["a"]] = _Addr(
                                source=a["s"],
                                learned=_int(a["l"]),
                                last_ok=_int(a["o"]) if "o" in a else None,
                            )
                    peers[pid] = entry
        except (KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"address book: malformed ({type(exc).__name__}: {exc})") from None
        return book

    # --- internals ---------------------------------------------------------------

    def _view(self, pid: str, e: _Peer) -> BookEntry:
        order = sorted(
            e.addrs.items(),
            key=lambda kv: (kv[1].last_ok is None, -(kv[1].last_ok or 0), rank(kv[0])),
        )
        return BookEntry(
            peer=pid,
            addrs=tuple(a for a, _ in order),
            last_seen=e.last_seen,
            failures=e.failures,
            next_try=e.next_try,
        )

    @staticmethod
    def _worst_addr(entry: _Peer) -> str:
        return min(entry.addrs, key=lambda a: (entry.addrs[a].last_ok or 0, entry.addrs[a].learned))

    def _make_room(self, peers: dict[str, _Peer], now: int, *, connected: bool = False) -> bool:
        """Free a slot for one more peer; False if the newcomer may not push anyone out."""
        if len(peers) < MAX_PEERS:
            return True
        never = [pid for pid, e in peers.items() if e.last_seen is None]
        if never:
            victim = min(never, key=lambda pid: peers[pid].learned)
        elif connected:
            victim = min(peers, key=lambda pid: peers[pid].last_seen or 0)
        else:
            return False
        del peers[victim]
        return True


def _addr_value(addr: str, info: _Addr) -> dict[str, Any]:
    value: dict[str, Any] = {"a": addr, "s": info.source, "l": info.learned}
    if info.last_ok is not None:
        value["o"] = info.last_ok
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise DecodeError("address book: expected a non-negative integer")
    return value
