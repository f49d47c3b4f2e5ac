"""The ledger's service and watcher without sockets: pay's checks, balances, notices, fetching links.

A fake node (a real in-memory store, a key, a clock) stands in for the
network; ``sync_with`` records who the watcher asked for missing links.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from meshnode import records as r
from meshnode.api.ledgerservice import LedgerService, LedgerWatcher, prices_due
from meshnode.api.service import ApiService
from meshnode.errors import BadValue, NotAllowed
from meshnode.home import Home
from meshnode.identity import peer_id_of
from meshnode.store import Store
from tests.conftest import SWARM, Author
from tests.webutil import FakeNode as SharedFakeNode

ALICE, BOB, CAROL = Author(21), Author(22), Author(23)
ELM = SimpleNamespace(id=SWARM, name="Elm Street")


class FakeNode(SharedFakeNode):
    """The shared fake node (tests/webutil.py), with two swarm peers and a record of the syncs asked."""

    def __init__(self, store: Store, me: Author) -> None:
        super().__init__(store, me)
        self.synced: list[str] = []
        self.peers = ["peer-a", "peer-b"]

    def swarm_peers(self, swarm) -> list[str]:
        return list(self.peers)

    async def sync_with(self, peer: str, swarm) -> None:
        self.synced.append(peer)


@pytest.fixture
def node():
    with Store.open(":memory:") as store:
        yield FakeNode(store, ALICE)


@pytest.fixture
def api(node, tmp_path):
    service = ApiService(node, Home(tmp_path / "home"), request_stop=lambda: None)
    yield service
    service.close()


def vouch(author: Author, subject: Author) -> r.Record:
    return author.sign(r.AttestBody(subject=subject.public, level=1000))


def pay(payer: Author, payee: Author, amount: int, prev: r.Record | None = None, **kw) -> r.Record:
    seq = 1 if prev is None else prev.body.seq + 1
    body = r.TransferBody(
        to=payee.public, amount=amount, seq=seq, prev=None if prev is None else prev.id, **kw
    )
    return payer.sign(body)


def trusting(node: FakeNode) -> None:
    """Alice vouches for Bob and Carol, and they for her."""
    node.stored(vouch(ALICE, BOB), vouch(ALICE, CAROL), vouch(BOB, ALICE), vouch(CAROL, ALICE))


async def test_pay_signs_the_next_link_and_the_balance_says_where_the_limit_comes_from(api, node):
    trusting(node)
    service = LedgerService(api)
    with trio.fail_after(10):
        paid = await service.pay(peer_id_of(BOB.public), "2.5", "garden")
        again = await service.pay(peer_id_of(BOB.public), "1")
        [mine] = await service.balance()
        [bobs] = await service.balance(peer_id_of(BOB.public))
    assert (paid["seq"], paid["amount"], paid["balance"]) == (1, "2.50", "-2.50")
    assert again["seq"] == 2
    assert mine["balance"] == "-3.50" and bobs["balance"] == "3.50"
    # Alice's own limit: the base, plus what Bob and Carol (who vouch for her) extend
    assert mine["limit_from"]["base"] == "5.00" and mine["limit_from"]["trusted"]
    assert {line["by"] for line in mine["limit_from"]["extended"]} == {
        peer_id_of(BOB.public),
        peer_id_of(CAROL.public),
    }
    assert bobs["limit_from"]["extended"][0]["by"] == peer_id_of(ALICE.public)


async def test_pay_refuses_past_the_limit_in_the_owners_words_and_signs_nothing(api, node):
    node.stored(vouch(ALICE, BOB))  # nobody vouches for Alice: her limit is the base, 5.00
    service = LedgerService(api)
    with trio.fail_after(10):
        with pytest.raises(
            NotAllowed, match=r"would leave you at -5.01, below your credit limit of -5.00 hours"
        ):
            await service.pay(peer_id_of(BOB.public), "5.01")
        assert node.store.count(type="transfer") == 0
        with pytest.raises(NotAllowed, match="cannot pay yourself"):
            await service.pay(peer_id_of(ALICE.public), "1")
        for bad in ("0", "-1", "1.234", "lots"):
            with pytest.raises(BadValue):
                await service.pay(peer_id_of(BOB.public), bad)
        assert node.store.count(type="transfer") == 0
        ok = await service.pay(peer_id_of(BOB.public), "5")
    assert ok["balance"] == "-5.00"


async def test_a_stranger_has_no_credit_so_their_payment_does_not_count(api, node):
    trusting(node)
    stranger = Author(29)
    node.stored(pay(stranger, ALICE, 100))
    with trio.fail_after(10):
        [row] = await LedgerService(api).ledger()
    [t] = row["transfers"]
    assert t["status"] == "refused" and row["balance"] == "0.00"


async def test_the_watcher_asks_peers_for_a_missing_link_then_counts_it(api, node):
    trusting(node)
    first = pay(BOB, CAROL, 100)
    second = pay(BOB, ALICE, 50, first)
    node.stored(second)  # gossip brought place 2; place 1 is not here
    watcher = LedgerWatcher(api)
    with trio.fail_after(10):
        await watcher.look()
        assert node.synced == ["peer-a", "peer-b"] and watcher.fetch_rounds == 1
        [mine] = await LedgerService(api).ledger()
        assert mine["transfers"][0]["status"] == "waiting" and mine["balance"] == "0.00"
        await watcher.look()  # asked a moment ago: not again yet
        assert node.synced == ["peer-a", "peer-b"]
        node.stored(first)  # what the sync brings
        [mine] = await LedgerService(api).ledger()
        assert mine["transfers"][0]["status"] == "counted" and mine["balance"] == "0.50"
        await watcher.look()
    assert watcher.fetch_rounds == 1  # nothing is missing any more


async def test_the_watcher_keeps_a_fork_notice_once(api, node):
    trusting(node)
    to_alice = pay(BOB, ALICE, 100)
    to_carol = pay(BOB, CAROL, 100)  # the same place: a fork
    node.stored(to_alice, to_carol)
    watcher = LedgerWatcher(api)
    with trio.fail_after(10):
        await watcher.look()
        await watcher.look()
        notices = [n for n in await api.inbox.since(0) if n["kind"] == "fork"]
        [bob] = await LedgerService(api).balance(peer_id_of(BOB.public))
    assert len(notices) == 1 and "(one of them to you)" in notices[0]["text"]
    assert bob["limit"] == "0.00" and bob["fork"]["seq"] == 1 and bob["balance"] == "0.00"
    assert node.synced == []


def test_prices_due_names_the_received_priced_offers_not_yet_paid():
    me, them = ALICE.public, BOB.public
    item = SimpleNamespace
    trade = SimpleNamespace(proposal_id=b"p" * 32, offers=(b"h" * 32, b"m" * 32, b"x" * 32))
    items = {
        b"h" * 32: item(id=b"h" * 32, author=them, price=200),  # their help, priced: I pay
        b"m" * 32: item(id=b"m" * 32, author=me, price=300),  # my own priced offer: they pay, not me
        b"x" * 32: item(id=b"x" * 32, author=them, price=None),  # no price
    }
    [due] = prices_due([trade], items, set(), me)
    assert (due.payee, due.amount, due.offers) == (them, 200, (b"h" * 32,))
    assert prices_due([trade], items, {b"p" * 32}, me) == []
