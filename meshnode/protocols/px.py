"""Peer exchange ``/meshnode/px/1``: members tell each other where other members are.

Someone who joined through one inviter knows one address. Peer exchange
lets every member learn, from the members it is connected to, the peers they
have met in the swarms both are in, so the swarm stays one piece when the
inviter goes away and a restarted node has more than one door back.

One request and one answer on a fresh stream, each one length-prefixed
canonical CBOR frame (4-byte big-endian length)::

    request  {"v": 1, "swarms": [<32-byte swarm id>, ...]}            (<= 16 ids)
    answer   {"v": 1, "peers": [{"s": <swarm id>, "p": <peer id text>,
                                 "a": [<multiaddr text>, ...]}, ...]}  (<= 64 peers, <= 8 addrs each)

Privacy: the answer covers only swarms that the *asker* is a member of as far
as this node can tell (``member_swarms(peer)``: a peer on a private swarm's
host holds its key; on the open host, a peer subscribed to the swarm's
topic knows its id). A stranger learns nothing, not even which swarms exist.
Everything received is a hint: it goes into the address book as ``px``, and
only a Noise handshake on dial proves a peer id. Every read and write has a
timeout; frames are bounded; the handler never raises into libp2p.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshnode import wire
from meshnode.addrbook import MAX_ADDRS, valid_addr, valid_peer_text
from meshnode.errors import DecodeError, MeshError, NetworkError
from meshnode.protocols.host import close_stream

log = logging.getLogger(__name__)

PROTOCOL_ID = TProtocol("/meshnode/px/1")
MAX_SWARMS = 16
MAX_PEERS = 64
MAX_REQUEST = 1024
MAX_ANSWER = 64 * 1024
TIMEOUT = 10.0


@dataclass(frozen=True)
class PeerHint:
    """One peer of one swarm, as another member described it."""

    swarm: bytes
    peer: str
    addrs: tuple[str, ...]


# --- messages (pure) -------------------------------------------------------------


def encode_request(swarms: Iterable[bytes]) -> bytes:
    ids = list(dict.fromkeys(swarms))[:MAX_SWARMS]
    return wire.encode({"v": 1, "swarms": ids})


def _decode_list(data: bytes, what: str, key: str, *, max_size: int, max_depth: int, limit: int) -> list[Any]:
    """The list under ``key`` of a ``{v: 1, key: [...]}`` message of at most ``limit`` entries."""
    value = wire.decode(data, max_size=max_size, max_depth=max_depth)
    if not isinstance(value, dict) or set(value) != {"v", key} or value["v"] != 1:
        raise DecodeError(f"px {what}: expected {{v: 1, {key}: [...]}}")
    items = value[key]
    if not isinstance(items, list) or len(items) > limit:
        raise DecodeError(f"px {what}: expected at most {limit} {key}")
    return items


def decode_request(data: bytes) -> list[bytes]:
    swarms = _decode_list(data, "request", "swarms", max_size=MAX_REQUEST, max_depth=3, limit=MAX_SWARMS)
    if not all(isinstance(s, bytes) and len(s) == 32 for s in swarms):
        raise DecodeError("px request: swarm ids are 32 bytes")
    return swarms


def encode_answer(hints: Iterable[PeerHint]) -> bytes:
    peers = [
        {"s": h.swarm, "p": h.peer, "a": list(h.addrs[:MAX_ADDRS])}
        for h in list(hints)[:MAX_PEERS]
        if h.addrs
    ]
    return wire.encode({"v": 1, "peers": peers})


def decode_answer(data: bytes, asked: Iterable[bytes]) -> list[PeerHint]:
    """The hints of an answer; entries for swarms not asked about, or malformed, refuse it all."""
    wanted = set(asked)
    peers = _decode_list(data, "answer", "peers", max_size=MAX_ANSWER, max_depth=4, limit=MAX_PEERS)
    out = []
    for item in peers:
        if not isinstance(item, dict) or set(item) != {"s", "p", "a"}:
            raise DecodeError("px answer: each peer is {s, p, a}")
        swarm, peer, addrs = item["s"], item["p"], item["a"]
        if swarm not in wanted:
            raise DecodeError("px answer: names a swarm that was not asked about")
        if not valid_peer_text(peer):
            raise DecodeError("px answer: bad peer id")
        if not isinstance(addrs, list) or not 0 < len(addrs) <= MAX_ADDRS or not all(map(valid_addr, addrs)):
            raise DecodeError("px answer: bad addresses")
        out.append(PeerHint(swarm=swarm, peer=peer, addrs=tuple(addrs)))
    return out


# --- the protocol ---------------------------------------------------------------


@dataclass
class PxStats:
    served: int = 0
    refused: int = 0
    asked: int = 0
    hints: int = 0
    errors: int = 0


class PeerExchange:
    """Serve and ask ``/meshnode/px/1`` on one host.

    * ``member_swarms(peer)``: the swarm ids this node shares with ``peer``
      (what it may tell that peer about).
    * ``hints_for(swarm, asker)``: what this node knows of ``swarm``'s
      members, for ``asker`` (the node leaves the asker itself out).
    """

    def __init__(
        self,
        host: IHost,
        *,
        member_swarms: Callable[[str], set[bytes]],
        hints_for: Callable[[bytes, str], list[PeerHint]],
        timeout: float = TIMEOUT,
    ) -> None:
        self.host = host
        self._member_swarms = member_swarms
        self._hints_for = hints_for
        self.timeout = timeout
        self.stats = PxStats()

    def install(self) -> None:
        self.host.set_stream_handler(PROTOCOL_ID, self._handle)

    async def _handle(self, stream: INetStream) -> None:
        """Answer one request; never raises (an exception here would kill the host: pitfall 5)."""
        try:
            peer = stream.muxed_conn.peer_id.to_base58()
            with trio.fail_after(self.timeout):
                asked = decode_request(await _read_frame(stream, MAX_REQUEST))
                shared = self._member_swarms(peer)
                hints = [h for sid in asked if sid in shared for h in self._hints_for(sid, peer)]
                if len(shared & set(asked)) < len(set(asked)):
                    self.stats.refused += 1
                await _write_frame(stream, encode_answer(hints[:MAX_PEERS]))
            self.stats.served += 1
        except Exception as exc:
            self.stats.errors += 1
            log.debug("px: serving failed: %r", exc)
        finally:
            await close_stream(stream)

    async def ask(self, peer: ID, swarms: Iterable[bytes]) -> list[PeerHint]:
        """Ask a connected ``peer`` about ``swarms``; raises :class:`NetworkError` on any failure."""
        asked = list(dict.fromkeys(swarms))[:MAX_SWARMS]
        if not asked:
            return []
        self.stats.asked += 1
        try:
            with trio.fail_after(self.timeout):
                stream = await self.host.new_stream(peer, [PROTOCOL_ID])
                try:
                    await _write_frame(stream, encode_request(asked))
                    hints = decode_answer(await _read_frame(stream, MAX_ANSWER), asked)
                finally:
                    await close_stream(stream)
        except trio.TooSlowError:
            raise NetworkError(f"peer exchange with {peer} timed out") from None
        except MeshError as exc:
            raise NetworkError(f"peer exchange with {peer} failed: {exc}") from None
        except Exception as exc:
            raise NetworkError(f"peer exchange with {peer} failed: {type(exc).__name__} {exc}") from None
        me = self.host.get_id().to_base58()
        hints = [h for h in hints if h.peer != me]
        self.stats.hints += len(hints)
        return hints


async def _write_frame(stream: INetStream, payload: bytes) -> None:
    await stream.write(len(payload).to_bytes(4, "big") + payload)


async def _read_frame(stream: INetStream, limit: int) -> bytes:
    size = int.from_bytes(await _read_exactly(stream, 4), "big")
    if not 0 < size <= limit:
        raise DecodeError(f"px frame of {size} bytes is out of 1..{limit}")
    return await _read_exactly(stream, size)


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise NetworkError("the stream ended early")
        buf += chunk
    return bytes(buf)
