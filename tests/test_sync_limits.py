"""PeerBudgets (meshnode.protocols.sync.limits): hourly budgets per peer, reserved per session (pure)."""

from __future__ import annotations

from meshnode.protocols.sync.limits import PeerBudgets, SyncLimits

LIMITS = SyncLimits(
    session_records=100,
    session_bytes=10_000,
    session_new_authors=5,
    hour_records=250,
    hour_bytes=1_000_000,
    hour_new_authors=8,
)


def test_a_session_gets_the_session_budget_while_the_hour_has_more():
    budgets = PeerBudgets(LIMITS)
    a = budgets.reserve("peer", 0.0)
    assert (a.records, a.bytes, a.new_authors) == (100, 10_000, 5)
    assert a.records_why == "the session's budget of 100 records"
    assert budgets.left("peer", 0.0) == (150, 990_000, 3)


def test_what_a_session_did_not_use_is_given_back():
    budgets = PeerBudgets(LIMITS)
    a = budgets.reserve("peer", 0.0)
    budgets.settle("peer", 0.0, a, (40, 2_000, 1))
    assert budgets.left("peer", 0.0) == (210, 998_000, 7)


def test_the_hour_bounds_later_sessions_and_refills_over_the_hour():
    budgets = PeerBudgets(LIMITS)
    for _ in range(2):
        budgets.settle("peer", 0.0, budgets.reserve("peer", 0.0), (100, 10_000, 5))
    a = budgets.reserve("peer", 0.0)
    assert (a.records, a.new_authors) == (50, 0)
    assert a.records_why == "this peer's hourly budget of 250 records (50 were left)"
    assert a.new_authors_why == "this peer's hourly budget of 8 new authors (0 were left)"
    budgets.settle("peer", 0.0, a, (50, 0, 0))
    assert budgets.left("peer", 0.0)[0] == 0
    assert budgets.left("peer", 1800.0)[0] == 125  # half an hour: half the hour's budget
    assert budgets.left("peer", 7200.0)[0] == 250  # never more than one hour's worth
    assert budgets.left("another peer", 0.0)[0] == 250  # budgets are per peer


def test_at_most_max_peers_are_remembered():
    budgets = PeerBudgets(LIMITS, max_peers=2)
    for peer in ("a", "b", "c"):
        budgets.reserve(peer, 0.0)
    assert list(budgets._buckets) == ["b", "c"]
