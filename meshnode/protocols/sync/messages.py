"""The messages of ``/meshnode/sync/1``: one frozen dataclass per kind (pure).

A message is the payload of one frame: a canonical CBOR array (decoded by
:mod:`meshnode.wire`, nesting at most 3) whose first element is its kind::

    kind  message     fields                     class
    0     HELLO       [0, version, swarm, first]  Hello
    1     REFUSE      [1, code, text]             Refuse
    2     RECONCILE   [2, message]                Reconcile
    3     NOTWANT     [3, ids]                    NotWant
    4     RECORDS     [4, records]                Records
    5     END         [5, count]                  End

Fields (the full meaning is in ``docs/sync-protocol.md``):

* ``version``: uint (any; the session refuses all but :data:`VERSION`);
  ``swarm``: exactly 32 bytes; ``first`` and ``message``: a reconciliation
  message of 0 .. 65,536 bytes (:mod:`meshnode.reconcile` checks the inside);
* ``code``: any integer (:class:`RefuseCode` names the known ones; an unknown
  code is kept as the integer it is); ``text``: 0 .. 200 characters;
* ``ids``: 0 .. ``limits.max_notwant`` ids of exactly 32 bytes, strictly
  ascending bytewise;
* ``records``: 1 .. n encoded records of 1 .. 16,384 bytes each (the frame
  bounds n);
* ``count``: uint.

``X.to_wire()`` gives the canonical payload; :func:`decode_message` (or
``X.from_wire``, which also requires kind X) decodes one payload strictly and
raises :class:`~meshnode.errors.SyncViolation` for anything else: a payload
that is not canonical CBOR or exceeds :data:`MAX_FRAME`, a value that is not
``[kind, ...]``, an unknown kind, a wrong number of fields, a field outside
its type or bounds. Nothing else escapes (tests fuzz this). The constructors
do not check: ``from_wire`` is the gate for what comes from a peer, and what
this node sends it builds from values that already passed it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from meshnode import wire
from meshnode.errors import MeshError, SyncViolation
from meshnode.protocols.sync.limits import SyncLimits
from meshnode.reconcile import MAX_MESSAGE_BYTES as MAX_RECONCILE_MESSAGE
from meshnode.records import MAX_RECORD_SIZE

#: The message-layout version inside ``/meshnode/sync/1`` (sent in HELLO).
VERSION = 1
#: Largest payload (one message) either side sends or accepts.
MAX_FRAME = 1 << 20
ID_SIZE = 32
MAX_REFUSE_TEXT = 200
_DEPTH = 3  # [kind, [items ...]]
_DEFAULT_LIMITS = SyncLimits()

_RECORDS_OVERHEAD = 16  # array heads of [4, [...]] (<= 1 + 1 + 5 bytes), kept generous
_ITEM_HEAD = 3  # CBOR head of a byte string of 24 .. 65535 bytes


class Kind(IntEnum):
    """The first element of every message array."""

    HELLO = 0
    REFUSE = 1
    RECONCILE = 2
    NOTWANT = 3
    RECORDS = 4
    END = 5


class RefuseCode(IntEnum):
    """Why a responder refuses a session (``Refuse.code``)."""

    NOT_JOINED = 1  # the swarm is not joined here
    BUSY = 2  # try again later
    VERSION = 3  # HELLO.version is not one this node speaks


_REFUSE_CODES: dict[int, RefuseCode] = {code.value: code for code in RefuseCode}


class _Wire:
    """What every message class shares: its kind and a strict ``from_wire``."""

    __slots__ = ()
    KIND: ClassVar[Kind]

    @classmethod
    def from_wire(cls, payload: bytes, limits: SyncLimits = _DEFAULT_LIMITS) -> Any:
        """Decode ``payload`` as a message of this kind, or raise :class:`SyncViolation`."""
        msg = decode_message(payload, limits)
        if not isinstance(msg, cls):
            raise SyncViolation(f"expected {cls.KIND.name}, found {msg.KIND.name}")
        return msg


@dataclass(frozen=True, slots=True)
class Hello(_Wire):
    """Initiator -> responder, the first frame: version, swarm id, first reconcile message."""

    KIND: ClassVar[Kind] = Kind.HELLO
    version: int
    swarm: bytes
    first: bytes

    def to_wire(self) -> bytes:
        return wire.encode([0, self.version, self.swarm, self.first])

    @staticmethod
    def _parse(value: list[Any], limits: SyncLimits) -> Hello:
        if len(value) != 4 or type(value[1]) is not int or value[1] < 0:
            raise SyncViolation("HELLO: expected [0, version, swarm id, reconcile message]")
        if not isinstance(value[2], bytes) or len(value[2]) != ID_SIZE:
            raise SyncViolation("HELLO: expected a 32-byte swarm id")
        if not isinstance(value[3], bytes) or len(value[3]) > MAX_RECONCILE_MESSAGE:
            raise SyncViolation("HELLO: expected a reconcile message of at most 64 KiB")
        return Hello(value[1], value[2], value[3])


@dataclass(frozen=True, slots=True)
class Refuse(_Wire):
    """Responder -> initiator instead of the first RECONCILE: why, and a text for logs."""

    KIND: ClassVar[Kind] = Kind.REFUSE
    code: RefuseCode | int
    text: str

    def to_wire(self) -> bytes:
        return wire.encode([1, int(self.code), self.text])

    @staticmethod
    def _parse(value: list[Any], limits: SyncLimits) -> Refuse:
        if len(value) != 3 or type(value[1]) is not int or not isinstance(value[2], str):
            raise SyncViolation("REFUSE: expected [1, code, text]")
        if len(value[2]) > MAX_REFUSE_TEXT:
            raise SyncViolation(f"REFUSE: expected a text of at most {MAX_REFUSE_TEXT} characters")
        return Refuse(_REFUSE_CODES.get(value[1], value[1]), value[2])


@dataclass(frozen=True, slots=True)
class Reconcile(_Wire):
    """Either way, alternating: one reconciliation message (:mod:`meshnode.reconcile`)."""

    KIND: ClassVar[Kind] = Kind.RECONCILE
    message: bytes

    def to_wire(self) -> bytes:
        return wire.encode([2, self.message])

    @staticmethod
    def _parse(value: list[Any], limits: SyncLimits) -> Reconcile:
        if len(value) != 2 or not isinstance(value[1], bytes) or len(value[1]) > MAX_RECONCILE_MESSAGE:
            raise SyncViolation("RECONCILE: expected [2, message of at most 64 KiB]")
        return Reconcile(value[1])


@dataclass(frozen=True, slots=True)
class NotWant(_Wire):
    """Either way, once: the ids of the sender's need that it would refuse (pruned there)."""

    KIND: ClassVar[Kind] = Kind.NOTWANT
    ids: tuple[bytes, ...]

    def to_wire(self) -> bytes:
        return wire.encode([3, list(self.ids)])

    @staticmethod
    def _parse(value: list[Any], limits: SyncLimits) -> NotWant:
        if len(value) != 2:
            raise SyncViolation("NOTWANT: expected [3, ids]")
        ids, limit = value[1], limits.max_notwant
        if not isinstance(ids, list) or len(ids) > limit:
            raise SyncViolation(f"NOTWANT: expected an array of at most {limit} ids")
        prev = b""
        for item in ids:
            if not isinstance(item, bytes) or len(item) != ID_SIZE or item <= prev:
                raise SyncViolation("NOTWANT: expected 32-byte ids in strictly ascending order")
            prev = item
        return NotWant(tuple(ids))


