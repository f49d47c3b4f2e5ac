"""Peer exchange messages (meshnode.protocols.px): strict, bounded, never more than asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode import wire
from meshnode.errors import DecodeError
from meshnode.protocols import px

PEER = "12D3KooWHT5sHybxFXhDkm2gPASTivnjHynJrkULd1JX7w18LBAP"
RELAY = "12D3KooWFMT6xP9C8dL6t52Qs6rh1PUnvjQb2tMPyWLWRNJpn5yk"
SW, OTHER = bytes(32), bytes([7]) * 32


def test_round_trip() -> None:
    assert px.decode_request(px.encode_request([SW, OTHER, SW])) == [SW, OTHER]
    hints = [
        px.PeerHint(
            SW, PEER, ("/ip4/81.2.69.1/tcp/4001", f"/ip4/81.2.69.2/tcp/4001/p2p/{RELAY}/p2p-circuit")
        ),
        px.PeerHint(SW, RELAY, ("/ip6/2001:4860::1/tcp/9",)),
    ]
    assert px.decode_answer(px.encode_answer(hints), [SW]) == hints


def test_requests_are_bounded() -> None:
    too_many = wire.encode({"v": 1, "swarms": [bytes([i]) * 32 for i in range(px.MAX_SWARMS + 1)]})
    for bad in [
        too_many,
        wire.encode({"v": 2, "swarms": []}),
        wire.encode({"v": 1, "swarms": [b"short"]}),
        wire.encode({"v": 1, "swarms": [], "extra": 1}),
        wire.encode([1, 2]),
        b"\xff",
    ]:
        with pytest.raises(DecodeError):
            px.decode_request(bad)


def test_answers_name_only_swarms_asked_about_and_valid_addresses() -> None:
    def answer(*peers: dict) -> bytes:
        return wire.encode({"v": 1, "peers": list(peers)})

    good = {"s": SW, "p": PEER, "a": ["/ip4/81.2.69.1/tcp/4001"]}
    assert len(px.decode_answer(answer(good), [SW])) == 1
    for bad in [
        answer(dict(good, s=OTHER)),  # not asked about
        answer(dict(good, p="not a peer id")),
        answer(dict(good, a=[])),
        answer(dict(good, a=["/ip4/0.0.0.0/tcp/4001"])),
        answer(dict(good, a=["/dns4/example.org/tcp/4001"])),
        answer(dict(good, a=["/ip4/81.2.69.1/tcp/4001"] * (px.MAX_ADDRS + 1))),
        answer(dict(good, extra=1)),
        answer(*[good] * (px.MAX_PEERS + 1)),
        wire.encode({"v": 1}),
    ]:
        with pytest.raises(DecodeError):
            px.decode_answer(bad, [SW])


@given(st.binary(max_size=300))
def test_garbage_gives_decode_errors_only(data: bytes) -> None:
    for decode in (px.decode_request, lambda d: px.decode_answer(d, [SW])):
        try:
            decode(data)
        except DecodeError:
            pass
