"""The sync session (meshnode.protocols.sync.session), sans I/O: transcripts of both roles.

A :class:`Side` is one node as the session sees it: its items, the records it
holds, what it pruned, what its ingest would call invalid. :func:`run` drives
two sessions against each other in memory, every message through its wire
bytes, and returns the transcript; :func:`feed` plays a scripted (lying) peer
against one session. The lying peers of tests/test_sync.py that need no real
host are here.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode import wire
from meshnode.errors import SyncViolation
from meshnode.protocols.sync.limits import SyncLimits
from meshnode.protocols.sync.messages import (
    VERSION,
    End,
    Hello,
    Message,
    NotWant,
    Reconcile,
    Records,
    Refuse,
    RefuseCode,
    decode_message,
    record_frames,
)
from meshnode.protocols.sync.session import (
    Finished,
    Ingest,
    LookUpPruned,
    Phase,
    Push,
    Refused,
    Send,
    SyncSession,
)
from meshnode.reconcile import Reconciler, SortedItems
from meshnode.records import record_id

SWARM = bytes([7]) * 32
LIMITS = SyncLimits()


def record(n: int) -> bytes:
    """Stand-in record bytes: the session checks ids only (ingest checks the rest)."""
    return f"record number {n}".encode() * 3


@dataclass(eq=False)
class Side:
    """One node: the records it indexes and holds, what it pruned, what its ingest refuses."""

    name: str
    numbers: tuple[int, ...]  # its records (record(n)), indexed and held
    pruned: set[bytes] = field(default_factory=set)
    invalid: set[bytes] = field(default_factory=set)  # ids its ingest calls invalid
    gone: tuple[int, ...] = ()  # indexed, but gone from its store since
    session: SyncSession[Any] | None = None
    stored: list[bytes] = field(default_factory=list)
    refused: Refused | None = None
    finished: bool = False

    @property
    def items(self) -> SortedItems:
        return SortedItems((1_700_000_000_000 + n, record_id(record(n))) for n in {*self.numbers, *self.gone})

    @property
    def held(self) -> dict[bytes, bytes]:
        return {record_id(record(n)): record(n) for n in self.numbers}


def side(name: str, numbers: Iterable[int], **kw: Any) -> Side:
    return Side(name, tuple(numbers), **kw)


def initiator(s: Side, limits: SyncLimits = LIMITS) -> Side:
    s.session = SyncSession.initiator("peer-of-" + s.name, SWARM, s.items, limits)
    return s


def responder(s: Side, limits: SyncLimits = LIMITS, *, busy: bool = False, joined: bool = True) -> Side:
    items = s.items
    s.session = SyncSession.responder(
        "peer-of-" + s.name, limits, admit=lambda sid: items if joined and sid == SWARM else None, busy=busy
    )
    return s


Transcript = list[tuple[str, Message]]


def perform(s: Side, actions: list[Any], out: deque[Message], transcript: Transcript) -> None:
    """What a driver does with a session's actions (the service does the same with I/O)."""
    session = s.session
    assert session is not None
    for action in actions:
        if isinstance(action, Send):
            msg = decode_message(action.message.to_wire())  # through the wire
            assert msg == action.message
            transcript.append((s.name, msg))
            out.append(msg)
        elif isinstance(action, LookUpPruned):
            assert action.ids == session.need
            perform(s, session.notwant(s.pruned & action.ids), out, transcript)
        elif isinstance(action, Push):
            assert list(action.ids) == sorted(action.ids)
            held = s.held
            datas = [held[i] for i in action.ids if i in held]
            for batch in record_frames(datas, budget=200):  # small frames: several per push
                perform(s, session.records(batch), out, transcript)
            perform(s, session.end(), out, transcript)
        elif isinstance(action, Ingest):
            bad = sum(record_id(d) in s.invalid for d in action.records)
            s.stored.extend(d for d in action.records if record_id(d) not in s.invalid)
            perform(s, session.ingested(len(action.records) - bad, 0, bad), out, transcript)
        elif isinstance(action, Refused):
            s.refused = action
        elif isinstance(action, Finished):
            assert action.report is session.report
            s.finished = True
        else:
            raise AssertionError(action)


