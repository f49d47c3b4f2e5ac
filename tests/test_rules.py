"""Answering while away: each rule fires only on what it names, precedence, and the [rules] table."""

from __future__ import annotations

import tomllib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.barter import STATES, OfferInfo, Trade
from meshnode.errors import ConfigError
from meshnode.people import short_peer
from meshnode.rules import (
    ACCEPT_COUNTER_THAT_ONLY_ADDS,
    ACCEPT_GIVE_FROM_TRUST,
    DECLINE_BELOW_TRUST,
    Decision,
    Rules,
    decide,
    describe_rules,
    held_back,
    parse_rules,
)

ME, BOB, CAROL = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _oid(n: int) -> bytes:
    return bytes([n]) * 32


# My offers (10-19) and Bob's (20-29).
MY_GIVE, MY_GIVE_2, MY_LEND, MY_SWAP, MY_GONE = _oid(10), _oid(11), _oid(12), _oid(13), _oid(14)
BOB_SWAP, BOB_GIVE, BOB_LEND, BOB_JAM = _oid(20), _oid(21), _oid(22), _oid(23)
UNKNOWN = _oid(30)
OFFERS = {
    MY_GIVE: OfferInfo(MY_GIVE, ME, "give"),
    MY_GIVE_2: OfferInfo(MY_GIVE_2, ME, "give"),
    MY_LEND: OfferInfo(MY_LEND, ME, "lend"),
    MY_SWAP: OfferInfo(MY_SWAP, ME, "swap"),
    MY_GONE: OfferInfo(MY_GONE, ME, "give", withdrawn_at=5),
    BOB_SWAP: OfferInfo(BOB_SWAP, BOB, "swap"),
    BOB_GIVE: OfferInfo(BOB_GIVE, BOB, "give"),
    BOB_LEND: OfferInfo(BOB_LEND, BOB, "lend"),
    BOB_JAM: OfferInfo(BOB_JAM, BOB, "swap"),
}
ALL_RULES = Rules(
    accept_give_from_trust=0.7,
    decline_below_trust=0.1,
    max_open_loans_per_borrower=2,
    accept_counter_that_only_adds=True,
)


def _trade(
    give: tuple[bytes, ...] = (),
    take: tuple[bytes, ...] = (MY_GIVE,),
    *,
    proposer: bytes = BOB,
    responder: bytes = ME,
    state: str = "proposed",
    terms_by: bytes | None = None,
) -> Trade:
    """A trade with terms from the proposer's side (default: Bob asks for my give offer)."""
    return Trade(
        proposal_id=_oid(99),
        proposer=proposer,
        responder=responder,
        state=state,
        give=give,
        take=take,
        terms_by=proposer if terms_by is None else terms_by,
        completed_by=frozenset(),
        expires=None,
        created_ts=1,
        updated_ts=1,
        applied=() if state == "proposed" else (_oid(98),),
    )


def _decide(
    trade: Trade,
    rules: Rules = ALL_RULES,
    *,
    trust: float = 0.82,
    loans: int = 0,
    previous: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None,
) -> Decision | None:
    return decide(
        trade,
        me=ME,
        offers=OFFERS,
        trust={BOB: trust},
        open_loans_by={BOB: loans},
        rules=rules,
        previous_terms=previous,
        label="Bob",
    )


def _action(decision: Decision | None) -> tuple[str, str] | None:
    return None if decision is None else (decision.action, decision.rule)


# --- accept_give_from_trust ---------------------------------------------------------


def test_give_request_from_a_trusted_neighbour_is_accepted() -> None:
    only = Rules(accept_give_from_trust=0.7)
    decision = _decide(_trade(), only)
    assert decision == Decision(
        "accept",
        ACCEPT_GIVE_FROM_TRUST,
        "accepted automatically by my rule accept_give_from_trust (0.7): Bob is trusted 0.82",
    )
    # at the threshold exactly; several give offers; with something given in return
    assert _action(_decide(_trade(), only, trust=0.7)) == ("accept", ACCEPT_GIVE_FROM_TRUST)
    assert _action(_decide(_trade(take=(MY_GIVE, MY_GIVE_2)), only)) == ("accept", ACCEPT_GIVE_FROM_TRUST)
    assert _action(_decide(_trade(give=(BOB_JAM,)), only)) == ("accept", ACCEPT_GIVE_FROM_TRUST)