@dataclass(frozen=True, slots=True)
class Records(_Wire):
    """Either way, after both NOTWANTs: encoded records the receiver lacks."""

    KIND: ClassVar[Kind] = Kind.RECORDS
    records: tuple[bytes, ...]

    def to_wire(self) -> bytes:
        return wire.encode([4, list(self.records)])

    @staticmethod
    def _parse(value: list[Any], limits: SyncLimits) -> Records:
        if len(value) != 2 or not isinstance(value[1], list) or not value[1]:
            raise SyncViolation("RECORDS: expected [4, records] with at least one record")
        for data in value[1]:
            if not isinstance(data, bytes) or not 0 < len(data) <= MAX_RECORD_SIZE:
                raise SyncViolation(f"RECORDS: expected records of 1..{MAX_RECORD_SIZE} bytes")
        return Records(tuple(value[1]))


@dataclass(frozen=True, slots=True)
class End(_Wire):
    """Either way, once, after the sender's last RECORDS: how many records it sent."""

    KIND: ClassVar[Kind] = Kind.END
    count: int

    def to_wire(self) -> bytes:
        return wire.encode([5, self.count])

    @staticmethod
    def _parse(value: list[Any], limits: SyncLimits) -> End:
        if len(value) != 2 or type(value[1]) is not int or value[1] < 0:
            raise SyncViolation("END: expected [5, count]")
        return End(value[1])


Message = Hello | Refuse | Reconcile | NotWant | Records | End
_CLASSES: tuple[Any, ...] = (Hello, Refuse, Reconcile, NotWant, Records, End)


def decode_message(payload: bytes, limits: SyncLimits = _DEFAULT_LIMITS) -> Message:
    """Decode and check one message; :class:`SyncViolation` if it is malformed."""
    try:
        value = wire.decode(payload, max_size=MAX_FRAME, max_depth=_DEPTH)
    except MeshError as exc:
        raise SyncViolation(f"malformed frame: {exc}") from None
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise SyncViolation("expected a message [kind, ...]")
    kind = value[0]
    if not 0 <= kind < len(_CLASSES):
        raise SyncViolation(f"unknown message kind {kind}")
    msg: Message = _CLASSES[kind]._parse(value, limits)
    return msg


def record_frames(datas: Iterable[bytes], budget: int = MAX_FRAME) -> Iterator[tuple[bytes, ...]]:
    """Group encoded records into RECORDS batches whose payload fits ``budget``."""
    batch: list[bytes] = []
    size = _RECORDS_OVERHEAD
    for data in datas:
        cost = len(data) + _ITEM_HEAD
        if batch and size + cost > budget:
            yield tuple(batch)
            batch, size = [], _RECORDS_OVERHEAD
        batch.append(data)
        size += cost
    if batch:
        yield tuple(batch)
