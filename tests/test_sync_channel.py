"""Framing for /meshnode/sync/1 (meshnode.protocols.sync.channel) over trio's in-memory streams."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshnode.errors import PeerGone, SyncTimeout, SyncViolation
from meshnode.protocols.sync.channel import HEADER_SIZE, Channel, frame
from meshnode.protocols.sync.messages import MAX_FRAME

pytestmark = pytest.mark.timeout(30)


class Adapter:
    """A trio stream seen as the read/write stream the channel takes (as a libp2p stream is)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def read(self, n: int) -> bytes:
        return await self.stream.receive_some(n)

    async def write(self, data: bytes) -> None:
        await self.stream.send_all(data)


def channels(pair=trio.testing.memory_stream_pair, timeout: float = 5.0) -> tuple[Channel, Channel, tuple]:
    left, right = pair()
    make = dict(read_timeout=timeout, write_timeout=timeout)
    return Channel(Adapter(left), **make), Channel(Adapter(right), **make), (left, right)


async def test_frames_round_trip_and_are_counted():
    a, b, _ = channels()
    payloads = [b"x", b"hello" * 100, bytes(range(256)) * 4096]  # 1 MiB exactly, last
    assert len(payloads[-1]) == MAX_FRAME
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def send_all() -> None:
                for p in payloads:
                    await a.send(p)

            nursery.start_soon(send_all)
            got = [await b.recv() for _ in payloads]
    assert got == payloads
    total = sum(HEADER_SIZE + len(p) for p in payloads)
    assert a.bytes_out == b.bytes_in == total and a.bytes_in == b.bytes_out == 0


async def test_a_frame_arriving_in_small_pieces_is_read_whole():
    a_stream, b_stream = trio.testing.memory_stream_pair()
    b = Channel(Adapter(b_stream), read_timeout=5, write_timeout=5)
    data = frame(b"0123456789" * 10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def dribble() -> None:
                for i in range(len(data)):
                    await a_stream.send_all(data[i : i + 1])
                    await trio.lowlevel.checkpoint()

            nursery.start_soon(dribble)
            assert await b.recv() == b"0123456789" * 10


@pytest.mark.parametrize("size", [0, MAX_FRAME + 1, 2**32 - 1])
async def test_a_length_out_of_range_is_refused_before_the_payload(size):
    """Replaces the '1 MiB + 1 frame' attack of tests/test_sync.py (and covers 0 and 2**32-1)."""
    left, right = trio.testing.memory_stream_pair()
    b = Channel(Adapter(right), read_timeout=5, write_timeout=5)
    await left.send_all(size.to_bytes(HEADER_SIZE, "big"))  # and no payload at all
    refused = f"frame length {size} is out of 1..{MAX_FRAME}"
    with trio.fail_after(5), pytest.raises(SyncViolation, match=refused):
        await b.recv()


def test_frame_refuses_payloads_it_may_not_send():
    assert frame(b"ab") == b"\x00\x00\x00\x02ab"
    for bad in (b"", bytes(MAX_FRAME + 1)):
        with pytest.raises(ValueError):
            frame(bad)


async def test_a_silent_peer_is_a_timeout(autojump_clock):
    _, b, _ = channels(timeout=20)
    start = trio.current_time()
    with pytest.raises(SyncTimeout, match="no frame from the peer within 20 s"):
        await b.recv()
    assert trio.current_time() - start == pytest.approx(20)


async def test_a_peer_that_stops_mid_frame_is_a_timeout(autojump_clock):
    """Replaces the 'stops answering' attack of tests/test_sync.py: the whole frame is under one timeout."""
    left, right = trio.testing.memory_stream_pair()
    b = Channel(Adapter(right), read_timeout=20, write_timeout=20)
    await left.send_all(frame(b"0123456789")[:7])
    with pytest.raises(SyncTimeout):
        await b.recv()


async def test_a_peer_that_takes_nothing_is_a_write_timeout(autojump_clock):
    a, _, _ = channels(trio.testing.lockstep_stream_pair, timeout=20)  # a write waits for a reader
    with pytest.raises(SyncTimeout, match="the peer took no frame within 20 s"):
        await a.send(b"x")
    assert a.bytes_out == 0


@pytest.mark.parametrize("cut", [0, 2, HEADER_SIZE, HEADER_SIZE + 5])
async def test_a_peer_closing_mid_frame_is_gone(cut):
    left, right = trio.testing.memory_stream_pair()
    b = Channel(Adapter(right), read_timeout=5, write_timeout=5)
    await left.send_all(frame(b"0123456789")[:cut])
    await left.aclose()
    with trio.fail_after(5), pytest.raises(PeerGone, match="the stream ended"):
        await b.recv()


async def test_writing_to_a_closed_stream_is_gone():
    a, _, (left, _) = channels()
    await left.aclose()
    with trio.fail_after(5), pytest.raises(PeerGone, match="writing failed: ClosedResourceError"):
        await a.send(b"x")


async def test_a_bug_in_the_stream_is_not_taken_for_a_network_error():
    """Only stream and network errors mean 'the peer is gone'; anything else propagates as it is."""

    class Broken:
        async def read(self, n: int) -> bytes:
            raise TypeError("a bug")

        async def write(self, data: bytes) -> None:
            raise KeyError("a bug")

    ch = Channel(Broken(), read_timeout=5, write_timeout=5)
    with pytest.raises(TypeError):
        await ch.recv()
    with pytest.raises(KeyError):
        await ch.send(b"x")
