"""Frames over one byte stream: read-exactly, bounded, every read and write under a timeout.

A frame is a 4-byte big-endian length (1 .. :data:`~.messages.MAX_FRAME`)
and that many payload bytes. A length out of range is refused before any
payload is read; frames are read with a read-exactly loop (never libp2p's
varint reader, pitfall 12); each frame read and each frame write has its
own timeout (pitfall 23).

The stream is anything with ``read(n)``/``write(data)`` (:class:`ByteStream`):
a libp2p ``INetStream``, or a trio stream behind a two-line adapter. What
goes wrong maps to the error tree:

* no whole frame within ``read_timeout``, or a write not taken within
  ``write_timeout``: :class:`~meshnode.errors.SyncTimeout`;
* a length of 0 or above ``MAX_FRAME``: :class:`~meshnode.errors.SyncViolation`;
* the stream ends (also mid-frame) or fails with a stream or network error
  (:data:`STREAM_ERRORS`): :class:`~meshnode.errors.PeerGone`.

Any other exception is a bug and propagates as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.rcmgr.exceptions import ResourceManagerException

from meshnode.errors import PeerGone, SyncTimeout, SyncViolation
from meshnode.protocols.sync.messages import MAX_FRAME

HEADER_SIZE = 4

#: What a broken stream raises: libp2p's errors (a stream reset, closed or
#: failed, a connection gone, a resource limit), trio's (a memory or socket
#: stream closed), and the OS's.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    BaseLibp2pError,
    ResourceManagerException,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    EOFError,
)


class ByteStream(Protocol):
    """A reliable byte stream: ``read`` returns 1 .. n bytes, or b"" at its end."""

    async def read(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


def frame(payload: bytes) -> bytes:
    """Length-prefix a payload (4 bytes, big-endian)."""
    if not 0 < len(payload) <= MAX_FRAME:
        raise ValueError(f"frame payload of {len(payload)} bytes is out of 1..{MAX_FRAME}")
    return len(payload).to_bytes(HEADER_SIZE, "big") + payload


class Channel:
    """Frames over one stream; ``bytes_in``/``bytes_out`` count the frames' bytes.

    ``on_frame`` (optional) is called after every whole frame sent or received
    (the driver's minimum-progress deadline moves on with it).
    """

    def __init__(
        self,
        stream: ByteStream,
        *,
        read_timeout: float,
        write_timeout: float,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.on_frame = on_frame
        self.bytes_in = 0
        self.bytes_out = 0

    async def send(self, payload: bytes) -> None:
        """Write one frame."""
        data = frame(payload)
        try:
            with trio.fail_after(self.write_timeout):
                await self.stream.write(data)
        except trio.TooSlowError:
            raise SyncTimeout(f"the peer took no frame within {self.write_timeout:.0f} s") from None
        except STREAM_ERRORS as exc:
            raise PeerGone(f"writing failed: {type(exc).__name__} {exc}") from None
        self.bytes_out += len(data)
        if self.on_frame is not None:
            self.on_frame()

    async def recv(self) -> bytes:
        """Read one frame; its payload."""
        try:
            with trio.fail_after(self.read_timeout):
                header = await self._read_exactly(HEADER_SIZE)
                size = int.from_bytes(header, "big")
                if not 0 < size <= MAX_FRAME:
                    raise SyncViolation(f"frame length {size} is out of 1..{MAX_FRAME}")
                payload = await self._read_exactly(size)
        except trio.TooSlowError:
            raise SyncTimeout(f"no frame from the peer within {self.read_timeout:.0f} s") from None
        self.bytes_in += HEADER_SIZE + size
        if self.on_frame is not None:
            self.on_frame()
        return payload

    async def _read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = await self.stream.read(n - len(buf))
            except STREAM_ERRORS as exc:
                raise PeerGone(f"the stream ended: {type(exc).__name__} {exc}") from None
            if not chunk:
                raise PeerGone("the stream ended")
            buf += chunk
        return bytes(buf)