def test_give_rule_fires_on_nothing_else() -> None:
    only = Rules(accept_give_from_trust=0.7)
    assert _decide(_trade(), only, trust=0.69) is None  # below the threshold
    assert _decide(_trade(), Rules(), trust=1.0) is None  # rule off
    assert _decide(_trade(take=(MY_SWAP,)), only) is None  # a swap offer of mine
    assert _decide(_trade(take=(MY_LEND,)), only) is None  # a lend offer of mine
    assert _decide(_trade(take=(MY_GIVE, MY_SWAP)), only) is None  # a give and a swap
    assert _decide(_trade(take=(UNKNOWN,)), only) is None  # an offer I do not know
    assert _decide(_trade(take=(BOB_GIVE,)), only) is None  # someone else's give offer
    assert _decide(_trade(take=(MY_GONE,)), only) is None  # withdrawn
    assert _decide(_trade(give=(BOB_SWAP,), take=()), only) is None  # asks for nothing of mine
    # a counter is never a give request, even one asking only for my give offer
    countered = _trade(state="countered", terms_by=BOB, proposer=ME, responder=BOB, give=(MY_GIVE,), take=())
    assert _decide(countered, only, previous=((MY_GIVE,), (BOB_JAM,))) is None


# --- decline_below_trust ---------------------------------------------------------------


def test_proposal_from_a_distrusted_neighbour_is_declined() -> None:
    only = Rules(decline_below_trust=0.1)
    decision = _decide(_trade(take=(MY_SWAP,), give=(BOB_SWAP,)), only, trust=0.05)
    assert decision == Decision(
        "decline",
        DECLINE_BELOW_TRUST,
        "declined automatically by my rule decline_below_trust (0.1): Bob is trusted 0.05",
    )
    # a stranger (not in the trust scores at all) scores 0
    stranger = decide(_trade(), me=ME, offers=OFFERS, trust={}, open_loans_by={}, rules=only, label="Bob")
    assert _action(stranger) == ("decline", DECLINE_BELOW_TRUST)


def test_decline_rule_fires_on_nothing_else() -> None:
    only = Rules(decline_below_trust=0.1)
    assert _decide(_trade(), only, trust=0.1) is None  # at the threshold: not below
    assert _decide(_trade(), Rules(), trust=0.0) is None  # rule off
    # a counter from them, in a trade I started: left to me, never declined
    countered = _trade(state="countered", terms_by=BOB, proposer=ME, responder=BOB, give=(MY_SWAP,), take=())
    assert _decide(countered, only, trust=0.0) is None


# --- accept_counter_that_only_adds ----------------------------------------------------------


def _counter(give: tuple[bytes, ...], take: tuple[bytes, ...], *, i_proposed: bool = True) -> Trade:
    """A countered trade awaiting me, terms from the proposer's side."""
    if i_proposed:
        return _trade(give, take, proposer=ME, responder=BOB, state="countered", terms_by=BOB)
    return _trade(give, take, proposer=BOB, responder=ME, state="countered", terms_by=BOB)


def test_counter_that_only_adds_is_accepted() -> None:
    only = Rules(accept_counter_that_only_adds=True)
    # I proposed my swap for Bob's swap; Bob counters adding his jam
    decision = _decide(_counter((MY_SWAP,), (BOB_SWAP, BOB_JAM)), only, previous=((MY_SWAP,), (BOB_SWAP,)))
    assert decision == Decision(
        "accept",
        ACCEPT_COUNTER_THAT_ONLY_ADDS,
        "accepted automatically by my rule accept_counter_that_only_adds: Bob's counter adds 1 offer to"
        " what I receive and asks for nothing more",
    )
    # Bob proposed, I countered, Bob counters back adding to my side (terms from Bob's side: give)
    trade = _counter((BOB_SWAP, BOB_JAM), (MY_SWAP,), i_proposed=False)
    assert _action(_decide(trade, only, previous=((BOB_SWAP,), (MY_SWAP,)))) == (
        "accept",
        ACCEPT_COUNTER_THAT_ONLY_ADDS,
    )
    # from nothing to something; trust plays no part in this rule
    trade = _counter((MY_SWAP,), (BOB_SWAP,))
    assert _action(_decide(trade, only, trust=0.0, previous=((MY_SWAP,), ()))) is not None


