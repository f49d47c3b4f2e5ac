"""The swarm's currency and credit limits (meshnode.credit): from records and trust, no administrator."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode import credit
from meshnode.ledger import derive_ledger
from meshnode.records import CurrencyBody, TransferBody
from meshnode.trust import TrustEdge, TrustGraph
from tests.conftest import NOW, Author

AUTHORS = [Author(seed) for seed in range(11, 17)]
ME, ANN, BOB, CAT, DAN, EVE = (a.public for a in AUTHORS)
SIGNERS = {a.public: a for a in AUTHORS}


def currency(author: bytes, name: str, ts: int, unit: str = "hours"):
    return SIGNERS[author].sign(CurrencyBody(name, unit), ts=NOW + ts)


def vouch(source: bytes, target: bytes, weight: float = 1.0) -> TrustEdge:
    return TrustEdge(source, target, weight, "attest")


def test_no_currency_record_means_hours_unnamed():
    assert credit.swarm_currency([], me=ME, scores={}) == credit.Currency(name="", unit="hours")


def test_the_newest_currency_of_the_owner_or_a_trusted_member_wins():
    mine = currency(ME, "Elm hours", 1_000)
    ann = currency(ANN, "Elm time", 2_000, unit="half-hours")
    stranger = currency(EVE, "Scam coin", 3_000)
    got = credit.swarm_currency([stranger, ann, mine], me=ME, scores={ANN: 0.4})
    assert (got.name, got.unit, got.record) == ("Elm time", "half-hours", ann)
    # A stranger (score 0) cannot rename it, however new their record.
    assert credit.swarm_currency([stranger, mine], me=ME, scores={EVE: 0.0}).name == "Elm hours"


def test_a_member_nobody_trusts_gets_no_credit():
    got = credit.credit_limit(EVE, me=ME, scores={ANN: 0.5}, edges=[vouch(ME, ANN)])
    assert (got.limit, got.base, got.lines) == (0, 0, ())


def test_the_limit_is_the_base_plus_what_trusting_neighbours_extend():
    edges = [vouch(ME, ANN), vouch(ANN, BOB, 0.5), vouch(CAT, BOB), vouch(BOB, ANN)]
    scores = {ANN: 0.8, BOB: 0.3, CAT: 0.25}
    got = credit.credit_limit(BOB, me=ME, scores=scores, edges=edges)
    # 500 base + 1000 * 0.5 * 0.8 (Ann) + 1000 * 1.0 * 0.25 (Cat)
    assert got.base == credit.BASE_LIMIT
    assert [(line.by, line.amount) for line in got.lines] == [(ANN, 400), (CAT, 250)]
    assert got.limit == 500 + 400 + 250 and not got.capped and not got.forked
    mine = credit.credit_limit(ANN, me=ME, scores=scores, edges=edges)
    assert [(line.by, line.amount) for line in mine.lines] == [(ME, 1000), (BOB, 300)]


def test_the_limit_is_capped_and_a_forker_has_none():
    many = [vouch(k, BOB) for k in (ME, ANN, CAT, DAN)]
    scores = dict.fromkeys((ANN, BOB, CAT, DAN, EVE), 1.0)
    got = credit.credit_limit(BOB, me=ME, scores=scores, edges=many)
    assert got.capped is False and got.limit == 500 + 4 * 1000
    more = [*many, TrustEdge(EVE, BOB, 1.0, "trade")]
    got = credit.credit_limit(BOB, me=ME, scores=scores, edges=more)
    assert got.capped and got.limit == credit.MAX_LIMIT
    forked = credit.credit_limit(BOB, me=ME, scores=scores, edges=more, forkers={BOB})
    assert forked.limit == 0 and forked.forked and forked.lines == got.lines


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([ME, ANN, BOB, CAT, DAN, EVE]),
            st.sampled_from([ME, ANN, BOB, CAT, DAN, EVE]),
            st.floats(min_value=-1.0, max_value=1.0),
        ),
        max_size=20,
    )
)
def test_limits_of_agrees_with_credit_limit_and_stays_in_bounds(raw):
    edges = {(s, t): TrustEdge(s, t, w, "attest") for s, t, w in raw if s != t and w != 0.0}
    graph = TrustGraph(edges.values())
    scores = graph.scores(ME)
    limits = credit.limits_of(me=ME, scores=scores, edges=graph.edges)
    for key in (ME, ANN, BOB, CAT, DAN, EVE):
        one = credit.credit_limit(key, me=ME, scores=scores, edges=graph.edges)
        assert limits.get(key, 0) == one.limit
        assert 0 <= one.limit <= credit.MAX_LIMIT
        if key != ME and scores.get(key, 0.0) <= 0.0:
            assert one.limit == 0  # trust that does not reach a key gives it nothing
    assert limits[ME] >= credit.BASE_LIMIT


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=900), min_size=1, max_size=8))
def test_a_stranger_cannot_spend_and_a_trusted_member_stops_at_the_limit(amounts):
    """What the ledger counts with trust-derived limits: nothing from a stranger, never past a limit."""
    scores = {ANN: 1.0}
    limits = credit.limits_of(me=ME, scores=scores, edges=[vouch(ME, ANN)])
    records = []
    for payer in (ANN, EVE):
        prev = None
        for seq, amount in enumerate(amounts, start=1):
            body = TransferBody(to=BOB, amount=amount, seq=seq, prev=prev)
            r = SIGNERS[payer].sign(body, ts=NOW + seq)
            records.append(r)
            prev = r.id
    ledger = derive_ledger(records, lambda k: limits.get(k, 0))
    assert ledger.balance(EVE) == 0
    assert ledger.balance(ANN) >= -limits[ANN]
    assert sum(ledger.balances.values()) == 0
