"""Mutual credit: the ledger folded from transfer records (meshnode.ledger)."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode import ledger as lg
from meshnode import records as r
from meshnode.errors import NotAllowed, SignatureError, TransitionError, ValidationError
from tests.conftest import NOW, Author

PEOPLE = [Author(seed) for seed in range(1, 6)]
A, B, C, D = PEOPLE[:4]
UNKNOWN = bytes([99]) * 32


def pay(
    payer: Author, payee: Author, amount: int, prev: r.Record | None = None, *, acks=(), **kw
) -> r.Record:
    seq = kw.pop("seq", 1 if prev is None else prev.body.seq + 1)
    body = r.TransferBody(
        to=payee.public,
        amount=amount,
        seq=seq,
        prev=None if prev is None else prev.id,
        acks=tuple(sorted(a.id if isinstance(a, r.Record) else a for a in acks)),
        **kw,
    )
    return payer.sign(body, ts=kw.pop("ts", NOW))


def limits(default: int = 0, **by_name: int):
    people = {"A": A, "B": B, "C": C, "D": D}
    table = {people[name].public: v for name, v in by_name.items()}
    return lambda key: table.get(key, default)


def fold(records, limit_of=None) -> lg.Ledger:
    return lg.derive_ledger(records, limit_of or limits(1000))


def test_a_transfer_moves_credit_from_payer_to_payee():
    t = pay(A, B, 200, memo="2 hours of help")
    led = fold([t], limits(500))
    assert led.counted == {t.id} and not led.refused and not led.pending and not led.forks
    assert led.balance(A.public) == -200 and led.balance(B.public) == 200 and led.balance(C.public) == 0
    acc = led.accounts[A.public]
    assert (acc.head, acc.head_seq, acc.chain_balance, acc.limit) == (t.id, 1, -200, 500)
    assert led.accounts[B.public].uncredited == (t.id,)


def test_a_transfer_past_the_limit_is_refused_and_moves_nothing_later_links_still_count():
    over = pay(A, B, 200)
    fits = pay(A, C, 80, over)
    led = fold([over, fits], limits(100))
    assert "below their credit limit of -1.00" in led.refused[over.id]
    assert led.counted == {fits.id} and led.balance(A.public) == -80 and led.balance(B.public) == 0


def test_incoming_payments_are_spent_once_acknowledged_and_credited_once():
    income = pay(A, B, 200)
    no_ack = pay(B, C, 150)
    led = fold([income, no_ack], limits(500, B=0))
    assert "below their credit limit" in led.refused[no_ack.id]
    with_ack = pay(B, C, 150, acks=[income])
    led = fold([income, with_ack], limits(500, B=0))
    assert with_ack.id in led.counted and led.accounts[B.public].chain_balance == 50
    assert led.accounts[B.public].credited == {income.id} and led.accounts[B.public].uncredited == ()
    again = pay(B, C, 50, with_ack, acks=[income])
    led = fold([income, with_ack, again], limits(500, B=0))
    assert "credited already" in led.ignored_acks[again.id]
    assert again.id in led.counted and led.balance(B.public) == 0  # 50 left, still within the limit


def test_acknowledging_what_is_not_mine_or_does_not_count_credits_nothing():
    to_c = pay(A, C, 100)
    refused = pay(D, B, 900)  # D's limit is 0
    claim = pay(B, C, 10, acks=[to_c, refused])
    led = fold([to_c, refused, claim], limits(1000, D=0))
    why = led.ignored_acks[claim.id]
    assert "was not paid to" in why and "does not count" in why
    assert claim.id in led.counted and led.accounts[B.public].credited == frozenset()


def test_a_missing_link_or_acknowledged_transfer_makes_the_chain_wait():
    first = pay(A, B, 10)
    second = pay(A, B, 10, first)
    third = pay(A, B, 10, second)
    led = fold([second, third])
    assert led.pending == {second.id: first.id, third.id: first.id} and led.missing == {first.id}
    assert led.balance(A.public) == 0
    income = pay(C, B, 100)
    spend = pay(B, D, 50, acks=[income])
    after = pay(B, D, 10, spend)
    led = fold([spend, after])
    assert led.pending == {spend.id: income.id, after.id: income.id}
    # An acknowledged transfer that waits itself: the acknowledging link waits for what it waits for.
    led = fold([second, pay(B, D, 5, acks=[second])])
    assert set(led.pending.values()) == {first.id}
    assert fold([first, second, third, income, spend, after]).counted == {
        first.id,
        second.id,
        third.id,
        income.id,
        spend.id,
        after.id,
    }


def test_broken_links_are_refused():
    other = pay(B, C, 10)
    foreign = pay(A, C, 10, other)  # links to B's transfer
    first = pay(A, C, 10)
    skip = pay(A, C, 10, first, seq=3)  # seq 3 after seq 1
    after_skip = pay(A, C, 10, skip)
    led = fold([other, foreign, first, skip, after_skip])
    assert "links to" in led.refused[foreign.id] and "'s transfer" in led.refused[foreign.id]
    assert "links to one at seq 1" in led.refused[skip.id]
    assert "follows refused transfer" in led.refused[after_skip.id]
    assert led.counted == {other.id, first.id}


def test_two_transfers_at_one_place_are_a_fork_the_prefix_counts_nothing_after_it():
    first = pay(B, A, 100)
    to_alice = pay(B, A, 200, first)
    to_carol = pay(B, C, 200, first)
    later = pay(B, D, 1, to_alice)
    led = fold([first, to_alice, to_carol, later], limits(1000))
    proof = led.forks[B.public]
    assert {proof.a.id, proof.b.id} == {to_alice.id, to_carol.id} and proof.seq == 2
    lg.check_fork_proof(proof)
    assert led.counted == {first.id}
    for t in (to_alice, to_carol, later):
        assert "forks at seq 2" in led.refused[t.id]
    assert led.limits[B.public] == 0 and led.accounts[B.public].forked
    assert led.balance(B.public) == -100  # the payment before the fork stands
    # The same prev with another seq is a fork too (at the lower place).
    odd = pay(B, C, 5, first, seq=7)
    led = fold([first, to_alice, odd])
    assert led.forks[B.public].seq == 2 and to_alice.id in led.refused
    # Two first links.
    led = fold([first, pay(B, C, 5)])
    assert led.forks[B.public].seq == 1 and not led.counted


def test_a_fork_proof_checks_only_a_real_fork():
    first = pay(B, A, 100)
    x, y = pay(B, A, 200, first), pay(B, C, 200, first)
    good = lg.ForkProof(B.public, *sorted((x, y), key=lambda t: t.id))
    lg.check_fork_proof(good)
    with pytest.raises(ValidationError, match="different places"):
        lg.check_fork_proof(lg.ForkProof(B.public, first, x))
    with pytest.raises(ValidationError, match="same one twice"):
        lg.check_fork_proof(lg.ForkProof(B.public, x, x))
    with pytest.raises(ValidationError, match="not by"):
        lg.check_fork_proof(lg.ForkProof(A.public, x, y))
    with pytest.raises(ValidationError, match="two transfers"):
        lg.check_fork_proof(lg.ForkProof(B.public, x, B.sign(r.ProfileBody(nickname="b"))))
    forged = dataclasses.replace(y, body=dataclasses.replace(y.body, amount=1))
    with pytest.raises(SignatureError):
        lg.check_fork_proof(lg.ForkProof(B.public, x, forged))


def test_the_fold_refuses_other_records_mixed_swarms_and_negative_limits():
    with pytest.raises(ValidationError, match="transfer records"):
        fold([A.sign(r.ProfileBody(nickname="a"))])
    other_swarm = A.sign(r.TransferBody(to=B.public, amount=1, seq=1), swarm=bytes(32))
    with pytest.raises(ValidationError, match="one swarm"):
        fold([pay(A, B, 1), other_swarm])
    with pytest.raises(ValidationError, match=">= 0"):
        fold([pay(A, B, 1)], lambda key: -1)


def test_check_transfer_refuses_what_the_fold_would_not_count():
    lim = limits(300, B=0)
    income = pay(A, B, 200)
    led = fold([income], lim)
    body = lg.next_transfer(led, B.public, C.public, 150, lim, memo="eggs")
    assert body.acks == (income.id,) and body.seq == 1 and body.prev is None
    with pytest.raises(NotAllowed, match="someone else"):
        lg.check_transfer(led, dataclasses.replace(body, to=B.public), B.public, lim)
    with pytest.raises(NotAllowed, match="below their credit limit"):
        lg.next_transfer(led, B.public, C.public, 201, lim)
    with pytest.raises(TransitionError, match="seq 1 with no prev"):
        lg.check_transfer(led, dataclasses.replace(body, seq=2, prev=income.id), B.public, lim)
    with pytest.raises(TransitionError, match="not held"):
        lg.check_transfer(led, dataclasses.replace(body, acks=(UNKNOWN,)), B.public, lim)
    with pytest.raises(TransitionError, match="not to"):
        lg.check_transfer(led, dataclasses.replace(body, to=C.public), D.public, lim)
    spent = B.sign(body)
    led = fold([income, spent], lim)
    assert spent.id in led.counted
    with pytest.raises(TransitionError, match="credited already"):
        lg.check_transfer(
            led, r.TransferBody(to=C.public, amount=1, seq=2, prev=spent.id, acks=(income.id,)), B.public, lim
        )
    # A link refused for the limit still holds its place: the next one follows it.
    stray = pay(B, D, 10_000, spent)
    led = fold([income, spent, stray], lim)
    assert "below their credit limit" in led.refused[stray.id]
    lg.check_transfer(led, r.TransferBody(to=C.public, amount=1, seq=3, prev=stray.id), B.public, lim)
    with pytest.raises(TransitionError, match="at seq 3"):
        lg.check_transfer(led, r.TransferBody(to=C.public, amount=1, seq=2, prev=spent.id), B.public, lim)
    # A held transfer of B at the next place that is not placed: signing another there would fork.
    broken = pay(B, D, 1, income, seq=3)  # links to A's transfer
    led = fold([income, spent, stray, broken], lim)
    assert "links to" in led.refused[broken.id]
    with pytest.raises(TransitionError, match="would fork"):
        lg.check_transfer(led, r.TransferBody(to=C.public, amount=1, seq=3, prev=stray.id), B.public, lim)


def test_check_transfer_refuses_a_forker_a_waiting_chain_and_unusable_acks():
    lim = limits(1000)
    first = pay(B, A, 1)
    led = fold([first, pay(B, A, 2, first), pay(B, C, 2, first)], lim)
    with pytest.raises(NotAllowed, match="forks at seq 2"):
        lg.next_transfer(led, B.public, A.public, 1, lim)
    waiting = pay(B, A, 2, first)
    led = fold([waiting], lim)
    with pytest.raises(TransitionError, match="waits for"):
        lg.check_transfer(led, r.TransferBody(to=C.public, amount=1, seq=1), B.public, lim)
    refused = pay(D, C, 5000)
    pending = pay(A, C, 5, pay(A, C, 1))
    led = fold([refused, waiting, pending], lim)
    for ack, words in [(refused.id, "does not count"), (pending.id, "waits for")]:
        with pytest.raises(TransitionError, match=words):
            lg.check_transfer(led, r.TransferBody(to=A.public, amount=1, seq=1, acks=(ack,)), C.public, lim)


# --- properties ---------------------------------------------------------------------


@st.composite
def histories(draw):
    """A set of transfers among four members: chains with forks, broken links and acknowledgements."""
    made: list[r.Record] = []
    heads: dict[bytes, list[r.Record]] = {p.public: [] for p in PEOPLE[:4]}
    for _ in range(draw(st.integers(1, 16))):
        payer = draw(st.sampled_from(PEOPLE[:4]))
        payee = draw(st.sampled_from([p for p in PEOPLE[:4] if p is not payer]))
        own = heads[payer.public]
        how = draw(st.sampled_from(["next"] * 6 + ["fork", "odd"]))
        if how == "next" or not own:
            prev = own[-1] if own else None
            seq = 1 if prev is None else prev.body.seq + 1
        elif how == "fork":
            prev = draw(st.sampled_from([None, *own]))
            seq = 1 if prev is None else prev.body.seq + 1
        else:
            prev = draw(st.sampled_from(made))
            seq = draw(st.integers(2, 6))
        incoming = [t for t in made if t.body.to == payer.public]
        others = [t for t in made if t.body.to != payer.public]
        acks = draw(st.lists(st.sampled_from(incoming), max_size=3, unique=True)) if incoming else []
        if others and draw(st.integers(0, 5)) == 0:
            acks.append(draw(st.sampled_from(others)))
        if draw(st.integers(0, 29)) == 0:
            acks.append(UNKNOWN)
        rec = payer.sign(
            r.TransferBody(
                to=payee.public,
                amount=draw(st.integers(1, 200)),
                seq=seq,
                prev=None if prev is None else prev.id,
                acks=tuple(sorted({a if isinstance(a, bytes) else a.id for a in acks})),
            ),
            ts=NOW + draw(st.integers(0, 10_000)),
        )
        made.append(rec)
        if how == "next" or not own:
            own.append(rec)
    lossy = draw(st.booleans())
    kept = [t for t in made if not lossy or draw(st.integers(0, 7)) != 0]
    table = {p.public: draw(st.integers(0, 800)) for p in PEOPLE[:4]}
    return kept, table


def _forkers(records) -> set[bytes]:
    found = set()
    for x in records:
        for y in records:
            if x.id != y.id and x.author == y.author and lg._same_place(x.body, y.body):
                found.add(x.author)
    return found


@settings(max_examples=120, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_any_set_of_transfers_balances_to_zero_within_limits_forks_detected_order_free(history, rnd):
    records, table = history

    def limit_of(key: bytes) -> int:
        return table.get(key, 0)

    led = lg.derive_ledger(records, limit_of)
    ids = {t.id for t in records}
    # Each transfer held is counted, refused or pending: exactly one.
    assert led.counted | set(led.refused) | set(led.pending) == ids
    assert not led.counted & set(led.refused) and not led.counted & set(led.pending)
    assert not set(led.refused) & set(led.pending)
    assert all(m not in ids for m in led.missing)
    # Balances sum to zero, and are the counted transfers.
    assert sum(led.balances.values()) == 0
    for key, balance in led.balances.items():
        moved = sum(t.body.amount for t in records if t.id in led.counted and t.body.to == key)
        moved -= sum(t.body.amount for t in records if t.id in led.counted and t.author == key)
        assert balance == moved
        # No member passes their limit.
        assert balance >= led.accounts[key].chain_balance >= -limit_of(key)
    # Every fork is detected, its proof checks, and nothing from its place on counts.
    assert set(led.forks) == _forkers(records)
    for author, proof in led.forks.items():
        lg.check_fork_proof(proof)
        assert proof.a.id in ids and proof.b.id in ids and led.limits[author] == 0
        assert all(t.body.seq < proof.seq for t in records if t.author == author and t.id in led.counted)
    # Same set, any order and repetition: the same ledger.
    shuffled = records + rnd.sample(records, len(records) // 2)
    rnd.shuffle(shuffled)
    assert lg.derive_ledger(shuffled, limit_of) == led


@settings(max_examples=80, deadline=None)
@given(histories(), st.sampled_from(PEOPLE[:4]), st.sampled_from(PEOPLE[:4]), st.integers(1, 800))
def test_what_check_transfer_accepts_the_fold_counts(history, payer, payee, amount):
    records, table = history

    def limit_of(key: bytes) -> int:
        return table.get(key, 0)

    led = lg.derive_ledger(records, limit_of)
    try:
        body = lg.next_transfer(led, payer.public, payee.public, amount, limit_of)
    except (NotAllowed, TransitionError):
        return
    new = payer.sign(body, ts=NOW + 20_000)
    after = lg.derive_ledger([*records, new], limit_of)
    assert new.id in after.counted and not after.forks.keys() - led.forks.keys()
    assert after.counted == led.counted | {new.id}
    assert after.balance(payer.public) == led.balance(payer.public) - amount


def test_a_long_chain_with_crossing_acknowledgements_folds_in_any_order():
    rnd = random.Random(15)
    lim = limits(500)
    records: list[r.Record] = []
    for _ in range(120):
        payer, payee = rnd.sample(PEOPLE[:4], 2)
        led = fold(records, lim)
        try:
            body = lg.next_transfer(led, payer.public, payee.public, rnd.randint(1, 300), lim)
        except NotAllowed:
            continue
        records.append(payer.sign(body))
    led = fold(records, lim)
    assert led.counted == {t.id for t in records} and len(records) > 60
    shuffled = records[:]
    rnd.shuffle(shuffled)
    assert fold(shuffled, lim) == led