def test_counter_rule_fires_on_nothing_else() -> None:
    only = Rules(accept_counter_that_only_adds=True)
    before = ((MY_SWAP,), (BOB_SWAP,))
    adds = _counter((MY_SWAP,), (BOB_SWAP, BOB_JAM))
    assert _decide(adds, Rules(), previous=before) is None  # rule off
    assert _decide(adds, only, previous=None) is None  # terms before the counter unknown
    assert _decide(_counter((MY_SWAP,), (BOB_SWAP,)), only, previous=before) is None  # adds nothing
    assert _decide(_counter((MY_SWAP,), (BOB_JAM,)), only, previous=before) is None  # swaps what I get
    assert _decide(_counter((MY_SWAP,), ()), only, previous=before) is None  # takes away
    # asks for more of mine, or for something else of mine, while adding to what I get
    assert _decide(_counter((MY_SWAP, MY_GIVE), (BOB_SWAP, BOB_JAM)), only, previous=before) is None
    assert _decide(_counter((MY_GIVE,), (BOB_SWAP, BOB_JAM)), only, previous=before) is None
    # asks for less of mine (gives it away cheaper? no: a change to my side is left to me)
    assert _decide(_counter((), (BOB_SWAP, BOB_JAM)), only, previous=before) is None
    # a proposal is not a counter, even one that gives me a lot
    assert _decide(_trade(give=(BOB_SWAP, BOB_JAM), take=(MY_SWAP,)), only, previous=before) is None


# --- max_open_loans_per_borrower --------------------------------------------------------


def test_loan_limit_holds_back_an_accept_that_would_exceed_it() -> None:
    rules = Rules(accept_counter_that_only_adds=True, max_open_loans_per_borrower=2)
    lend = _counter((MY_LEND,), (BOB_SWAP, BOB_JAM))
    before = ((MY_LEND,), (BOB_SWAP,))
    assert _action(_decide(lend, rules, loans=1, previous=before)) == (
        "accept",
        ACCEPT_COUNTER_THAT_ONLY_ADDS,
    )
    assert _decide(lend, rules, loans=2, previous=before) is None  # a third loan: left to me
    why = held_back(lend, me=ME, offers=OFFERS, open_loans_by={BOB: 2}, rules=rules)
    assert why == (
        "left to you by your rule max_open_loans_per_borrower (2): the borrower holds 2 open loans from you"
    )
    # a limit of 0: no automatic loans at all
    assert _decide(lend, replace(rules, max_open_loans_per_borrower=0), previous=before) is None


def test_loan_limit_holds_back_nothing_else() -> None:
    rules = Rules(accept_counter_that_only_adds=True, max_open_loans_per_borrower=2)
    # not a loan of mine: a swap of mine, or Bob lending to me
    swap = _counter((MY_SWAP,), (BOB_SWAP, BOB_JAM))
    assert _decide(swap, rules, loans=5, previous=((MY_SWAP,), (BOB_SWAP,))) is not None
    borrow = _counter((MY_SWAP,), (BOB_LEND, BOB_JAM))
    assert _decide(borrow, rules, loans=5, previous=((MY_SWAP,), (BOB_LEND,))) is not None
    # Carol's loans do not count against Bob
    lend = _counter((MY_LEND,), (BOB_SWAP, BOB_JAM))
    decision = decide(
        lend,
        me=ME,
        offers=OFFERS,
        trust={},
        open_loans_by={CAROL: 9},
        rules=rules,
        previous_terms=((MY_LEND,), (BOB_SWAP,)),
    )
    assert decision is not None
    # the limit alone never decides anything, and never declines
    assert _decide(_trade(take=(MY_LEND,)), Rules(max_open_loans_per_borrower=0), loans=9) is None
    # limit off
    assert held_back(lend, me=ME, offers=OFFERS, open_loans_by={BOB: 9}, rules=Rules()) is None


# --- which trades, and precedence --------------------------------------------------------------


def test_only_open_trades_awaiting_me() -> None:
    # I made the current terms: Bob is to answer
    mine = _trade(proposer=ME, responder=BOB, give=(MY_GIVE,), take=())
    assert _decide(mine, trust=0.0) is None
    for state in ("accepted", "completed", "declined", "cancelled", "expired", "unavailable"):
        assert _decide(_trade(state=state), trust=1.0) is None
        assert _decide(_trade(state=state), trust=0.0) is None
    # a trade between others
    others = _trade(proposer=BOB, responder=CAROL)
    assert _decide(others, trust=0.0) is None


