"""The messages of /meshnode/sync/1 (meshnode.protocols.sync.messages): bytes, bounds, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import records as rec
from meshnode import wire
from meshnode.errors import SyncViolation
from meshnode.protocols.sync.limits import SyncLimits
from meshnode.protocols.sync.messages import (
    MAX_FRAME,
    VERSION,
    End,
    Hello,
    NotWant,
    Reconcile,
    Records,
    Refuse,
    RefuseCode,
    decode_message,
    record_frames,
)

ids32 = st.binary(min_size=32, max_size=32)
messages = st.one_of(
    st.builds(Hello, st.integers(0, 2**64 - 1), ids32, st.binary(max_size=300)),
    st.builds(Refuse, st.sampled_from(RefuseCode) | st.integers(-(2**63), 2**64 - 1), st.text(max_size=200)),
    st.builds(Reconcile, st.binary(max_size=300)),
    st.builds(NotWant, st.lists(ids32, max_size=20, unique=True).map(lambda xs: tuple(sorted(xs)))),
    st.builds(Records, st.lists(st.binary(min_size=1, max_size=400), min_size=1, max_size=10).map(tuple)),
    st.builds(End, st.integers(0, 2**64 - 1)),
)


@given(messages)
def test_every_message_kind_round_trips(msg):
    assert decode_message(msg.to_wire()) == msg
    assert type(msg).from_wire(msg.to_wire()) == msg


def test_the_bytes_are_those_of_the_wire_spec():
    """No wire change: each message is the CBOR array [kind, fields...] that older nodes send."""
    swarm, a, b = bytes(32), bytes([1]) * 32, bytes([2]) * 32
    assert Hello(VERSION, swarm, b"\x80").to_wire() == wire.encode([0, 1, swarm, b"\x80"])
    assert Refuse(RefuseCode.BUSY, "busy").to_wire() == wire.encode([1, 2, "busy"])
    assert Reconcile(b"m").to_wire() == wire.encode([2, b"m"])
    assert NotWant((a, b)).to_wire() == wire.encode([3, [a, b]])
    assert Records((b"x", b"yz")).to_wire() == wire.encode([4, [b"x", b"yz"]])
    assert End(7).to_wire() == wire.encode([5, 7])
    assert [int(c) for c in RefuseCode] == [1, 2, 3]  # not joined, busy, version


def test_refuse_codes_are_typed_and_unknown_ones_kept():
    assert decode_message(wire.encode([1, 2, "later"])) == Refuse(RefuseCode.BUSY, "later")
    assert decode_message(wire.encode([1, 2, "later"])).code is RefuseCode.BUSY
    unknown = decode_message(wire.encode([1, 9, "new reason"]))
    assert unknown == Refuse(9, "new reason") and type(unknown.code) is int


def test_from_wire_wants_its_own_kind():
    with pytest.raises(SyncViolation, match="expected HELLO, found END"):
        Hello.from_wire(End(1).to_wire())
    with pytest.raises(SyncViolation, match="expected RECORDS, found NOTWANT"):
        Records.from_wire(NotWant(()).to_wire())


def test_messages_refuse_malformed_input():
    """Moved from tests/test_sync.py (same payloads, built as raw CBOR)."""
    good = [
        wire.encode([0, VERSION, bytes(32), b""]),
        wire.encode([1, 1, "no"]),
        wire.encode([2, b"\x80"]),
        wire.encode([3, [bytes([1]) * 32, bytes([2]) * 32]]),
        wire.encode([4, [b"x"]]),
        wire.encode([5, 0]),
    ]
    for payload in good:
        decode_message(payload)
    bad = [
        b"",
        b"\xff",
        wire.encode({"kind": 0}),
        wire.encode([]),
        wire.encode([9]),
        wire.encode([-1]),
        wire.encode(["HELLO"]),
        wire.encode([0, VERSION, bytes(31), b""]),
        wire.encode([0, -1, bytes(32), b""]),
        wire.encode([0, VERSION, bytes(32), b"x" * 70_000]),
        wire.encode([0, VERSION, bytes(32)]),
        wire.encode([1, 1, "x" * 201]),
        wire.encode([1, "1", "no"]),
        wire.encode([3, [bytes([2]) * 32, bytes([1]) * 32]]),  # not ascending
        wire.encode([3, [bytes(32), bytes(32)]]),  # repeated
        wire.encode([3, [b"short"]]),
        wire.encode([3, b"not a list"]),
        wire.encode([4, []]),
        wire.encode([4, [b"x" * (rec.MAX_RECORD_SIZE + 1)]]),
        wire.encode([4, [b""]]),
        wire.encode([4, ["text"]]),
        wire.encode([5, -1]),
        wire.encode([5, 1, 2]),
        wire.encode([5, True]),
        wire.encode([2, [[1]]]),
        wire.encode([2, [[[[1]]]]]),  # nested deeper than 3
        b"\x82\x05\x1b" + (1).to_bytes(8, "big"),  # non-canonical integer
        wire.encode([4, [b"x" * 16_000] * 66]),  # more than 1 MiB
    ]
    for payload in bad:
        with pytest.raises(SyncViolation):
            decode_message(payload)


def test_notwant_is_bounded_by_the_limits():
    ids = [i.to_bytes(32, "big") for i in range(1, 12)]
    payload = NotWant(tuple(ids)).to_wire()
    assert decode_message(payload, SyncLimits(max_notwant=11)) == NotWant(tuple(ids))
    with pytest.raises(SyncViolation, match="at most 10 ids"):
        decode_message(payload, SyncLimits(max_notwant=10))
    assert len(decode_message(NotWant(tuple(ids[:1])).to_wire()).ids) == 1  # default limits


def test_record_frames_stay_under_the_frame_limit():
    """Moved from tests/test_sync.py."""
    datas = [bytes([i % 256]) * (1000 + i % 15_000) for i in range(400)]
    batches = list(record_frames(datas))
    assert [d for b in batches for d in b] == datas
    for batch in batches:
        assert len(Records(batch).to_wire()) <= MAX_FRAME
    assert len(batches) <= 2 + sum(map(len, datas)) // MAX_FRAME
    assert list(record_frames([])) == []
