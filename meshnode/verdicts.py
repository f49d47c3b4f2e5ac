"""What a node decides about what a peer sent, and what repeated refusals cost it (pure).

:class:`Verdict` is the judgement of one gossiped record (ingest makes it,
the gossip adapter acts on it); :class:`PeerPenalties` counts the invalid
input of each peer, from gossip and from sync alike, and says when a peer
is to be banned. No I/O: time is a parameter.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import KeysView
from dataclasses import dataclass, field


class Verdict(enum.Enum):
    """What the node decided about one gossiped record."""

    ACCEPT = "accept"  # valid and new: store it and relay it
    IGNORE = "ignore"  # valid but known, or over a rate limit: drop quietly
    REJECT = "reject"  # invalid: drop and count it against the forwarder


@dataclass
class PeerPenalties:
    """Counts invalid messages per peer; a peer over the limit is to be banned.

    ``limit`` invalid messages within ``window`` seconds ban a peer. Pure
    bookkeeping: the caller acts on :meth:`record`'s answer. Memory is
    bounded: at most ``max_peers`` peers are tracked and ``max_banned`` bans
    remembered (oldest forgotten first), so fresh identities cannot grow it.
    """

    limit: int = 20
    window: float = 60.0
    max_peers: int = 4096
    max_banned: int = 4096
    _events: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)
    _banned: OrderedDict[str, None] = field(default_factory=OrderedDict)
    invalid_total: int = 0

    @property
    def banned(self) -> KeysView[str]:
        return self._banned.keys()

    def record(self, peer: str, now: float) -> bool:
        """Count one invalid message from ``peer``; True when it must be banned now."""
        self.invalid_total += 1
        if peer in self._banned:
            return False
        events = [t for t in self._events.pop(peer, []) if now - t < self.window]
        events.append(now)
        if len(events) >= self.limit:
            self._banned[peer] = None
            while len(self._banned) > self.max_banned:
                self._banned.popitem(last=False)
            return True
        self._events[peer] = events
        while len(self._events) > self.max_peers:
            self._events.popitem(last=False)
        return False
