"""Token buckets keyed by peer or author (pure: time is a parameter).

Used before expensive work (decode, verify) so that a flooding peer costs
little: PY-LIBP2P-NOTES pitfall 19 measured every flood message reaching the
validator.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class KeyedRateLimit:
    """``rate`` events per second per key, bursts up to ``burst``.

    At most ``max_keys`` buckets are kept (least recently used are dropped),
    so a peer cannot grow memory by inventing keys.
    """

    rate: float
    burst: float
    max_keys: int = 4096
    _buckets: OrderedDict[object, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, key: object, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``key``'s bucket; False if there are not enough."""
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed
