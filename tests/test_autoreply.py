"""Answering while away, wired: the [rules] table in config.toml, and what the daemon answers (no sockets)."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from meshnode import barter
from meshnode.api.autoreply import AutoReplier, awaiting_me, choose, open_loans_by, previous_terms
from meshnode.barter import OfferInfo, derive_trades
from meshnode.errors import ConfigError, NotAllowed
from meshnode.home import Home, ensure_home, load_config
from meshnode.records import OfferBody, ProposalBody, Record, ReplyBody
from meshnode.rules import Rules
from tests.conftest import NOW, SWARM, Author

ALICE, BOB, CAROL = Author(21), Author(22), Author(23)
_seq = itertools.count(1)


def _offer(author: Author, title: str, kind: str) -> Record:
    return author.sign(OfferBody(title=title, kind=kind), ts=NOW, seq=next(_seq))


A_GIVE, A_GIVE_2, A_LEND, A_SWAP = (
    _offer(ALICE, "Chair", "give"),
    _offer(ALICE, "Lamp", "give"),
    _offer(ALICE, "Drill", "lend"),
    _offer(ALICE, "Board game", "swap"),
)
B_SWAP, B_JAM = _offer(BOB, "Books", "swap"), _offer(BOB, "Jam", "swap")
WORLD = (A_GIVE, A_GIVE_2, A_LEND, A_SWAP, B_SWAP, B_JAM)
OFFERS = {o.id: OfferInfo(id=o.id, author=o.author, kind=o.body.kind) for o in WORLD}
ME = ALICE.public


def _propose(
    frm: Author, to: Author, give: tuple[Record, ...], take: tuple[Record, ...], ts: int = 0
) -> Record:
    body = ProposalBody(to=to.public, give=tuple(g.id for g in give), take=tuple(t.id for t in take))
    return frm.sign(body, ts=NOW + ts, seq=next(_seq))


def _reply(frm: Author, proposal: Record, prev: Record, action: str, ts: int, **terms: Any) -> Record:
    body = ReplyBody(
        proposal=proposal.id,
        action=action,
        give=tuple(r.id for r in terms.get("give", ())),
        take=tuple(r.id for r in terms.get("take", ())),
        prev=prev.id,
    )
    return frm.sign(body, ts=NOW + ts, seq=next(_seq))


def _book(*records: Record) -> barter.TradeBook:
    proposals = [r for r in records if r.type == "proposal"]
    replies = [r for r in records if r.type == "reply"]
    return derive_trades(proposals, replies, OFFERS, NOW + 10_000)


def _choose(book: barter.TradeBook, rules: Rules, trust: dict[bytes, float], records: dict[bytes, Record]):
    waiting = awaiting_me(book.trades.values(), ME, frozenset({SWARM}))
    return choose(
        waiting,
        me=ME,
        rules=rules,
        offers=OFFERS,
        trust=trust,
        open_loans=open_loans_by(book.involving(ME), ME, OFFERS),
        records=records,
        label=lambda key: "Bob" if key == BOB.public else "someone",
    )


# --- config.toml [rules] ---------------------------------------------------------------


def _home_with(tmp_path, text: str) -> Home:
    home = Home(tmp_path / "home")
    ensure_home(home)
    home.config.write_text(text, encoding="utf-8")
    return home


def test_config_without_rules_has_every_rule_off(tmp_path):
    assert load_config(_home_with(tmp_path, "[node]\nmdns = false\n")).rules == Rules()


def test_config_rules_table_is_parsed(tmp_path):
    text = (
        "[rules]\naccept_give_from_trust = 0.5\ndecline_below_trust = 0.1\n"
        "accept_counter_that_only_adds = true\n"
    )
    rules = load_config(_home_with(tmp_path, text)).rules
    assert rules == Rules(
        accept_give_from_trust=0.5, decline_below_trust=0.1, accept_counter_that_only_adds=True
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[rules]\naccept_give_from_trust = 2\n", "accept_give_from_trust must be a number from 0 to 1"),
        ("[rules]\ndecline_below_trust = 0\n", "decline_below_trust must be a number greater than 0"),
        ("[rules]\nauto_everything = true\n", "unknown keys in [rules]: ['auto_everything']"),
        ("rules = 3\n", "[rules] must be a table"),
    ],
)
def test_bad_rules_table_is_refused_naming_config_toml(tmp_path, text, words):
    home = _home_with(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(home)
    assert words in str(err.value)
    assert str(home.config) in str(err.value)


# --- what is answered --------------------------------------------------------------------


def test_give_request_from_a_trusted_neighbour_is_accepted_naming_the_rule():
    p = _propose(BOB, ALICE, (), (A_GIVE,))
    [answer] = _choose(_book(p), Rules(accept_give_from_trust=0.5), {BOB.public: 0.8}, {})
    assert answer.trade.proposal_id == p.id
    assert answer.decision.action == "accept"
    assert (
        answer.decision.note
        == "accepted automatically by my rule accept_give_from_trust (0.5): Bob is trusted 0.80"
    )


def test_give_request_below_the_threshold_and_swaps_are_left_to_me():
    low = _propose(BOB, ALICE, (), (A_GIVE,))
    swap = _propose(CAROL, ALICE, (), (A_SWAP,))
    trust = {BOB.public: 0.3, CAROL.public: 0.9}
    assert _choose(_book(low, swap), Rules(accept_give_from_trust=0.5), trust, {}) == []


def test_a_strangers_proposal_is_declined_by_decline_below_trust():
    p = _propose(CAROL, ALICE, (B_SWAP,), (A_SWAP,))
    [answer] = _choose(_book(p), Rules(decline_below_trust=0.2), {}, {})
    assert answer.decision.action == "decline"
    assert answer.decision.rule == "decline_below_trust"


def test_trades_not_awaiting_me_are_not_answered():
    mine = _propose(ALICE, BOB, (A_SWAP,), (B_SWAP,))  # awaits Bob
    theirs = _propose(BOB, CAROL, (B_JAM,), ())  # between neighbours
    assert _choose(_book(mine, theirs), Rules(decline_below_trust=1.0), {}, {}) == []


def test_previous_terms_are_the_proposals_before_the_first_counter():
    p = _propose(ALICE, BOB, (A_SWAP,), (B_SWAP,))
    c = _reply(BOB, p, p, "counter", 10, give=(B_SWAP, B_JAM), take=(A_SWAP,))  # Bob's side
    trade = _book(p, c).trade(p.id)
    assert trade.state == barter.COUNTERED
    assert previous_terms(trade, {p.id: p, c.id: c}) == ((A_SWAP.id,), (B_SWAP.id,))
    assert previous_terms(trade, {}) is None  # a record missing: the rule cannot fire


def test_previous_terms_after_two_counters_are_the_first_counters_from_the_proposers_side():
    p = _propose(BOB, ALICE, (B_SWAP,), (A_SWAP,))
    c1 = _reply(ALICE, p, p, "counter", 10, give=(A_SWAP,), take=(B_SWAP, B_JAM))  # Alice's side
    c2 = _reply(BOB, p, c1, "counter", 20, give=(B_SWAP,), take=(A_SWAP,))
    trade = _book(p, c1, c2).trade(p.id)
    assert previous_terms(trade, {r.id: r for r in (p, c1, c2)}) == ((B_SWAP.id, B_JAM.id), (A_SWAP.id,))


def test_counter_that_only_adds_is_accepted_with_terms_read_from_the_records():
    p = _propose(ALICE, BOB, (A_SWAP,), (B_SWAP,))
    c = _reply(BOB, p, p, "counter", 10, give=(B_SWAP, B_JAM), take=(A_SWAP,))
    records = {p.id: p, c.id: c}
    [answer] = _choose(_book(p, c), Rules(accept_counter_that_only_adds=True), {}, records)
    assert answer.decision.rule == "accept_counter_that_only_adds"
    assert _choose(_book(p, c), Rules(accept_counter_that_only_adds=True), {}, {}) == []


def test_open_loans_count_accepted_and_handed_over_loans_per_borrower():
    lend = _propose(BOB, ALICE, (), (A_LEND,))
    accepted = _reply(ALICE, lend, lend, "accept", 10)
    swap = _propose(BOB, ALICE, (B_SWAP,), (A_SWAP,))
    swapped = _reply(ALICE, swap, swap, "accept", 10)
    book = _book(lend, accepted, swap, swapped)
    assert open_loans_by(book.involving(ME), ME, OFFERS) == {BOB.public: 1}
    assert open_loans_by(book.involving(BOB.public), BOB.public, OFFERS) == {}


def test_the_loan_limit_does_not_hold_back_a_give_request():
    first = _propose(BOB, ALICE, (), (A_LEND,))
    accepted = _reply(ALICE, first, first, "accept", 10)
    again = _propose(BOB, ALICE, (), (A_GIVE,))
    rules = Rules(accept_give_from_trust=0.5, max_open_loans_per_borrower=1)
    # a give request is not a loan: the limit does not hold it back
    [answer] = _choose(_book(first, accepted, again), rules, {BOB.public: 0.9}, {})
    assert answer.trade.proposal_id == again.id


# --- the replier, with a service that records what it is asked -----------------------------


@dataclass
class _Views:
    book_now: barter.TradeBook
    scores: dict[bytes, float]

    async def book(self) -> barter.TradeBook:
        return self.book_now

    async def trust(self) -> Any:
        return self


@dataclass
class _Feed:
    """The inbox feed: what the replier keeps there (and the feed tells watchers)."""

    notices: list[Any] = field(default_factory=list)

    async def keep(self, notices: list[Any]) -> int:
        self.notices += notices
        return len(notices)


@dataclass
class _Swarm:
    id: bytes


class _Node:
    def swarms(self) -> list[_Swarm]:
        return [_Swarm(SWARM)]

    def clock(self) -> int:
        return NOW


class _Reader:
    def __init__(self, records: dict[bytes, Record]) -> None:
        self.records = records

    def get(self, rid: bytes) -> Record | None:
        return self.records.get(rid)

    def items_by_id(self, ids: set[bytes]) -> dict[bytes, Any]:
        return {}


class _Service:
    """What AutoReplier uses of ApiService; ``reply`` records the call and moves the book on."""

    def __init__(self, records: tuple[Record, ...], trust: dict[bytes, float], refuse: bool = False) -> None:
        self.me = ME
        self.records = list(records)
        self.views = _Views(_book(*records), trust)
        self.reader = _Reader({r.id: r for r in records})
        self.node = _Node()
        self.feed = _Feed()
        self.replies: list[tuple[str, str, str]] = []
        self.refuse = refuse

    def name_of(self, key: bytes) -> str:
        return "Bob" if key == BOB.public else "someone"

    async def reply(self, proposal: str, action: str, *, note: str = "") -> dict[str, Any]:
        self.replies.append((proposal, action, note))
        if self.refuse:
            raise NotAllowed("offer is reserved")
        pid = bytes.fromhex(proposal)
        prev = self.views.book_now.trade(pid).latest_move
        body = ReplyBody(proposal=pid, action=action, note=note, prev=prev)
        self.records.append(ALICE.sign(body, ts=NOW + 100, seq=next(_seq)))
        self.views.book_now = _book(*self.records)
        return {}


@pytest.fixture
def offers_known(monkeypatch):
    """views.offer_infos reads the test's offers (the fake reader holds no item view)."""
    monkeypatch.setattr(
        "meshnode.views.offer_infos", lambda reader, ids: {i: OFFERS[i] for i in ids if i in OFFERS}
    )