class Pair:
    """An initiator and a responder talking in memory, one message delivered per step."""

    def __init__(self, i: Side, r: Side) -> None:
        assert i.session is not None and r.session is not None
        self.i, self.r = i, r
        self.transcript: Transcript = []
        self.inbox: dict[Side, deque[Message]] = {i: deque(), r: deque()}
        perform(i, i.session.open(), self.inbox[r], self.transcript)
        perform(r, r.session.open(), self.inbox[i], self.transcript)

    def step(self) -> bool:
        """Deliver one message (to the responder first); False when none is left."""
        for to, other in ((self.r, self.i), (self.i, self.r)):
            if self.inbox[to]:
                assert to.session is not None
                perform(to, to.session.receive(self.inbox[to].popleft()), self.inbox[other], self.transcript)
                return True
        return False

    def run(self) -> Transcript:
        while self.step():
            assert len(self.transcript) < 10_000
        return self.transcript


def run(i: Side, r: Side) -> Transcript:
    """Drive initiator ``i`` and responder ``r`` until neither has anything to say."""
    return Pair(i, r).run()


def kinds(transcript: Transcript, who: str | None = None) -> list[str]:
    return [m.KIND.name for name, m in transcript if who is None or name == who]


def squeeze(names: list[str]) -> list[str]:
    """Runs of one kind as one: ["HELLO", "RECONCILE", "RECONCILE"] -> ["HELLO", "RECONCILE"]."""
    return [n for k, n in enumerate(names) if k == 0 or names[k - 1] != n]


def ids(numbers: Iterable[int]) -> set[bytes]:
    return {record_id(record(n)) for n in numbers}


# --- honest sessions ---------------------------------------------------------------


def test_two_honest_sides_exchange_exactly_what_each_lacks():
    i = initiator(side("I", range(0, 300)))
    r = responder(side("R", range(200, 450)))
    t = run(i, r)
    assert i.finished and r.finished
    assert i.session.phase is r.session.phase is Phase.DONE
    assert set(map(record_id, i.stored)) == ids(range(300, 450))
    assert set(map(record_id, r.stored)) == ids(range(0, 200))
    # the order of each side's messages
    assert squeeze(kinds(t, "I")) == ["HELLO", "RECONCILE", "NOTWANT", "RECORDS", "END"]
    assert squeeze(kinds(t, "R")) == ["RECONCILE", "NOTWANT", "RECORDS", "END"]
    # reconciliation alternates, responder first
    rec = [name for name, m in t if isinstance(m, Hello | Reconcile)]
    assert rec == ["I", "R"] * (len(rec) // 2) + ["I"] * (len(rec) % 2)
    ri, rr = i.session.report, r.session.report
    assert (ri.have, ri.need, rr.have, rr.need) == (200, 150, 150, 200)
    assert (ri.records_sent, ri.records_received, rr.records_sent, rr.records_received) == (
        200,
        150,
        150,
        200,
    )
    assert ri.records_stored == 150 and rr.records_stored == 200
    assert ri.records_missing == rr.records_missing == 0
    assert ri.rounds + rr.rounds == len(rec)
    assert ri.reconcile_bytes_out == rr.reconcile_bytes_in > 0
    assert rr.reconcile_bytes_out == ri.reconcile_bytes_in > 0
    assert rr.swarm == SWARM and (ri.role, rr.role) == ("initiator", "responder")
    ends = {name: m.count for name, m in t if isinstance(m, End)}
    assert ends == {"I": 200, "R": 150}


def test_identical_sets_move_no_record():
    i, r = initiator(side("I", range(50))), responder(side("R", range(50)))
    t = run(i, r)
    assert i.finished and r.finished and not i.stored and not r.stored
    assert kinds(t) == ["HELLO", "RECONCILE", "NOTWANT", "NOTWANT", "END", "END"]
    assert all(m == NotWant(()) for _, m in t if isinstance(m, NotWant))


def test_empty_sides_finish_too():
    i, r = initiator(side("I", [])), responder(side("R", []))
    run(i, r)
    assert i.finished and r.finished


def test_pruned_ids_are_not_wanted_and_not_pushed():
    i = initiator(side("I", range(100)))
    r = responder(side("R", range(60), pruned=ids(range(80, 100))))
    t = run(i, r)
    assert (r.name, NotWant(tuple(sorted(ids(range(80, 100)))))) in t
    assert set(map(record_id, r.stored)) == ids(range(60, 80))
    assert i.session.report.records_sent == 20 and r.session.report.records_missing == 0


def test_our_notwant_is_cut_at_the_limit_and_the_rest_may_still_come():
    limits = SyncLimits(max_notwant=5)
    i = initiator(side("I", range(30)))
    r = responder(side("R", [], pruned=ids(range(30))), limits)
    t = run(i, r)
    notwant = next(m for name, m in t if name == "R" and isinstance(m, NotWant))
    assert notwant.ids == tuple(sorted(ids(range(30))))[:5]
    assert len(r.stored) == 25 and r.finished  # the store refuses them, the session takes them


def test_records_the_pusher_no_longer_holds_are_missing_not_a_violation():
    i = initiator(side("I", range(40), gone=(100, 101, 102)))  # indexed, gone from the store
    r = responder(side("R", range(40)))
    run(i, r)
    assert r.finished and i.finished
    assert r.session.report.records_missing == 3 and r.session.report.records_received == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.integers(0, 400)), st.sets(st.integers(0, 400)), st.sets(st.integers(0, 400)))
