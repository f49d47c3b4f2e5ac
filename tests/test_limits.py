"""Rate limits and peer penalties (pure bookkeeping)."""

from __future__ import annotations

from meshnode.ratelimit import KeyedRateLimit
from meshnode.verdicts import PeerPenalties


def test_token_bucket_allows_burst_then_rate():
    limit = KeyedRateLimit(rate=10, burst=5)
    assert all(limit.allow("p", 0.0) for _ in range(5))
    assert not limit.allow("p", 0.0)
    assert limit.allow("p", 0.1)  # one token back after 0.1 s at 10/s
    assert not limit.allow("p", 0.1)
    assert limit.allow("q", 0.1)  # other keys are independent


def test_token_bucket_memory_is_bounded():
    limit = KeyedRateLimit(rate=1, burst=1, max_keys=100)
    for i in range(10_000):
        limit.allow(i, 0.0)
    assert len(limit._buckets) == 100


def test_penalties_ban_after_limit_within_window_once():
    p = PeerPenalties(limit=3, window=10)
    assert not p.record("bad", 0)
    assert not p.record("bad", 1)
    assert p.record("bad", 2)
    assert not p.record("bad", 3)  # already banned: reported once
    assert "bad" in p.banned


def test_penalties_forget_old_events():
    p = PeerPenalties(limit=3, window=10)
    for t in (0, 20, 40, 60):
        assert not p.record("slow", t)


def test_penalty_memory_is_bounded():
    p = PeerPenalties(limit=2, window=10, max_peers=50, max_banned=10)
    for i in range(1000):
        p.record(f"peer{i}", 0)  # one strike each: tracked, bounded
    assert len(p._events) == 50
    for i in range(100):
        p.record(f"bad{i}", 0)
        assert p.record(f"bad{i}", 0)
    assert len(p.banned) == 10