async def test_replier_answers_once_and_tells_the_owners_inbox(offers_known):
    p = _propose(BOB, ALICE, (), (A_GIVE,))
    service = _Service((p,), {BOB.public: 0.9})
    replier = AutoReplier(service, Rules(accept_give_from_trust=0.5))  # type: ignore[arg-type]
    with trio.fail_after(5):
        sent = await replier.look()
        assert [a.decision.action for a in sent] == ["accept"]
        assert await replier.look() == []  # accepted now: nothing awaits me
    assert service.replies == [(p.id.hex(), "accept", sent[0].decision.note)]
    assert service.views.book_now.trade(p.id).state == barter.ACCEPTED
    [notice] = service.feed.notices
    assert (notice.kind, notice.peer, notice.about) == ("move", ME, p.id)
    assert notice.record == service.views.book_now.trade(p.id).latest_move
    assert replier.sent == 1


async def test_a_refused_reply_is_logged_and_not_retried_until_the_trade_moves(offers_known, caplog):
    p = _propose(BOB, ALICE, (), (A_GIVE,))
    service = _Service((p,), {BOB.public: 0.9}, refuse=True)
    replier = AutoReplier(service, Rules(accept_give_from_trust=0.5))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING), trio.fail_after(5):
        assert await replier.look() == []
        assert await replier.look() == []
    assert len(service.replies) == 1
    assert "offer is reserved" in caplog.text
    assert service.feed.notices == []


async def test_replier_with_no_rules_returns_at_once():
    service = _Service((), {})
    replier = AutoReplier(service, Rules())  # type: ignore[arg-type]
    with trio.fail_after(5):
        await replier.run()
    assert service.replies == []


async def test_after_a_restart_an_answered_trade_is_not_answered_again(offers_known):
    p = _propose(BOB, ALICE, (), (A_GIVE,))
    service = _Service((p,), {BOB.public: 0.9})
    with trio.fail_after(5):
        await AutoReplier(service, Rules(accept_give_from_trust=0.5)).look()  # type: ignore[arg-type]
        again = AutoReplier(service, Rules(accept_give_from_trust=0.5))  # type: ignore[arg-type]
        assert await again.look() == []  # a new replier remembers nothing: the records say it
    assert len(service.replies) == 1