def test_random_sides_converge_in_protocol_order(a, b, pruned_b):
    i = initiator(side("I", a))
    r = responder(side("R", b, pruned=ids(pruned_b)))
    t = run(i, r)
    assert i.finished and r.finished
    assert set(map(record_id, i.stored)) == ids(b - a)
    assert set(map(record_id, r.stored)) == ids(a - b - pruned_b)
    for who, opening in (("I", ["HELLO"]), ("R", [])):
        order = [k for k in squeeze(kinds(t, who)) if k != "RECORDS"]
        assert order in ([*opening, "RECONCILE", "NOTWANT", "END"], [*opening, "NOTWANT", "END"]), order


# --- refusals --------------------------------------------------------------------------


def hello(version: int = VERSION, swarm: bytes = SWARM) -> Hello:
    return Hello(version, swarm, Reconciler(SortedItems(), role="initiator").initiate())


@pytest.mark.parametrize(
    ("msg", "busy", "joined", "code", "text"),
    [
        (hello(version=2), False, True, RefuseCode.VERSION, "this node speaks sync version 1"),
        (hello(version=2), True, False, RefuseCode.VERSION, "this node speaks sync version 1"),
        (hello(swarm=bytes(32)), False, True, RefuseCode.NOT_JOINED, "this node has not joined that swarm"),
        (hello(), False, False, RefuseCode.NOT_JOINED, "this node has not joined that swarm"),
        (hello(), True, False, RefuseCode.NOT_JOINED, "this node has not joined that swarm"),
        (hello(), True, True, RefuseCode.BUSY, "busy: try again later"),
    ],
)
def test_the_responder_refuses_version_then_swarm_then_load(msg, busy, joined, code, text):
    r = responder(side("R", range(5)), busy=busy, joined=joined)
    assert r.session.open() == []
    actions = r.session.receive(msg)
    assert actions == [Send(Refuse(code, text)), Refused(code, text)]
    assert r.session.phase is Phase.REFUSED
    assert r.session.report.refuse_code == code and r.session.report.swarm == msg.swarm
    with pytest.raises(SyncViolation, match="session is refused"):
        r.session.receive(Reconcile(b""))


@pytest.mark.parametrize("code", [RefuseCode.BUSY, RefuseCode.NOT_JOINED, RefuseCode.VERSION, 0, 77])
def test_the_initiator_takes_a_refusal(code):
    i = initiator(side("I", range(5)))
    assert isinstance(i.session.open()[0].message, Hello)
    assert i.session.receive(Refuse(code, "because")) == [Refused(code, "because")]
    assert i.session.phase is Phase.REFUSED and i.session.report.refuse_code == code


def test_a_refusal_after_the_first_answer_is_a_violation():
    i = initiator(side("I", range(500)))
    r = responder(side("R", range(250, 700)))
    i_first = i.session.open()[0].message
    r.session.open()
    answer = r.session.receive(i_first)[0].message
    assert isinstance(i.session.receive(answer)[0].message, Reconcile)
    with pytest.raises(SyncViolation, match="expected RECONCILE, found REFUSE"):
        i.session.receive(Refuse(RefuseCode.BUSY, "too late"))


# --- lying peers: scripted transcripts -----------------------------------------------