def test_decline_below_trust_comes_before_the_accept_rules() -> None:
    # thresholds that overlap: accept give from 0.3, decline below 0.5 -> 0.4 declines
    rules = replace(ALL_RULES, accept_give_from_trust=0.3, decline_below_trust=0.5)
    assert _action(_decide(_trade(), rules, trust=0.4)) == ("decline", DECLINE_BELOW_TRUST)
    assert _action(_decide(_trade(), rules, trust=0.5)) == ("accept", ACCEPT_GIVE_FROM_TRUST)
    # a counter that only adds, from a neighbour below the threshold: no accept (and no decline)
    adds = _counter((MY_SWAP,), (BOB_SWAP, BOB_JAM))
    assert _decide(adds, rules, trust=0.4, previous=((MY_SWAP,), (BOB_SWAP,))) is None
    assert _decide(adds, rules, trust=0.5, previous=((MY_SWAP,), (BOB_SWAP,))) is not None


def test_note_names_the_other_party_by_short_id_without_a_label() -> None:
    decision = decide(_trade(), me=ME, offers=OFFERS, trust={BOB: 0.29}, open_loans_by={}, rules=ALL_RULES)
    assert decision is None  # 0.29 is between the thresholds
    decision = decide(_trade(), me=ME, offers=OFFERS, trust={BOB: 0.05}, open_loans_by={}, rules=ALL_RULES)
    assert decision is not None and decision.note.endswith(f"{short_peer(BOB)} is trusted 0.05")


def test_trust_in_a_note_is_rounded_down() -> None:
    rules = Rules(decline_below_trust=0.7)
    decision = _decide(_trade(), rules, trust=0.6999999)
    assert decision is not None and decision.note.endswith("Bob is trusted 0.69")
    decision = _decide(_trade(), Rules(accept_give_from_trust=0.2), trust=0.29)
    assert decision is not None and decision.note.endswith("Bob is trusted 0.29")


# --- config -------------------------------------------------------------------------------


def test_parse_rules_good() -> None:
    table = tomllib.loads(
        """
        [rules]
        accept_give_from_trust = 0.7
        decline_below_trust = 0.1
        max_open_loans_per_borrower = 2
        accept_counter_that_only_adds = true
        """
    )["rules"]
    assert parse_rules(table) == ALL_RULES
    assert parse_rules({"accept_give_from_trust": 1}) == Rules(accept_give_from_trust=1.0)
    assert parse_rules({"accept_give_from_trust": 0, "max_open_loans_per_borrower": 0}) == Rules(
        accept_give_from_trust=0.0, max_open_loans_per_borrower=0
    )
    assert len(describe_rules(ALL_RULES)) == 4
    assert describe_rules(Rules()) == ()
    assert ALL_RULES.any_on and not Rules().any_on


