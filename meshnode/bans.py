"""Bans of peers, and of the addresses their keys come from, with expiry (pure).

A node keeps one :class:`BanBook` for all of its hosts (a peer banned on one
network is banned on every one) and keeps it in its home across restarts.
Time is a parameter, wall-clock milliseconds (a ban outlives the process).

Rules
    * **Peer bans.** :meth:`BanBook.ban` bans a peer until ``now`` plus
      ``first_ban_ms`` (1 h) for its first ban, doubled for each further ban
      still remembered, at most ``max_ban_ms`` (7 days): 1, 2, 4 ... h.
      A peer already banned is not banned again and gains no strike (the
      offences still arriving while its connections close on each host are
      the same offence).
    * **Probation.** After a ban ends, the peer's strikes are remembered for
      ``memory_ms`` (7 days); meanwhile :meth:`BanBook.on_probation` is true
      and the node bans it again at its first new offence instead of
      waiting for its offence limit. Then the peer is forgotten.
    * **Address limits.** Each ban also counts against the address the peer
      was connected from: its IPv4 address, or the /64 of an IPv6 address
      (one machine usually holds a whole /64). When ``ip_limit`` (3) bans
      from one address fall within ``ip_window_ms`` (1 h), the address is
      refused (:meth:`BanBook.ip_refused`) for ``ip_ban_ms`` (1 h), doubled
      for each further refusal still remembered, at most ``max_ban_ms``; its
      count starts again. A new key is cheap, an address is not: this is
      what stops "a new key is a new start".
    * **Loopback** is one address for every peer on this machine. Its bans
      are counted, but unless ``limit_loopback`` it is never refused;
      :class:`BanOutcome` says when the limit was reached and not applied
      (``exempt``), so the caller can say so.
    * **Bounded.** At most ``max_peers`` peers and ``max_addresses`` addresses
      are kept; when full, the entry whose ban ends first (or ended longest
      ago) goes first. Expired entries go in :meth:`BanBook.expire`.
    * **Serialised** with :meth:`BanBook.to_value` / :meth:`BanBook.from_value`
      (plain values for :mod:`meshnode.wire`), :meth:`BanBook.encode` /
      :meth:`BanBook.decode` for bytes. Decoding is strict and bounded: the
      wrong version, types, a bad peer id or address, a time or count out of
      range, or more than :data:`MAX_FILE_ENTRIES` entries raise
      :class:`~meshnode.errors.DecodeError`; entries forgotten at ``now`` are
      dropped, and the book's bounds apply as entries are read.

Why these numbers: a ban follows ``penalty_limit`` (20) invalid messages
within a minute, which an honest peer sends only through a bug, ours or its
own (a clock ahead of ours is no longer one). One hour bounds what such a
mistake costs it, while a hostile key is useless for that hour; doubling
makes a peer that comes back to offend again pay more each time, and 7 days
bounds the mistake that repeats. Three bans from one address within an hour
are not bad luck: honest machines are not banned at all, and one machine
runs one node (one key). A NAT can hide many honest users behind one public
address, which is why the refusal starts short (an hour) and needs three
bans, not one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from meshnode import wire
from meshnode.addrbook import valid_peer_text
from meshnode.errors import BadValue, DecodeError

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
#: The most peers plus addresses a ban file may list (a file from a node with
#: larger bounds is still read; more than this is not a ban file).
MAX_FILE_ENTRIES = 1 << 16
#: The largest ban file read (about 40 bytes an entry).
MAX_FILE_SIZE = 4 << 20
MAX_STRIKES = 64
_MAX_TIME_MS = 1 << 53
_MAX_ADDRESS_LEN = 64

_E = TypeVar("_E")


@dataclass(frozen=True)
class BanPolicy:
    """How long bans last, when an address is refused, and how much is kept (see the module)."""

    first_ban_ms: int = HOUR_MS
    max_ban_ms: int = 7 * DAY_MS
    memory_ms: int = 7 * DAY_MS
    ip_limit: int = 3
    ip_window_ms: int = HOUR_MS
    ip_ban_ms: int = HOUR_MS
    limit_loopback: bool = False
    max_peers: int = 4096
    max_addresses: int = 1024

    def __post_init__(self) -> None:
        for name in ("first_ban_ms", "max_ban_ms", "ip_window_ms", "ip_ban_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < _MAX_TIME_MS:
                raise BadValue(f"{name} must be a positive number of milliseconds, got {value!r}")
        if self.first_ban_ms > self.max_ban_ms or self.ip_ban_ms > self.max_ban_ms:
            raise BadValue("first_ban_ms and ip_ban_ms must not exceed max_ban_ms")
        if not 0 <= self.memory_ms < _MAX_TIME_MS:
            raise BadValue(f"memory_ms must be >= 0, got {self.memory_ms!r}")
        if not 1 <= self.ip_limit <= MAX_STRIKES:
            raise BadValue(f"ip_limit must be in 1..{MAX_STRIKES}, got {self.ip_limit!r}")
        if self.max_peers < 1 or self.max_addresses < 1:
            raise BadValue("max_peers and max_addresses must be at least 1")

    def duration(self, first_ms: int, strikes: int) -> int:
        """``first_ms`` doubled for each strike after the first, at most ``max_ban_ms``."""
        return min(first_ms << min(strikes - 1, 40), self.max_ban_ms)


@dataclass(frozen=True)
class BanOutcome:
    """What one :meth:`BanBook.ban` did.

    ``banned``: the peer was not banned and now is, ``until`` (ms); False when
    it already was. ``address``: the address key (IPv4 address or IPv6 /64)
    this ban made refused, else None. ``exempt``: the address reached its
    limit but is loopback and ``limit_loopback`` is off, so it was not refused.
    """

    banned: bool
    until: int
    address: str | None = None
    exempt: bool = False


@dataclass(frozen=True)
class BanCounts:
    """Bans in force: peers banned and addresses refused (for ``meshnode status``)."""

    peers: int
    addresses: int


@dataclass
class _PeerEntry:
    until: int
    strikes: int


@dataclass
class _AddressEntry:
    bans: list[int] = field(default_factory=list)  # times of bans within the window
    until: int = 0  # refused until (0: never refused)
    strikes: int = 0


def parse_ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``text`` names (an IPv6 zone dropped, IPv4-mapped IPv6 as IPv4); None if none."""
    if not text or len(text) > _MAX_ADDRESS_LEN:
        return None
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_key(ip: str | None) -> tuple[str, bool] | None:
    """The key ``ip`` is counted under and whether it is loopback; None if it is not an IP.

    IPv4 (also IPv4-mapped IPv6) counts per address, IPv6 per /64.
    """
    addr = parse_ip(ip)
    if addr is None:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        return str(addr), addr.is_loopback
    return str(ipaddress.IPv6Network(f"{addr}/64", strict=False)), addr.is_loopback