def at_state(state: str) -> Side:
    """A session brought honestly to ``state``."""
    if state == "responder awaits HELLO":
        r = responder(side("R", range(5)))
        r.session.open()
        return r
    if state == "initiator awaits the answer":
        i = initiator(side("I", range(5)))
        i.session.open()
        return i
    if state == "reconciling":  # large sets: more than one round
        pair = Pair(initiator(side("I", range(2000))), responder(side("R", range(1000, 3000))))
        pair.step()
        assert pair.r.session.phase is Phase.RECONCILING
        return pair.r
    pair = Pair(initiator(side("I", range(40))), responder(side("R", range(20, 60))))
    r = pair.r
    while r.session.phase is not Phase.TRANSFER:  # until its NOTWANT is made
        pair.step()
    if state == "transfer awaits NOTWANT":
        return r
    perform(r, r.session.receive(NotWant(())), deque(), [])  # the peer wants all: R pushes, ENDs
    if state == "transfer receives RECORDS":
        return r
    perform(r, r.session.receive(Records(tuple(record(n) for n in range(20)))), deque(), [])
    perform(r, r.session.receive(End(20)), deque(), [])
    assert state == "done" and r.session.phase is Phase.DONE and r.finished
    return r


OTHERS: dict[str, Message] = {
    "HELLO": hello(),
    "REFUSE": Refuse(RefuseCode.BUSY, "no"),
    "RECONCILE": Reconcile(wire.encode([1, [[None, 0]]])),
    "NOTWANT": NotWant(()),
    "RECORDS": Records((record(0),)),
    "END": End(0),
}


@pytest.mark.parametrize(
    ("state", "allowed", "expected"),
    [
        ("responder awaits HELLO", {"HELLO"}, "expected HELLO"),
        ("initiator awaits the answer", {"REFUSE", "RECONCILE"}, "expected RECONCILE"),
        ("reconciling", {"RECONCILE"}, "expected RECONCILE"),
        ("transfer awaits NOTWANT", {"NOTWANT"}, "expected NOTWANT"),
        ("transfer receives RECORDS", {"RECORDS", "END"}, "expected RECORDS or END"),
        ("done", set(), "expected no message, the session is done"),
    ],
)
def test_every_message_out_of_order_is_a_violation_and_aborts(state, allowed, expected):
    for kind, msg in OTHERS.items():
        if kind in allowed:
            continue
        s = at_state(state)
        with pytest.raises(SyncViolation, match=expected) as err:
            s.session.receive(msg)
        assert kind in str(err.value)
        assert s.session.phase is Phase.ABORTED
        with pytest.raises(SyncViolation, match="session is aborted"):
            s.session.receive(msg)


def test_nothing_after_the_peers_end():
    r = at_state("transfer receives RECORDS")
    perform(r, r.session.receive(End(0)), deque(), [])  # R has pushed and ENDed, so it is done
    assert r.finished
    with pytest.raises(SyncViolation, match="expected no message, the session is done; found RECORDS"):
        r.session.receive(Records((record(0),)))
    # an END while our own push still runs: the incoming half is over all the same
    pair = Pair(initiator(side("I", range(40))), responder(side("R", range(20, 60))))
    while pair.r.session.phase is not Phase.TRANSFER:
        pair.step()
    r = pair.r
    assert isinstance(r.session.receive(NotWant(()))[0], Push)  # R pushes; not ended yet
    assert r.session.receive(End(0)) == [] and r.session.incoming_ended and not r.finished
    assert r.session.report.records_missing == 20  # it lacks 0..19; they never came
    with pytest.raises(SyncViolation, match="expected nothing after END, found RECORDS"):
        r.session.receive(Records((record(0),)))


def feed(s: Side, script: list[Message]) -> Transcript:
    """Play ``script`` as the peer of ``s`` (performing what ``s`` asks for)."""
    t: Transcript = []
    out: deque[Message] = deque()
    perform(s, s.session.open(), out, t)
    for msg in script:
        perform(s, s.session.receive(msg), out, t)
    return t


def honest_responder_script(i_items: Iterable[int], r_items: Iterable[int]) -> tuple[Side, list[Message]]:
    """The responder's part of a session up to (not incl.) its NOTWANT, recorded from an honest run."""
    i = initiator(side("I", i_items))
    r = responder(side("R", r_items))
    t = run(i, r)
    return initiator(side("I", i_items)), [m for name, m in t if name == "R" and isinstance(m, Reconcile)]