def test_parse_rules_absent_means_all_off() -> None:
    assert parse_rules(None) == Rules()
    assert parse_rules({}) == Rules()
    assert parse_rules({"decline_below_trust": 0.2}) == Rules(decline_below_trust=0.2)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (
            {"accept_give_from_trust": "0.7"},
            "accept_give_from_trust must be a number from 0 to 1, found '0.7'",
        ),
        ({"accept_give_from_trust": True}, "accept_give_from_trust must be a number from 0 to 1"),
        ({"accept_give_from_trust": 1.5}, "accept_give_from_trust must be a number from 0 to 1, found 1.5"),
        ({"accept_give_from_trust": -0.1}, "accept_give_from_trust must be a number from 0 to 1"),
        ({"accept_give_from_trust": float("nan")}, "accept_give_from_trust must be a number from 0 to 1"),
        ({"decline_below_trust": -0.1}, "decline_below_trust must be a number greater than 0 and at most 1"),
        ({"decline_below_trust": 0}, "decline_below_trust must be a number greater than 0"),
        ({"decline_below_trust": 2}, "decline_below_trust must be a number greater than 0"),
        ({"decline_below_trust": [0.1]}, "decline_below_trust must be a number greater than 0"),
        (
            {"max_open_loans_per_borrower": 2.0},
            "max_open_loans_per_borrower must be a whole number from 0 to 1000",
        ),
        ({"max_open_loans_per_borrower": -1}, "max_open_loans_per_borrower must be a whole number"),
        ({"max_open_loans_per_borrower": 1001}, "max_open_loans_per_borrower must be a whole number"),
        ({"max_open_loans_per_borrower": False}, "max_open_loans_per_borrower must be a whole number"),
        (
            {"accept_counter_that_only_adds": 1},
            "accept_counter_that_only_adds must be true or false, found 1",
        ),
        ({"accept_counter_that_only_adds": "yes"}, "accept_counter_that_only_adds must be true or false"),
        ({"accept_give_from": 0.7}, "unknown keys in [rules]: ['accept_give_from']; known are"),
    ],
)
def test_parse_rules_bad(table: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rules(table, where="/home/me/config.toml")
    message = str(info.value)
    assert message.startswith("/home/me/config.toml: ")
    assert words in message
    assert "\n" not in message


def test_parse_rules_not_a_table() -> None:
    with pytest.raises(ConfigError, match=r"config.toml: \[rules\] must be a table"):
        parse_rules([1, 2])


# --- properties ---------------------------------------------------------------------------------

KEYS = (ME, BOB, CAROL)
OFFER_IDS = (*OFFERS, UNKNOWN)
terms = st.lists(st.sampled_from(OFFER_IDS), max_size=3, unique=True).map(tuple)
thresholds = st.none() | st.floats(0.01, 1.0)
Terms = tuple[tuple[bytes, ...], tuple[bytes, ...]]
Situation = tuple[Trade, Rules, dict[bytes, float], dict[bytes, int], Terms | None]


MINE = tuple(o for o, info in OFFERS.items() if info.author == ME)
BOBS = tuple(o for o, info in OFFERS.items() if info.author == BOB)
mine_mostly = st.lists(st.sampled_from(MINE) | st.sampled_from(OFFER_IDS), max_size=3, unique=True).map(tuple)
bobs_mostly = st.lists(st.sampled_from(BOBS) | st.sampled_from(OFFER_IDS), max_size=3, unique=True).map(tuple)


@st.composite
def situations(draw: st.DrawFn) -> Situation:
    """Trades where accepts are common: mostly open, my side mostly my offers, counters that add."""
    proposer, responder = draw(st.permutations(KEYS))[:2]
    state = draw(st.sampled_from(("proposed", "countered")) | st.sampled_from(STATES))
    mine, theirs = draw(mine_mostly), draw(bobs_mostly)
    give, take = (mine, theirs) if proposer == ME else (theirs, mine)
    trade = _trade(
        give,
        take,
        proposer=proposer,
        responder=responder,
        state=state,
        terms_by=draw(st.sampled_from((proposer, responder))),
    )
    rules = Rules(
        accept_give_from_trust=draw(st.none() | st.floats(0.0, 1.0)),
        decline_below_trust=draw(thresholds),
        max_open_loans_per_borrower=draw(st.none() | st.integers(0, 3)),
        accept_counter_that_only_adds=draw(st.booleans()),
    )
    trust = {k: draw(st.floats(0.0, 1.0)) for k in KEYS if draw(st.booleans())}
    loans = {k: draw(st.integers(0, 4)) for k in KEYS if draw(st.booleans())}
    # before the counter: random terms, or the current ones with some of what I receive missing
    fewer = tuple(o for o in theirs if draw(st.booleans()))
    choice = draw(st.integers(0, 3))
    previous = (
        None
        if choice == 0
        else draw(st.tuples(terms, terms))
        if choice == 1
        else (mine, fewer)
        if proposer == ME
        else (fewer, mine)
    )
    return trade, rules, trust, loans, previous


@settings(max_examples=600, deadline=None)
@given(situations())
def test_no_decision_for_a_trade_not_awaiting_me_and_no_accept_below_the_decline_threshold(
    situation: Situation,
) -> None:
    trade, rules, trust, loans, previous = situation
    decision = decide(
        trade, me=ME, offers=OFFERS, trust=trust, open_loans_by=loans, rules=rules, previous_terms=previous
    )
    if trade.awaiting() != ME:
        assert decision is None
        return
    if decision is None:
        return
    assert decision.action in ("accept", "decline")
    assert decision.rule in decision.note
    other = trade.other(ME)
    below = rules.decline_below_trust is not None and trust.get(other, 0.0) < rules.decline_below_trust
    if below:
        assert decision.action == "decline"
    if decision.action == "accept":
        assert held_back(trade, me=ME, offers=OFFERS, open_loans_by=loans, rules=rules) is None
