"""Tests for meshnode.reconcile: range-based set reconciliation, sans I/O."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshnode import wire
from meshnode.errors import BadValue, DecodeError, MeshError, ValidationError
from meshnode.reconcile import (
    INFINITY,
    LOWEST,
    MAX_IDS_PER_RANGE,
    MAX_MESSAGE_BYTES,
    MAX_RANGES_PER_MESSAGE,
    MAX_TS,
    Accumulator,
    Bound,
    DiffRange,
    FingerprintRange,
    IdListRange,
    Message,
    ReconcileError,
    Reconciler,
    SkipRange,
    SortedItems,
    bound_between,
    fingerprint,
    min_message_bytes,
    want_bitmap,
    wanted_ids,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the in-process harness ------------------------------------------------------


@dataclass
class Session:
    initiator: Reconciler
    responder: Reconciler
    transcript: list[bytes] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return len(self.transcript)

    @property
    def total_bytes(self) -> int:
        return sum(map(len, self.transcript))


def run(a: Any, b: Any, *, kw_a: dict | None = None, kw_b: dict | None = None, **kw: Any) -> Session:
    """Reconcile ``a`` (initiator) with ``b`` (responder), passing bytes back and forth."""
    init = Reconciler(_source(a), role="initiator", **{**kw, **(kw_a or {})})
    resp = Reconciler(_source(b), role="responder", **{**kw, **(kw_b or {})})
    s = Session(init, resp)
    msg: bytes | None = init.initiate()
    receiver, sender = resp, init
    while msg is not None:
        s.transcript.append(msg)
        assert not receiver.done
        msg = receiver.receive(msg)
        if msg is None:
            assert receiver.done and sender.done
        receiver, sender = sender, receiver
        assert len(s.transcript) < 100_000, "no termination"
    return s


def _source(x: Any) -> SortedItems:
    return x if isinstance(x, SortedItems) else SortedItems(x)


def check_exact(s: Session, a: Any, b: Any) -> None:
    """Both sides know exactly A - B and B - A, as mirror images."""
    ida, idb = _ids(a), _ids(b)
    i, r = s.initiator, s.responder
    assert i.done and r.done
    assert i.have == ida - idb
    assert i.need == idb - ida
    assert r.have == i.need
    assert r.need == i.have
    assert (ida | i.need) == (idb | r.need) == ida | idb  # both can compute the union
    assert i.rounds + r.rounds == s.messages


def _ids(x: Any) -> set[bytes]:
    return {item_id for _, item_id in x}


def receiver_before(a: Any, b: Any, transcript: list[bytes], k: int, **kw: Any) -> Reconciler:
    """A fresh reconciler in the state in which it received ``transcript[k]``."""
    init = Reconciler(_source(a), role="initiator", **kw)
    resp = Reconciler(_source(b), role="responder", **kw)
    assert init.initiate() == transcript[0]
    receiver = resp
    for j in range(k):
        reply = receiver.receive(transcript[j])
        assert reply == transcript[j + 1]
        receiver = init if receiver is resp else resp
    return receiver


def item(ts: int, n: int) -> tuple[int, bytes]:
    return (ts, n.to_bytes(4, "big") * 8)


def random_items(n: int, seed: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    return [(1_700_000_000_000 + i * 1000 + rng.randrange(1000), rng.randbytes(32)) for i in range(n)]


# --- strategies ----------------------------------------------------------------

# ids that often share long prefixes and timestamps that often collide, so that
# bounds need id prefixes of every length
ids_st = st.builds(
    lambda fill, n, tail: (bytes([fill]) * n + tail)[:32],
    st.integers(0, 2),
    st.integers(0, 32),
    st.binary(min_size=32, max_size=32),
)
ts_st = st.one_of(st.integers(0, 4), st.just(MAX_TS), st.integers(0, MAX_TS))
items_st = st.lists(st.tuples(ts_st, ids_st), unique_by=lambda it: it[1], max_size=120)


@st.composite
def universes(draw: Any) -> list[tuple[int, bytes]]:
    """Either a small hand-shrinkable list, or a larger seeded one with the same traits."""
    if draw(st.booleans()):
        return draw(items_st)
    n = draw(st.integers(0, 400))
    rng = random.Random(draw(st.integers(0, 2**32)))
    spread = draw(st.sampled_from([1, 3, 50, MAX_TS]))
    shared = draw(st.integers(0, 32))  # leading id bytes drawn from {0, 1} only
    out: dict[bytes, int] = {}
    while len(out) < n:
        head = bytes(rng.randrange(2) for _ in range(shared))
        out[(head + rng.randbytes(32))[:32]] = (
            rng.randrange(spread) if spread < MAX_TS else rng.randrange(2**64)
        )
    return [(ts, item_id) for item_id, ts in out.items()]


@st.composite
def pairs(draw: Any) -> tuple[list, list]:
    """Two sets over one universe: each item is in A only, B only, or both."""
    universe = draw(universes())
    shape = draw(st.sampled_from(["mixed", "identical", "disjoint", "empty_a", "empty_b", "one_off"]))
    if shape == "mixed":
        rng = random.Random(draw(st.integers(0, 2**32)))
        p_a, p_b = draw(st.sampled_from([(0.5, 0.5), (0.02, 0.02), (0.3, 0.0), (0.0, 0.3), (0.1, 0.6)]))
        a, b = [], []
        for u in universe:
            x = rng.random()
            if x >= p_b:
                a.append(u)
            if x < p_b or x >= p_b + p_a:
                b.append(u)
        return a, b
    if shape == "identical":
        return universe, list(universe)
    if shape == "disjoint":
        cut = draw(st.integers(0, len(universe)))
        return universe[:cut], universe[cut:]
    if shape == "empty_a":
        return [], universe
    if shape == "empty_b":
        return universe, []
    if not universe:
        return [], []
    k = draw(st.integers(0, len(universe) - 1))
    rest = universe[:k] + universe[k + 1 :]
    return (universe, rest) if draw(st.booleans()) else (rest, universe)


@st.composite
def tunings(draw: Any) -> dict[str, int]:
    t = draw(st.integers(1, 8))
    budget = draw(st.sampled_from([min_message_bytes(t), 2 * min_message_bytes(t), MAX_MESSAGE_BYTES]))
    return {
        "max_ids_per_range": t,
        "branching": draw(st.integers(2, 6)),
        "max_message_bytes": budget,
        "max_rounds": 100_000,
    }


# --- reconciliation is exact -------------------------------------------------------


@FAST
@given(pairs(), tunings(), tunings())
def test_random_pairs_reconcile_exactly_in_both_directions(ab, ta, tb):
    a, b = ab
    s = run(a, b, kw_a=ta, kw_b=tb)  # the two sides may be tuned differently
    check_exact(s, a, b)
    for k, msg in enumerate(s.transcript):
        limit = (ta if k % 2 == 0 else tb)["max_message_bytes"]
        assert len(msg) <= limit
        assert Message.from_wire(msg).to_wire() == msg  # canonical round trip


@FAST
@given(pairs())
def test_random_pairs_with_defaults(ab):
    a, b = ab
    check_exact(run(a, b), a, b)


N = 300
UNIVERSE = [item(i // 3, i) for i in range(N)]  # three items per ts


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([], []),
        ([], UNIVERSE),
        (UNIVERSE, []),
        (UNIVERSE, UNIVERSE),
        (UNIVERSE[: N // 2], UNIVERSE[N // 2 :]),  # disjoint
        (UNIVERSE[::2], UNIVERSE[1::2]),  # disjoint, interleaved
        (UNIVERSE, UNIVERSE[:7] + UNIVERSE[8:]),  # one missing on the responder
        (UNIVERSE[:7] + UNIVERSE[8:], UNIVERSE),  # one missing on the initiator
        (UNIVERSE[10:], UNIVERSE[:-10]),  # large overlap
        ([item(0, 1)], [item(MAX_TS, 2)]),  # extreme timestamps
    ],
    ids=[
        "empty-empty",
        "empty-full",
        "full-empty",
        "identical",
        "disjoint",
        "interleaved",
        "one-less-responder",
        "one-less-initiator",
        "large-overlap",
        "extreme-ts",
    ],
)
@pytest.mark.parametrize("tuning", [{}, {"max_ids_per_range": 2, "branching": 3}], ids=["default", "deep"])
def test_fixed_cases(a, b, tuning):
    s = run(a, b, **tuning)
    check_exact(s, a, b)


def test_identical_sets_take_one_round_trip():
    s = run(UNIVERSE, UNIVERSE)
    assert s.messages == 2
    assert Message.from_wire(s.transcript[-1]).is_done
    assert not s.initiator.have | s.initiator.need | s.responder.have | s.responder.need


def test_empty_sets_take_three_messages():
    s = run([], [])
    assert s.messages == 3  # idlist [], diff, done
    check_exact(s, [], [])


# --- scaling -------------------------------------------------------------------------

BIG = random_items(100_000, seed=7)
BRANCHING = 16


@pytest.fixture(scope="module")
def big_sets() -> dict[int, tuple[SortedItems, SortedItems, SortedItems, SortedItems]]:
    """For each n: the full set, it minus one item, and two sets differing by 1 % each way."""
    out = {}
    rng = random.Random(3)
    for n in (1_000, 10_000, 100_000):
        items = BIG[:n]
        full = SortedItems(items)
        one_less = SortedItems(items[: n // 3] + items[n // 3 + 1 :])
        drop = rng.sample(range(n), n // 100)
        drop_a, drop_b = set(drop[: len(drop) // 2]), set(drop[len(drop) // 2 :])
        pa = SortedItems(x for i, x in enumerate(items) if i not in drop_a)
        pb = SortedItems(x for i, x in enumerate(items) if i not in drop_b)
        out[n] = (full, one_less, pa, pb)
    return out


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_one_difference_costs_log_rounds_and_few_bytes(big_sets, n):
    full, one_less, _, _ = big_sets[n]
    for a, b in ((full, one_less), (one_less, full)):
        s = run(a, b)
        check_exact(s, a, b)
        # measured (defaults: branching 16, max_ids_per_range 16): 5 / 6 / 7 messages,
        # 1.0 / 1.4 / 1.8 KB for n = 1k / 10k / 100k: one level of the tree per
        # message, then idlist, diff and done
        assert s.messages <= math.log(n, BRANCHING) + 4
        assert s.total_bytes <= 1200 * math.log(n, BRANCHING)  # ~4.6 KB at 100k


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000])
def test_one_percent_difference(big_sets, n):
    _, _, a, b = big_sets[n]
    s = run(a, b)
    check_exact(s, a, b)
    diffs = len(s.initiator.have) + len(s.initiator.need)
    assert diffs == n // 100
    # n // 100 ids differ in all, half each way. Measured: 5 / 6 / 15 messages,
    # 5.4 KB / 50 KB / 607 KB for n = 1k / 10k / 100k: every differing leaf costs
    # its idlist (~16 ids) plus a level of fingerprints, ~600 B per difference
    assert s.total_bytes <= 800 * diffs
    assert s.messages <= 2 * math.log(n, BRANCHING) + s.total_bytes / (MAX_MESSAGE_BYTES / 2) + 4


def test_bootstrap_from_empty_is_close_to_the_raw_ids(big_sets):
    full = big_sets[10_000][0]
    s = run([], full)
    check_exact(s, [], full)
    raw = 32 * len(full)
    # measured: 14 messages, 352 KB for 320 KB of ids
    assert s.total_bytes <= 1.15 * raw
    assert s.messages <= 2 * raw / MAX_MESSAGE_BYTES + 6


def test_full_initiator_against_empty_responder(big_sets):
    full = big_sets[10_000][0]
    s = run(full, [])
    check_exact(s, full, [])
    assert s.total_bytes <= 1.15 * 32 * len(full)


def test_tiny_budget_still_terminates_and_respects_it():
    a = random_items(2_000, seed=1)
    b = a[::2] + random_items(300, seed=2)
    t = 4
    budget = min_message_bytes(t)
    s = run(a, b, max_ids_per_range=t, branching=8, max_message_bytes=budget, max_rounds=100_000)
    check_exact(s, a, b)
    assert max(map(len, s.transcript)) <= budget


# --- the local set: SortedItems, bounds, fingerprints ----------------------------------------


@FAST
@given(items_st, st.lists(st.tuples(ts_st, st.binary(max_size=33)), min_size=2, max_size=2))
def test_sorted_items_agree_with_brute_force(items, raw_bounds):
    src = SortedItems(items)
    lo, hi = sorted(Bound(ts, p[:32]) for ts, p in raw_bounds)
    assume(lo < hi)
    for lo_, hi_ in ((lo, hi), (LOWEST, hi), (lo, INFINITY), (LOWEST, INFINITY)):
        inside = sorted(it for it in items if lo_ <= it < hi_)
        assert src.count(lo_, hi_) == len(inside)
        assert src.fingerprint(lo_, hi_) == fingerprint(i for _, i in inside)
        assert src.items(lo_, hi_, 5) == inside[:5]
        for parts in (2, 3, 16):
            points = src.split_points(lo_, hi_, parts)
            k = min(parts, len(inside))
            assert len(points) == max(k - 1, 0)
            edges = [lo_, *points, hi_]
            assert all(x < y for x, y in itertools.pairwise(edges))
            sizes = [sum(1 for it in inside if x <= it < y) for x, y in itertools.pairwise(edges)]
            assert sum(sizes) == len(inside)
            if k >= 1:
                assert max(sizes) - min(sizes) <= 1


@FAST
@given(st.tuples(ts_st, ids_st), st.tuples(ts_st, ids_st))
def test_bound_between_is_shortest_separator(x, y):
    if x == y or x[1] == y[1]:
        return
    prev, nxt = sorted([x, y])
    b = bound_between(prev, nxt)
    assert prev < b <= nxt
    if b.prefix:
        assert prev[0] == nxt[0]
        assert not prev < Bound(b.ts, b.prefix[:-1])  # one byte shorter no longer separates


@FAST
@given(st.lists(ids_st, unique=True, max_size=40), st.lists(ids_st, unique=True, max_size=40))
def test_fingerprint_is_combinable(xs, ys):
    ys = [y for y in ys if y not in xs]
    ax, ay = Accumulator.of(xs), Accumulator.of(ys)
    assert (ax + ay).digest() == fingerprint(xs + ys) == fingerprint(reversed(ys + xs))
    assert (ax + ay - ay).digest() == ax.digest()
    acc = ax + ay
    for y in ys:
        acc = acc.remove(y)
    assert acc == ax
    assert len(fingerprint(xs)) == 16


def test_fingerprint_depends_on_count_and_is_not_xor():
    a, b = bytes(32), bytes([1]) + bytes(31)
    assert fingerprint([a]) != fingerprint([])  # the zero id still counts
    assert fingerprint([b, b]) != fingerprint([])  # a doubled id does not cancel (as it would with XOR)


def test_sorted_items_refuses_bad_items():
    with pytest.raises(BadValue):
        SortedItems([(0, b"short")])
    with pytest.raises(BadValue):
        SortedItems([(-1, bytes(32))])
    with pytest.raises(BadValue):
        SortedItems([(MAX_TS + 1, bytes(32))])
    with pytest.raises(BadValue):
        SortedItems([(1, bytes(32)), (2, bytes(32))])
    assert len(SortedItems([(1, bytes(32)), (1, bytes(32))])) == 1


def test_want_bitmap_round_trip_and_strictness():
    listed = [bytes([i]) * 32 for i in range(10)]
    bm = want_bitmap(listed, [listed[0], listed[9]])
    assert bm == bytes([1, 2])
    assert wanted_ids(listed, bm) == [listed[0], listed[9]]
    assert want_bitmap([], []) == b""
    with pytest.raises(ReconcileError):
        wanted_ids(listed, b"\x01")  # too short
    with pytest.raises(ReconcileError):
        wanted_ids(listed, bytes([0, 4]))  # bit 10 is past the list


# --- the wire form -------------------------------------------------------------------------

ID1, ID2 = bytes([1]) * 32, bytes([2]) * 32
FP = bytes(16)


def enc(ranges: list, version: int = 1) -> bytes:
    return wire.encode([version, ranges])


def test_message_round_trip_all_modes():
    msg = Message(
        (
            SkipRange(Bound(5, b"")),
            FingerprintRange(Bound(5, b"\x07"), FP),
            IdListRange(Bound(9, b""), (ID1, ID2)),
            DiffRange(Bound(MAX_TS, b"\xff" * 32), (ID2,), b"\x01"),
            SkipRange(INFINITY),
        )
    )
    data = msg.to_wire()
    assert wire.decode(data, max_size=MAX_MESSAGE_BYTES) == [
        1,
        [
            [[5, b""], 0],
            [[0, b"\x07"], 1, FP],
            [[4, b""], 2, [ID1, ID2]],
            [[MAX_TS - 9, b"\xff" * 32], 3, [ID2], b"\x01"],
            [None, 0],
        ],
    ]
    assert Message.from_wire(data) == msg
    assert Message((SkipRange(INFINITY),)).is_done


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (enc([[None, 0]], version=2), ReconcileError),  # unknown version
        (wire.encode([1]), ReconcileError),
        (wire.encode({"v": 1}), ReconcileError),
        (enc([]), ReconcileError),  # no ranges
        (enc([[[1, b""], 0]]), ReconcileError),  # does not reach INFINITY
        (enc([[None, 0], [None, 0]]), ReconcileError),  # INFINITY twice
        (enc([[[0, b""], 1, FP], [None, 0]]), ReconcileError),  # empty first range
        (enc([[[2, b"\x05"], 1, FP], [[0, b"\x05"], 0], [None, 1, FP]]), ReconcileError),  # not increasing
        (enc([[[2, b"\x05"], 1, FP], [[0, b"\x04"], 0], [None, 1, FP]]), ReconcileError),  # decreasing
        (enc([[[-1, b""], 0], [None, 1, FP]]), ReconcileError),  # negative delta
        (enc([[[MAX_TS, b""], 1, FP], [[1, b""], 1, FP], [None, 0]]), ReconcileError),  # ts overflow
        (enc([[[1, b"\x00" * 33], 0], [None, 1, FP]]), ReconcileError),  # prefix too long
        (enc([[[1, "x"], 0], [None, 1, FP]]), ReconcileError),  # prefix not bytes
        (enc([[[1, b""], 0], [None, 0]]), ReconcileError),  # neighbouring skips
        (enc([[None, 1, bytes(15)]]), ReconcileError),  # short fingerprint
        (enc([[None, 1, bytes(17)]]), ReconcileError),  # long fingerprint
        (enc([[None, 4]]), ReconcileError),  # unknown mode
        (enc([[None, 0, b""]]), ReconcileError),  # wrong arity
        (enc([[None, 2, [ID1[:31]]]]), ReconcileError),  # id of 31 bytes
        (enc([[None, 2, [ID2, ID1]]]), ReconcileError),  # ids not sorted
        (enc([[None, 2, [ID1, ID1]]]), ReconcileError),  # duplicate ids
        (enc([[None, 2, [i.to_bytes(32, "big") for i in range(MAX_IDS_PER_RANGE + 1)]]]), ReconcileError),
        (enc([[None, 3, [], bytes(33)]]), ReconcileError),  # bitmap too long
        (enc([[None, 3, [], []]]), ReconcileError),  # bitmap not bytes
        (enc([[[i + 1, b""], 2, []] for i in range(MAX_RANGES_PER_MESSAGE)] + [[None, 0]]), ReconcileError),
        (b"\x82\x01", DecodeError),  # truncated CBOR
        (b"", DecodeError),
        (bytes(MAX_MESSAGE_BYTES + 1), DecodeError),  # too big
        (b"\x82\x01\x81\x82\xf6\x18\x00", DecodeError),  # non-canonical integer
        (b"\xc1\x00", DecodeError),  # a tag
    ],
)
def test_from_wire_refuses(data, error):
    with pytest.raises(error):
        Message.from_wire(data)
    assert issubclass(ReconcileError, ValidationError)


def test_message_constructor_validates():
    with pytest.raises(ReconcileError):
        Message((SkipRange(Bound(3)),))
    with pytest.raises(ReconcileError):
        Message([SkipRange(INFINITY)])  # type: ignore[arg-type]
    with pytest.raises(ReconcileError):
        Message((IdListRange(INFINITY, [ID1]),))  # type: ignore[arg-type]
    with pytest.raises(ReconcileError):
        Message((SkipRange(Bound(MAX_TS + 1, b"x")),))


cbor_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, 2, 3, 4, 16, 32, MAX_TS]),
    st.binary(max_size=40),
    st.sampled_from([ID1, ID2, FP, b"", b"\x01"]),
    st.text(max_size=5),
)
cbor_value = st.recursive(
    cbor_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_from_wire_random_bytes_only_mesh_errors(data):
    try:
        Message.from_wire(data)
    except MeshError:
        pass


@settings(max_examples=300, deadline=None)
@given(cbor_value)
def test_from_wire_random_cbor_only_mesh_errors(value):
    for candidate in (value, [1, value], [1, [value]], [1, [[value, 1, FP], [None, 0]]]):
        try:
            data = wire.encode(candidate)
        except DecodeError:
            continue
        try:
            Message.from_wire(data)
        except MeshError:
            pass


# --- hostile peers: receive() ------------------------------------------------------------

A_SET = [item(i // 2, i) for i in range(0, 400, 1)]
B_SET = [item(i // 2, i) for i in range(0, 400, 1) if i % 37] + [item(7, 1000 + i) for i in range(20)]
TUNE = {"max_ids_per_range": 4, "branching": 4}


@pytest.fixture(scope="module")
def transcript() -> list[bytes]:
    s = run(A_SET, B_SET, **TUNE)
    assert s.messages >= 6
    return s.transcript


def mutate_bytes(data: bytes, how: int, pos: int, val: int) -> bytes:
    pos %= len(data) + 1
    if how == 0:
        return data[:pos] + bytes([val]) + data[pos + 1 :]
    if how == 1:
        return data[:pos] + bytes([val]) + data[pos:]
    if how == 2:
        return data[:pos] + data[pos + 1 :]
    return data[:pos]


def mutate_value(v: Any, path: list[int], replacement: Any, op: int) -> Any:
    """Replace, drop or duplicate the element that ``path`` leads to."""
    if not isinstance(v, list) or not v:
        return replacement
    k = path[0] % len(v) if path else 0
    out = list(v)
    if len(path) <= 1:
        if op == 0:
            out[k] = replacement
        elif op == 1:
            del out[k]
        elif op == 2:
            out.insert(k, out[k])
        else:
            out[k], out[-1] = out[-1], out[k]
        return out
    out[k] = mutate_value(v[k], path[1:], replacement, op)
    return out


def feed(rec: Reconciler, data: bytes) -> None:
    try:
        rec.receive(data)
    except MeshError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_receive_mutated_bytes_only_mesh_errors(transcript, data):
    k = data.draw(st.integers(0, len(transcript) - 1))
    rec = receiver_before(A_SET, B_SET, transcript, k, **TUNE)
    bad = mutate_bytes(
        transcript[k],
        data.draw(st.integers(0, 3)),
        data.draw(st.integers(0, 10_000)),
        data.draw(st.integers(0, 255)),
    )
    feed(rec, bad)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_receive_structurally_mutated_messages_only_mesh_errors(transcript, data):
    k = data.draw(st.integers(0, len(transcript) - 1))
    rec = receiver_before(A_SET, B_SET, transcript, k, **TUNE)
    value = wire.decode(transcript[k], max_size=MAX_MESSAGE_BYTES)
    path = data.draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=5))
    bad_value = mutate_value(value, path, data.draw(cbor_value), data.draw(st.integers(0, 3)))
    try:
        bad = wire.encode(bad_value)
    except DecodeError:
        return
    feed(rec, bad)
    # and a whole message from elsewhere in the session, out of turn
    rec2 = receiver_before(A_SET, B_SET, transcript, k, **TUNE)
    feed(rec2, transcript[data.draw(st.integers(0, len(transcript) - 1))])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_receive_random_bytes_only_mesh_errors(data):
    rec = Reconciler(SortedItems(A_SET), role="responder")
    feed(rec, data)


# --- hostile peers: specific protocol violations -------------------------------------------


def _after_idlist() -> tuple[Reconciler, list[bytes]]:
    """An initiator that sent an idlist of two ids for the whole space."""
    init = Reconciler(SortedItems([item(1, 1), item(2, 2)]), role="initiator")
    first = Message.from_wire(init.initiate())
    assert isinstance(first.ranges[0], IdListRange)
    return init, list(first.ranges[0].ids)


def test_diff_for_unsent_idlist_is_refused():
    rec = Reconciler(SortedItems(A_SET), role="responder")
    with pytest.raises(ReconcileError):
        rec.receive(enc([[None, 3, [], b""]]))


def test_diff_must_match_the_idlist_range_exactly():
    init, _ = _after_idlist()
    with pytest.raises(ReconcileError):
        init.receive(enc([[[1, b""], 3, [], b""], [None, 0]]))


def test_diff_give_may_not_hold_listed_ids():
    init, listed = _after_idlist()
    with pytest.raises(ReconcileError):
        init.receive(enc([[None, 3, [listed[0]], b"\x00"]]))


@pytest.mark.parametrize("want", [b"", b"\x00\x00", b"\x04"])
def test_diff_want_bitmap_must_fit_the_list(want):
    init, _ = _after_idlist()
    with pytest.raises(ReconcileError):
        init.receive(enc([[None, 3, [], want]]))


def test_valid_diff_teaches_the_idlist_sender():
    init, listed = _after_idlist()
    assert init.receive(enc([[None, 3, [ID1], b"\x02"]])) == Message((SkipRange(INFINITY),)).to_wire()
    assert init.done and init.need == {ID1} and init.have == {listed[1]}


def test_skipping_our_idlist_is_refused():
    init, _ = _after_idlist()
    with pytest.raises(ReconcileError):
        init.receive(enc([[None, 0]]))


def test_responder_refuses_the_done_message_first():
    rec = Reconciler(SortedItems(A_SET), role="responder")
    with pytest.raises(ReconcileError):
        rec.receive(enc([[None, 0]]))


def test_message_after_done_is_refused():
    s = run(A_SET, A_SET)
    with pytest.raises(ReconcileError):
        s.initiator.receive(s.transcript[-1])
    with pytest.raises(ReconcileError):
        s.responder.receive(s.transcript[-1])


def test_too_many_rounds_is_refused():
    a, b = A_SET, B_SET
    needed = run(a, b, **TUNE).responder.rounds
    s_ok = run(a, b, max_rounds=needed, **TUNE)
    check_exact(s_ok, a, b)
    with pytest.raises(ReconcileError):
        run(a, b, max_rounds=needed - 1, **TUNE)


def test_a_peer_that_never_stops_is_cut_off():
    rec = Reconciler(SortedItems(A_SET), role="responder", max_rounds=3)
    bogus = enc([[None, 1, bytes(16)]])  # a fingerprint that never matches
    reply = rec.receive(bogus)
    assert reply is not None
    rec.receive(bogus)
    rec.receive(bogus)
    with pytest.raises(ReconcileError):
        rec.receive(bogus)


def test_out_of_turn_calls_are_refused():
    init = Reconciler(SortedItems(A_SET), role="initiator")
    with pytest.raises(ReconcileError):
        init.receive(enc([[None, 0]]))
    init.initiate()
    with pytest.raises(ReconcileError):
        init.initiate()
    with pytest.raises(ReconcileError):
        Reconciler(SortedItems(), role="responder").initiate()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": "server"},
        {"role": "initiator", "branching": 1},
        {"role": "initiator", "branching": 65},
        {"role": "initiator", "max_ids_per_range": 0},
        {"role": "initiator", "max_ids_per_range": MAX_IDS_PER_RANGE + 1},
        {"role": "initiator", "max_rounds": 0},
        {"role": "initiator", "max_message_bytes": MAX_MESSAGE_BYTES + 1},
        {"role": "initiator", "max_message_bytes": min_message_bytes(16) - 1},
    ],
)
def test_constructor_refuses_bad_tuning(kwargs):
    with pytest.raises(BadValue):
        Reconciler(SortedItems(), **kwargs)


# a peer that speaks well-formed nonsense: valid messages, meaningless content
POOL = [i for _, i in A_SET[:40]] + [bytes([7]) * 32, bytes([8]) * 32]


@st.composite
def wellformed_messages(draw: Any) -> bytes:
    raw = draw(st.lists(st.tuples(st.integers(0, 250), st.binary(max_size=2)), max_size=10))
    uppers = [*sorted({Bound(ts, p) for ts, p in raw} - {LOWEST}), INFINITY]
    ranges: list = []
    for up in uppers:
        mode = draw(st.integers(0, 3))
        if mode == 0 and ranges and isinstance(ranges[-1], SkipRange):
            mode = 1
        if mode == 0:
            ranges.append(SkipRange(up))
        elif mode == 1:
            ranges.append(FingerprintRange(up, draw(st.binary(min_size=16, max_size=16))))
        else:
            ids = tuple(sorted(draw(st.sets(st.sampled_from(POOL), max_size=20))))
            if mode == 2:
                ranges.append(IdListRange(up, ids))
            else:
                ranges.append(DiffRange(up, ids, draw(st.binary(max_size=3))))
    return Message(tuple(ranges)).to_wire()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["initiator", "responder"]), st.lists(wellformed_messages(), min_size=1, max_size=4))
def test_wellformed_nonsense_only_mesh_errors_and_replies_stay_valid(role, msgs):
    budget = min_message_bytes(4) + 200
    rec = Reconciler(
        SortedItems(A_SET), role=role, max_ids_per_range=4, branching=4, max_message_bytes=budget
    )
    if role == "initiator":
        rec.initiate()
    for m in msgs:
        try:
            reply = rec.receive(m)
        except MeshError:
            assert rec.aborted
            return
        if reply is None:
            assert rec.done
            return
        assert len(reply) <= budget
        Message.from_wire(reply)
        if rec.done:
            return


def test_a_refused_message_aborts_the_session():
    rec = Reconciler(SortedItems(A_SET), role="responder")
    with pytest.raises(DecodeError):
        rec.receive(b"\xff")
    assert rec.aborted and not rec.done
    with pytest.raises(ReconcileError):
        rec.receive(Reconciler(SortedItems(A_SET), role="initiator").initiate())