def _canonical_key(key: object) -> bool:
    """``key`` is an address key exactly as :func:`address_key` writes it."""
    if not isinstance(key, str) or len(key) > _MAX_ADDRESS_LEN:
        return False
    found = address_key(key.split("/", 1)[0])
    return found is not None and found[0] == key


class BanBook:
    """The bans of one node: peers by id, addresses by IP (or /64), each with an expiry."""

    def __init__(self, policy: BanPolicy | None = None) -> None:
        self.policy = policy or BanPolicy()
        self._peers: dict[str, _PeerEntry] = {}
        self._addresses: dict[str, _AddressEntry] = {}
        self.changed = False  # since the last save: the caller clears it

    # --- questions ---------------------------------------------------------------

    def is_banned(self, peer: str, now: int) -> bool:
        entry = self._peers.get(peer)
        return entry is not None and entry.until > now

    def on_probation(self, peer: str, now: int) -> bool:
        """``peer`` was banned, the ban has ended and its strikes are still remembered."""
        entry = self._peers.get(peer)
        return entry is not None and entry.until <= now < entry.until + self.policy.memory_ms

    def ip_refused(self, ip: str | None, now: int) -> bool:
        """Inbound connections from ``ip`` are refused now (never for loopback unless limited)."""
        found = address_key(ip)
        if found is None:
            return False
        key, loopback = found
        if loopback and not self.policy.limit_loopback:
            return False
        entry = self._addresses.get(key)
        return entry is not None and entry.until > now

    def banned_peers(self, now: int) -> list[str]:
        """The peers banned now, in no particular order."""
        return [p for p, e in self._peers.items() if e.until > now]

    def counts(self, now: int) -> BanCounts:
        return BanCounts(
            peers=sum(1 for e in self._peers.values() if e.until > now),
            addresses=sum(1 for e in self._addresses.values() if e.until > now),
        )

    def __len__(self) -> int:
        """Entries kept (banned, on probation, or counted addresses)."""
        return len(self._peers) + len(self._addresses)

    # --- changes -----------------------------------------------------------------

    def ban(self, peer: str, ip: str | None, now: int) -> BanOutcome:
        """Ban ``peer``, connected from ``ip`` (None: unknown or relayed), at ``now``."""
        if not valid_peer_text(peer):
            raise BadValue(f"not a peer id: {peer!r}")
        entry = self._peers.get(peer)
        if entry is not None and entry.until > now:
            return BanOutcome(banned=False, until=entry.until)
        if entry is not None and now >= entry.until + self.policy.memory_ms:
            entry = None  # forgotten: a first ban again
        strikes = min((entry.strikes if entry is not None else 0) + 1, MAX_STRIKES)
        until = now + self.policy.duration(self.policy.first_ban_ms, strikes)
        self._peers.pop(peer, None)
        self._peers[peer] = _PeerEntry(until=until, strikes=strikes)
        _evict(self._peers, self.policy.max_peers, lambda e: e.until)
        self.changed = True
        address, exempt = self._count_address(ip, now)
        return BanOutcome(banned=True, until=until, address=address, exempt=exempt)

    def expire(self, now: int) -> int:
        """Forget what no longer matters at ``now``; the number of entries dropped."""
        memory = self.policy.memory_ms
        window = self.policy.ip_window_ms
        gone = [p for p, e in self._peers.items() if now >= e.until + memory]
        for p in gone:
            del self._peers[p]
        dropped = len(gone)
        for key in list(self._addresses):
            entry = self._addresses[key]
            entry.bans = [t for t in entry.bans if now - t < window]
            if not entry.bans and now >= entry.until + memory:
                del self._addresses[key]
                dropped += 1
        if dropped:
            self.changed = True
        return dropped

    # --- serialisation -------------------------------------------------------------

    def to_value(self) -> dict[str, Any]:
        """A plain value of the whole book (see :meth:`from_value`)."""
        return {
            "v": 1,
            "peers": [[p, e.until, e.strikes] for p, e in self._peers.items()],
            "addresses": [[k, e.until, e.strikes, list(e.bans)] for k, e in self._addresses.items()],
        }

    @classmethod
    def from_value(cls, value: object, *, now: int, policy: BanPolicy | None = None) -> BanBook:
        """Rebuild a book from :meth:`to_value`'s output; raise :class:`DecodeError` if it is not one."""
        book = cls(policy)
        if not isinstance(value, Mapping) or value.get("v") != 1 or set(value) != {"v", "peers", "addresses"}:
            raise DecodeError("ban file: not version 1 of a ban book")
        peers, addresses = value["peers"], value["addresses"]
        if not isinstance(peers, list) or not isinstance(addresses, list):
            raise DecodeError("ban file: peers and addresses must be lists")
        if len(peers) + len(addresses) > MAX_FILE_ENTRIES:
            raise DecodeError(f"ban file: more than {MAX_FILE_ENTRIES} entries")
        for item in peers:
            if not isinstance(item, list) or len(item) != 3 or not valid_peer_text(item[0]):
                raise DecodeError("ban file: a peer entry is not [peer id, until, strikes]")
            book._peers[item[0]] = _PeerEntry(until=_time(item[1]), strikes=_strikes(item[2], 1))
        for item in addresses:
            if not isinstance(item, list) or len(item) != 4 or not _canonical_key(item[0]):
                raise DecodeError("ban file: an address entry is not [address, until, strikes, [times]]")
            times = item[3]
            if not isinstance(times, list) or len(times) > MAX_STRIKES:
                raise DecodeError("ban file: an address's ban times are not a short list")
            book._addresses[item[0]] = _AddressEntry(
                bans=[_time(t) for t in times], until=_time(item[1]), strikes=_strikes(item[2], 0)
            )
        _evict(book._peers, book.policy.max_peers, lambda e: e.until)
        _evict(book._addresses, book.policy.max_addresses, lambda e: max([e.until, *e.bans]))
        book.expire(now)
        book.changed = False
        return book

    def encode(self) -> bytes:
        return wire.encode(self.to_value())

    @classmethod
    def decode(cls, data: bytes, *, now: int, policy: BanPolicy | None = None) -> BanBook:
        """A book from :meth:`encode`'s bytes; :class:`DecodeError` for anything else."""
        value = wire.decode(data, max_size=MAX_FILE_SIZE, max_depth=4)
        return cls.from_value(value, now=now, policy=policy)

    # --- internals ---------------------------------------------------------------

    def _count_address(self, ip: str | None, now: int) -> tuple[str | None, bool]:
        found = address_key(ip)
        if found is None:
            return None, False
        key, loopback = found
        policy = self.policy
        entry = self._addresses.pop(key, None) or _AddressEntry()
        if entry.strikes and now >= entry.until + policy.memory_ms:
            entry.strikes = 0
        recent = [t for t in entry.bans if now - t < policy.ip_window_ms]
        entry.bans = [*recent, now][-policy.ip_limit :]
        self._addresses[key] = entry
        _evict(self._addresses, policy.max_addresses, lambda e: max([e.until, *e.bans]))
        if len(entry.bans) < policy.ip_limit or entry.until > now:
            return None, False
        if loopback and not policy.limit_loopback:
            return None, True
        entry.bans = []
        entry.strikes = min(entry.strikes + 1, MAX_STRIKES)
        entry.until = now + policy.duration(policy.ip_ban_ms, entry.strikes)
        return key, False


def _evict(entries: dict[str, _E], bound: int, ends: Callable[[_E], int]) -> None:
    """Drop the entries that end first until at most ``bound`` remain (one sort)."""
    if len(entries) > bound:
        for key in sorted(entries, key=lambda k: ends(entries[k]))[: len(entries) - bound]:
            del entries[key]


def _time(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_TIME_MS:
        raise DecodeError(f"ban file: {value!r} is not a time in milliseconds")
    return value


def _strikes(value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_STRIKES:
        raise DecodeError(f"ban file: {value!r} is not a strike count in {least}..{MAX_STRIKES}")
    return value