def test_a_record_nobody_asked_for_is_a_violation():
    i, script = honest_responder_script(range(30), range(30))  # nothing missing on either side
    with pytest.raises(SyncViolation, match=r"record [0-9a-f]{16}… was not expected"):
        feed(i, [*script, NotWant(()), Records((record(999),))])
    assert i.session.phase is Phase.ABORTED


def test_a_record_sent_twice_is_a_violation():
    i, script = honest_responder_script(range(30), range(31))  # the initiator lacks record 30
    feed(i, [*script, NotWant(()), Records((record(30),))])
    with pytest.raises(SyncViolation, match="was not expected"):
        i.session.receive(Records((record(30),)))


def test_an_end_that_miscounts_is_a_violation():
    """Replaces the 'END with a wrong count' attack's transcript part in tests/test_sync.py."""
    for count, arrived in [(5, 0), (0, 1), (2, 1)]:
        i, script = honest_responder_script(range(30), range(32))
        sent = tuple(record(n) for n in range(30, 30 + arrived))
        with pytest.raises(SyncViolation, match=f"END counts {count} records, {arrived} arrived"):
            feed(i, [*script, NotWant(()), *([Records(sent)] if sent else []), End(count)])


def test_a_notwant_naming_ids_we_do_not_push_is_a_violation():
    i, script = honest_responder_script(range(32), range(30))  # the responder lacks 30 and 31
    ok = NotWant(tuple(sorted(ids([30]))))
    feed(initiator(side("I", range(32))), [*script, ok])
    with pytest.raises(SyncViolation, match="NOTWANT names ids that the reconciliation did not find missing"):
        feed(i, [*script, NotWant(tuple(sorted(ids([5]))))])


def test_records_that_fail_validation_are_a_violation():
    i, script = honest_responder_script(range(30), range(33))
    i.invalid = ids([31])
    with pytest.raises(SyncViolation, match="1 records fail validation"):
        feed(i, [*script, NotWant(()), Records(tuple(record(n) for n in range(30, 33)))])
    assert i.session.phase is Phase.ABORTED


def test_a_malformed_fingerprint_is_a_violation():
    """Replaces the 'malformed fingerprint' attack of tests/test_sync.py."""
    r = responder(side("R", range(10)))
    bad_first = wire.encode([1, [[None, 1, b"\x01" * 17]]])  # a 17-byte fingerprint
    with pytest.raises(SyncViolation, match="bad reconciliation message"):
        feed(r, [Hello(VERSION, SWARM, bad_first)])


def test_a_diff_for_no_idlist_is_a_violation():
    """Replaces the 'diff for no idlist' attack of tests/test_sync.py."""
    r = responder(side("R", range(10)))
    with pytest.raises(SyncViolation, match="bad reconciliation message"):
        feed(r, [hello(), Reconcile(wire.encode([1, [[None, 3, [], b""]]]))])


def test_endless_fingerprints_hit_the_round_limit():
    r = responder(side("R", range(100)), SyncLimits(max_rounds=8))
    script: list[Message] = [hello()]
    script += [Reconcile(wire.encode([1, [[None, 1, os.urandom(16)]]])) for _ in range(20)]
    with pytest.raises(SyncViolation, match="at most 8 messages"):
        feed(r, script)
    assert r.session.report.reconcile_bytes_in > 0


def test_reconciliation_bytes_are_bounded():
    r = responder(side("R", range(100)), SyncLimits(max_reconcile_bytes=150))
    script: list[Message] = [hello()] + [
        Reconcile(wire.encode([1, [[None, 1, os.urandom(16)]]])) for _ in range(20)
    ]
    with pytest.raises(SyncViolation, match="more than 150 bytes of reconciliation"):
        feed(r, script)


