"""The timeouts, bounds and budgets of sync sessions (pure).

The protocol constants that every node accepts whatever its tuning (frame,
message and record sizes) live in :mod:`.messages`; these are one node's
settings (``NodeConfig.sync_limits``).

Progress: a session must move at least ``min_progress_rate`` bytes a second
(frames received plus sent), after a grace of ``progress_grace`` seconds:
by time ``t`` since its start it must have moved
``(t - progress_grace) * min_progress_rate`` bytes, or it ends as a timeout.
A peer that sends one small message every 19 s no longer keeps a slot.

Budgets: what one peer may make this node take, counted on what it sends
(records and their bytes, and authors this node has never seen), per session
and per hour (:class:`PeerBudgets`: token buckets that refill an hour's
worth in an hour). Over budget, the session stops taking that peer's records
(they are read, checked and dropped; the peer is not penalised) and its
report says which budget was reached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SyncLimits:
    """Timeouts, bounds and budgets of one session (and of inbound sessions per host)."""

    read_timeout: float = 20.0  # per frame
    write_timeout: float = 20.0  # per frame
    connect_timeout: float = 10.0  # opening the stream (protocol negotiation)
    session_timeout: float = 600.0  # a whole session
    min_progress_rate: float = 2048.0  # bytes a second, both ways together (0: no minimum)
    progress_grace: float = 30.0  # seconds before the minimum applies
    max_rounds: int = 1024  # reconciliation messages received
    max_reconcile_bytes: int = 32 << 20  # reconciliation bytes received (~1M ids)
    max_notwant: int = 16_384  # ids in one NOTWANT (~560 KB)
    max_inbound: int = 8  # concurrent inbound sessions on one host
    inbound_rate: float = 0.2  # inbound sessions per second per peer ...
    inbound_burst: float = 10.0  # ... in bursts of this many (a session per swarm on connect)
    ingest_workers: int = 2  # concurrent ingest_many batches per session
    read_chunk: int = 2048  # ids per store read when pushing
    # what one peer may make us take (received records, their bytes, never-seen authors)
    session_records: int = 150_000
    session_bytes: int = 64 << 20
    session_new_authors: int = 500
    hour_records: int = 300_000
    hour_bytes: int = 128 << 20
    hour_new_authors: int = 2_000


@dataclass(frozen=True)
class Allowance:
    """What one session may take from its peer; ``*_why`` names the budget that set each bound."""

    records: int
    bytes: int
    new_authors: int
    records_why: str = "the session's record budget"
    bytes_why: str = "the session's byte budget"
    new_authors_why: str = "the session's budget of authors never seen here"


UNLIMITED = Allowance(records=1 << 62, bytes=1 << 62, new_authors=1 << 62)

_KINDS = ("records", "bytes", "new_authors")


@dataclass
class PeerBudgets:
    """Per-peer hourly budgets (token buckets, time is a parameter); at most ``max_peers`` kept.

    :meth:`reserve` takes a session's :class:`Allowance` (the session
    budgets, or what is left of the hour if less); :meth:`settle` gives back
    what the session did not use.
    """

    limits: SyncLimits
    max_peers: int = 4096
    _buckets: OrderedDict[str, tuple[list[float], float]] = field(default_factory=OrderedDict)

    def _hourly(self) -> tuple[int, int, int]:
        lim = self.limits
        return lim.hour_records, lim.hour_bytes, lim.hour_new_authors

    def _tokens(self, peer: str, now: float) -> list[float]:
        caps = self._hourly()
        tokens, last = self._buckets.pop(peer, ([float(c) for c in caps], now))
        elapsed = max(now - last, 0.0)
        tokens = [min(float(cap), t + elapsed * cap / 3600.0) for t, cap in zip(tokens, caps, strict=True)]
        self._buckets[peer] = (tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return tokens

    def left(self, peer: str, now: float) -> tuple[int, int, int]:
        """What is left of ``peer``'s hour: (records, bytes, new authors)."""
        r, b, a = (int(t) for t in self._tokens(peer, now))
        return r, b, a

    def reserve(self, peer: str, now: float) -> Allowance:
        """The allowance of a session starting now with ``peer``, taken from its hour."""
        lim = self.limits
        tokens = self._tokens(peer, now)
        session = (lim.session_records, lim.session_bytes, lim.session_new_authors)
        bounds: list[int] = []
        whys: list[str] = []
        for i, kind in enumerate(_KINDS):
            left = int(tokens[i])
            what = kind.replace("_", " ")
            if left < session[i]:
                bounds.append(left)
                whys.append(f"this peer's hourly budget of {self._hourly()[i]} {what} ({left} were left)")
            else:
                bounds.append(session[i])
                whys.append(f"the session's budget of {session[i]} {what}")
            tokens[i] -= bounds[i]
        return Allowance(bounds[0], bounds[1], bounds[2], whys[0], whys[1], whys[2])

    def settle(self, peer: str, now: float, allowance: Allowance, used: tuple[int, int, int]) -> None:
        """Give back what a session reserved and did not use (``used``: records, bytes, new authors)."""
        tokens = self._tokens(peer, now)
        caps = self._hourly()
        granted = (allowance.records, allowance.bytes, allowance.new_authors)
        for i in range(3):
            tokens[i] = min(float(caps[i]), tokens[i] + max(granted[i] - used[i], 0))