def test_calls_out_of_turn_are_driver_bugs_not_violations():
    i = initiator(side("I", range(10)))
    with pytest.raises(RuntimeError):
        i.session.receive(End(0))  # before open()
    with pytest.raises(RuntimeError):
        i.session.notwant(())
    with pytest.raises(RuntimeError):
        i.session.records((record(1),))
    with pytest.raises(RuntimeError):
        i.session.end()
    with pytest.raises(RuntimeError):
        i.session.ingested(1, 0, 0)
    i.session.open()
    with pytest.raises(RuntimeError):
        i.session.open()
    # in TRANSFER, nothing is read before our NOTWANT is settled
    t = run(initiator(side("I", range(10))), responder(side("R", range(10))))
    r = responder(side("R", range(10)))
    r.session.open()
    for msg in (m for name, m in t if name == "I"):
        actions = r.session.receive(msg)
        if isinstance(actions[-1], LookUpPruned):
            break
    assert r.session.phase is Phase.TRANSFER
    with pytest.raises(RuntimeError):
        r.session.receive(NotWant(()))
    r.session.notwant(())
    with pytest.raises(RuntimeError):
        r.session.notwant(())
    with pytest.raises(RuntimeError):
        r.session.records((record(1),))  # no Push yet: the peer's NOTWANT has not come
    assert r.session.phase is Phase.TRANSFER  # none of it was held against the peer


def test_an_aborted_session_takes_late_answers_and_asks_nothing():
    """The push and the ingest run beside the reading: their answers may come after a violation."""
    i, script = honest_responder_script(range(30), range(32))  # I lacks 30 and 31
    feed(i, script)  # reconciled, I's NOTWANT made
    assert isinstance(i.session.receive(NotWant(()))[0], Push)  # the push starts (not performed here)
    assert i.session.receive(Records((record(30),))) == [Ingest((record(30),))]  # an ingest under way
    with pytest.raises(SyncViolation, match="was not expected"):
        i.session.receive(Records((record(999),)))
    assert i.session.phase is Phase.ABORTED
    assert i.session.ingested(1, 0, 0) == [] and i.session.report.records_stored == 1
    assert i.session.records((record(5),)) == [] and i.session.end() == []
    assert i.session.report.records_sent == 0
    with pytest.raises(RuntimeError):
        i.session.ingested(1, 0, 0)  # nothing was under way any more


# --- budgets ------------------------------------------------------------------------------


def test_records_over_the_allowance_are_checked_dropped_and_the_session_ends_ok():
    from meshnode.protocols.sync.limits import Allowance

    i = side("I", [])
    i.session = SyncSession.initiator(
        "peer-of-I", SWARM, i.items, LIMITS, allowance=Allowance(records=30, bytes=1 << 30, new_authors=10)
    )
    r = responder(side("R", range(100)))
    run(i, r)
    report = i.session.report
    assert i.finished and r.finished and i.session.phase is Phase.DONE
    assert len(i.stored) == 30 and report.records_stored == 30
    assert report.records_received == 100 and report.records_over_budget == 70
    assert report.budget == "reached the session's record budget"
    assert i.session.taken_records == 30


def test_the_byte_allowance_stops_taking_mid_frame():
    from meshnode.protocols.sync.limits import Allowance

    size = len(record(10))
    i = side("I", [])
    allowance = Allowance(records=1000, bytes=size * 10 + 5, new_authors=10, bytes_why="a test's byte budget")
    i.session = SyncSession.initiator("peer-of-I", SWARM, i.items, LIMITS, allowance=allowance)
    r = responder(side("R", range(10, 40)))  # equal sizes: ten fit
    run(i, r)
    assert len(i.stored) == 10 and i.session.report.records_over_budget == 20
    assert i.session.taken_bytes == size * 10
    assert i.session.report.budget == "reached a test's byte budget"


def test_new_authors_refused_by_ingest_name_the_budget():
    from meshnode.protocols.sync.limits import Allowance

    i = side("I", [])
    allowance = Allowance(
        records=1000, bytes=1 << 30, new_authors=3, new_authors_why="a test's author budget"
    )
    i.session = SyncSession.initiator("peer-of-I", SWARM, i.items, LIMITS, allowance=allowance)
    r = responder(side("R", range(5)))
    pair = Pair(i, r)
    while True:  # deliver until I has an Ingest to answer: answer it by hand
        actions = None
        if pair.inbox[i]:
            msg = pair.inbox[i].popleft()
            actions = i.session.receive(msg)
            ingests = [a for a in actions if isinstance(a, Ingest)]
            if ingests:
                assert i.session.ingested(2, 3, 0, new_authors_refused=3) == []
                break
            perform(i, actions, pair.inbox[r], pair.transcript)
        elif not pair.step():
            raise AssertionError("no RECORDS arrived")
    assert i.session.report.new_authors_refused == 3
    assert i.session.report.budget == "reached a test's author budget"
