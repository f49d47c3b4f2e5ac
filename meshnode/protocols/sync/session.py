"""One sync session as a pure state machine: messages in, actions out.

:class:`SyncSession` knows the order of ``/meshnode/sync/1``
(``docs/sync-protocol.md``), runs the set reconciliation
(:class:`meshnode.reconcile.Reconciler`) over the swarm's items, keeps the
ids it expects, counts records and enforces the limits. It does no I/O and
keeps no clock: a driver (:mod:`.service`) reads frames, decodes them
(:mod:`.messages`), hands each message to :meth:`SyncSession.receive` and
performs the actions it gets back, in order:

``Send(message)``
    send this message to the peer.
``LookUpPruned(ids)``
    reconciliation is over: find which of ``ids`` (our need) were pruned
    here, and call :meth:`~SyncSession.notwant` with them *before* reading
    the next message.
``Push(ids)``
    send the peer the records with these ids (those still held): hand each
    frame's batch to :meth:`~SyncSession.records`, then call
    :meth:`~SyncSession.end`. Runs alongside the reading.
``Ingest(records)``
    validate and store these records, then report with
    :meth:`~SyncSession.ingested`.
``Refused(code, text)``
    the session ends refused: this side sent a REFUSE (the ``Send`` before
    it), or the peer did.
``Finished(report)``
    the session is complete: both ENDs crossed, every ``Ingest`` reported.

Roles
=====

The role is chosen by the constructor: :meth:`SyncSession.initiator` (we
open: swarm and items known) or :meth:`SyncSession.responder` (the peer
opens: ``admit(swarm_id)`` gives the items of a swarm joined here, or None;
``busy`` says whether to refuse for load).

States and what each accepts
============================

Every message not listed for the current state is a violation.

``NEW``
    No message accepted yet. :meth:`~SyncSession.open`: the initiator sends
    ``HELLO(VERSION, swarm, first)`` -> ``AWAIT_ANSWER``; the responder
    sends nothing -> ``AWAIT_HELLO``.
``AWAIT_HELLO`` (responder)
    ``HELLO``: a version other than :data:`~.messages.VERSION` is refused
    (``REFUSE`` code VERSION), then a swarm ``admit`` does not know
    (NOT_JOINED), then ``busy`` (BUSY) -> ``REFUSED``. Else its ``first``
    message is reconciled and answered -> ``RECONCILING`` (or ``TRANSFER``).
``AWAIT_ANSWER`` (initiator)
    ``REFUSE`` -> ``REFUSED``; ``RECONCILE``, reconciled and answered ->
    ``RECONCILING`` (or ``TRANSFER``).
``RECONCILING``
    ``RECONCILE``. The reconciler's answer is sent; once it sent the done
    message or received it (:class:`~meshnode.reconcile.Reconciler`), the
    difference is known: ``have`` (to push) and ``need`` (to fetch) ->
    ``TRANSFER`` with ``LookUpPruned(need)``. A message the reconciler
    refuses (``ReconcileError``/``DecodeError``, more than
    ``limits.max_rounds`` messages) or more than
    ``limits.max_reconcile_bytes`` received are violations.
``TRANSFER``
    Two halves that run at once, plus the ingest batches in flight.

    *Outgoing*: :meth:`~SyncSession.notwant` (``pruned``: which of our need
    to refuse, at most ``limits.max_notwant``) sends ``NOTWANT`` and settles
    the *expected* ids (need minus NOTWANT). Once the peer's ``NOTWANT`` is
    known too: ``Push(have minus the peer's NOTWANT, ascending)``;
    :meth:`~SyncSession.records` per ``RECORDS`` frame, then
    :meth:`~SyncSession.end` sends ``END(records sent)``.

    *Incoming* (only after :meth:`~SyncSession.notwant`): first ``NOTWANT``,
    every id of which must be in ``have``; then ``RECORDS`` frames, each
    record's id (:func:`meshnode.records.record_id`) must be expected and is
    then no longer expected (so a record sent twice is refused), -> ``Ingest``;
    then ``END``, whose count must equal the records received. Expected ids
    that never came are ``records_missing`` (the peer no longer held them:
    not a violation). Nothing is accepted after ``END``.

    *Budget*: the session takes at most ``allowance.records`` records and
    ``allowance.bytes`` of their bytes (:class:`~.limits.Allowance`, by
    default unlimited). The first record over either bound and every later
    one are still checked as above, but dropped: no ``Ingest``, counted in
    ``records_over_budget``, and ``report.budget`` names the budget reached.
    Not a violation (an honest peer may simply hold more).

    :meth:`~SyncSession.ingested` with ``invalid > 0`` is a violation (the
    peer sent records that fail validation).

    When both halves are ended and every ``Ingest`` is reported ->
    ``DONE`` with ``Finished(report)``.
``DONE``, ``REFUSED``, ``ABORTED``
    Over: every message is a violation.

A violation raises :class:`~meshnode.errors.SyncViolation` and moves the
session to ``ABORTED`` (the driver resets the stream and penalises the
peer). An aborted session still takes the answers to what it asked before
(``records``, ``end``: nothing more is sent; ``ingested``: the stored
records are counted) and returns no action. Calling a method out of turn
(``records`` before ``Push``, ``end`` twice, ``receive`` in ``TRANSFER``
before ``notwant`` ...) is a bug in the driver, not the peer's fault:
:class:`RuntimeError`.

The session fills its :class:`SessionReport` with what it knows (swarm,
rounds, have/need, record and reconciliation-byte counts); the driver adds
frame bytes, times and the outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import Enum
from typing import Generic, Literal, TypeVar

from meshnode.errors import MeshError, SyncViolation
from meshnode.protocols.sync.limits import UNLIMITED, Allowance, SyncLimits
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
)
from meshnode.reconcile import ItemSource, Reconciler
from meshnode.records import record_id

Role = Literal["initiator", "responder"]
S = TypeVar("S", bound=ItemSource)


@dataclass
class SessionReport:
    """What one session did (returned by ``SyncService.sync_with``)."""

    peer: str
    swarm: bytes
    role: str
    outcome: str = "ok"  # ok | refused | aborted
    error: str = ""
    refuse_code: int | None = None  # the REFUSE code, when the responder sent one
    rounds: int = 0
    have: int = 0  # ids we held that the peer lacked
    need: int = 0  # ids the peer held that we lacked
    records_sent: int = 0
    records_received: int = 0
    records_stored: int = 0
    records_refused: int = 0
    records_missing: int = 0
    records_over_budget: int = 0  # received but not taken: a budget was reached
    new_authors_refused: int = 0  # records refused: their authors were over the budget of unseen ones
    budget: str = ""  # which budget stopped the session taking records ("": none)
    bytes_in: int = 0
    bytes_out: int = 0
    reconcile_bytes_in: int = 0
    reconcile_bytes_out: int = 0
    reconcile_seconds: float = 0.0  # from the start until both knew the difference
    seconds: float = 0.0


# --- actions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send this message to the peer."""

    message: Message


@dataclass(frozen=True, slots=True)
class LookUpPruned:
    """Find which of these ids (our need) were pruned here; then call ``notwant``."""

    ids: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class Push:
    """Send the records with these ids (skip those no longer held); ``records`` per frame, then ``end``."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ingest:
    """Validate and store these records; then call ``ingested``."""

    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """The session ends refused (by this side, after the ``Send`` of the REFUSE, or by the peer)."""

    code: RefuseCode | int
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The session is complete."""

    report: SessionReport


Action = Send | LookUpPruned | Push | Ingest | Refused | Finished


class Phase(Enum):
    NEW = "new"
    AWAIT_HELLO = "await hello"
    AWAIT_ANSWER = "await answer"
    RECONCILING = "reconciling"
    TRANSFER = "transfer"
    DONE = "done"
    REFUSED = "refused"
    ABORTED = "aborted"


class _Out(Enum):
    """The outgoing half of ``TRANSFER``."""

    LOOKUP = "waiting for notwant()"
    WAITING = "waiting for the peer's NOTWANT"
    PUSHING = "pushing"
    ENDED = "END sent"


class _In(Enum):
    """The incoming half of ``TRANSFER``."""

    NOTWANT = "expecting NOTWANT"
    RECORDS = "expecting RECORDS or END"
    ENDED = "END received"


_OVER = (Phase.DONE, Phase.REFUSED, Phase.ABORTED)


class SyncSession(Generic[S]):
    """One side of one session (see the module docstring). Build it with a classmethod."""

    def __init__(
        self,
        role: Role,
        report: SessionReport,
        limits: SyncLimits,
        *,
        items: S | None = None,
        admit: Callable[[bytes], S | None] | None = None,
        busy: bool = False,
        allowance: Allowance = UNLIMITED,
    ) -> None:
        self.role: Role = role
        self.report = report
        self.limits = limits
        self.allowance = allowance
        self.taken_records = 0  # records received and handed to Ingest
        self.taken_bytes = 0
        self.items: S | None = items
        self.phase = Phase.NEW
        self._admit = admit
        self._busy = busy
        self._rec: Reconciler | None = None
        self.have: frozenset[bytes] = frozenset()
        self.need: frozenset[bytes] = frozenset()
        self._out = _Out.LOOKUP
        self._in = _In.NOTWANT
        self._notwant_made = False
        self._peer_notwant: frozenset[bytes] | None = None
        self._expect: set[bytes] = set()
        self._ingesting = 0  # Ingest actions not yet reported

    @classmethod
    def initiator(
        cls, peer: str, swarm: bytes, items: S, limits: SyncLimits, *, allowance: Allowance = UNLIMITED
    ) -> SyncSession[S]:
        """We open a session on ``swarm`` (whose items are ``items``) with ``peer``."""
        report = SessionReport(peer, swarm, "initiator")
        return cls("initiator", report, limits, items=items, allowance=allowance)

    @classmethod
    def responder(
        cls,
        peer: str,
        limits: SyncLimits,
        *,
        admit: Callable[[bytes], S | None],
        busy: bool,
        allowance: Allowance = UNLIMITED,
    ) -> SyncSession[S]:
        """``peer`` opened a session; ``admit(swarm)``: our items of that swarm, None if not joined."""
        report = SessionReport(peer, b"", "responder")
        return cls("responder", report, limits, admit=admit, busy=busy, allowance=allowance)

    @property
    def swarm(self) -> bytes:
        return self.report.swarm

    @property
    def reconciling(self) -> bool:
        """True until the difference is known or the session ended."""
        return self.phase in (Phase.NEW, Phase.AWAIT_HELLO, Phase.AWAIT_ANSWER, Phase.RECONCILING)

    @property
    def incoming_ended(self) -> bool:
        """True once the peer's END arrived (nothing more is read)."""
        return self._in is _In.ENDED

    # --- the moves ---------------------------------------------------------------

    def open(self) -> list[Action]:
        """The first move: the initiator sends HELLO, the responder waits for it."""
        if self.phase is not Phase.NEW:
            raise RuntimeError(f"open() is the first move, not one in {self.phase.value}")
        if self.role == "responder":
            self.phase = Phase.AWAIT_HELLO
            return []
        assert self.items is not None  # the initiator is built with its items
        self._rec = Reconciler(self.items, role="initiator", max_rounds=self.limits.max_rounds)
        first = self._rec.initiate()
        self.report.reconcile_bytes_out += len(first)
        self.phase = Phase.AWAIT_ANSWER
        return [Send(Hello(VERSION, self.report.swarm, first))]

    def receive(self, msg: Message) -> list[Action]:
        """Take one message from the peer; :class:`SyncViolation` if it breaks the protocol."""
        if self.phase is Phase.NEW or (self.phase is Phase.TRANSFER and not self._notwant_made):
            raise RuntimeError(f"receive() before {'open' if self.phase is Phase.NEW else 'notwant'}()")
        try:
            return self._receive(msg)
        except SyncViolation:
            self.phase = Phase.ABORTED
            raise

    def notwant(self, pruned: Collection[bytes]) -> list[Action]:
        """Answer ``LookUpPruned``: of our need, ``pruned`` are refused here (sent in NOTWANT)."""
        if self.phase is not Phase.TRANSFER or self._notwant_made:
            raise RuntimeError("notwant() answers LookUpPruned, once")
        skip = tuple(sorted(self.need.intersection(pruned))[: self.limits.max_notwant])
        self._expect = set(self.need.difference(skip))
        self._notwant_made = True
        self._out = _Out.WAITING
        return [Send(NotWant(skip)), *self._maybe_push()]

    def records(self, batch: tuple[bytes, ...]) -> list[Action]:
        """Answer ``Push``: send one frame of records."""
        if self.phase is Phase.ABORTED:
            return []
        if self._out is not _Out.PUSHING or not batch or self.phase is not Phase.TRANSFER:
            raise RuntimeError("records() sends a non-empty batch after Push, before end()")
        self.report.records_sent += len(batch)
        return [Send(Records(batch))]

    def end(self) -> list[Action]:
        """Answer ``Push``: the last frame was sent."""
        if self.phase is Phase.ABORTED:
            return []
        if self._out is not _Out.PUSHING or self.phase is not Phase.TRANSFER:
            raise RuntimeError("end() closes a Push, once")
        self._out = _Out.ENDED
        return [Send(End(self.report.records_sent)), *self._maybe_finish()]

    def ingested(
        self, stored: int, refused: int, invalid: int, *, new_authors_refused: int = 0
    ) -> list[Action]:
        """Answer ``Ingest``: what became of the batch.

        ``new_authors_refused``: of ``refused``, records whose authors (never
        seen here) were over ``allowance.new_authors``: named in ``report.budget``.
        """
        if self._ingesting <= 0 or self.phase not in (Phase.TRANSFER, Phase.ABORTED):
            raise RuntimeError("ingested() answers an Ingest")
        self._ingesting -= 1
        self.report.records_stored += stored
        self.report.records_refused += refused
        if new_authors_refused:
            self.report.new_authors_refused += new_authors_refused
            self.report.budget = self.report.budget or f"reached {self.allowance.new_authors_why}"
        if self.phase is Phase.ABORTED:  # a batch under way when the session broke: counted
            return []
        if invalid:
            self.phase = Phase.ABORTED
            raise SyncViolation(f"{invalid} records fail validation")
        return self._maybe_finish()

    # --- receiving ----------------------------------------------------------------

    def _receive(self, msg: Message) -> list[Action]:
        phase = self.phase
        if phase is Phase.AWAIT_HELLO:
            if not isinstance(msg, Hello):
                raise _unexpected("HELLO", msg)
            return self._hello(msg)
        if phase is Phase.AWAIT_ANSWER and isinstance(msg, Refuse):
            self.phase = Phase.REFUSED
            self.report.refuse_code = msg.code
            return [Refused(msg.code, msg.text)]
        if phase in (Phase.AWAIT_ANSWER, Phase.RECONCILING):
            if not isinstance(msg, Reconcile):
                raise _unexpected("RECONCILE", msg)
            return self._reconcile(msg.message)
        if phase is Phase.TRANSFER:
            return self._transfer(msg)
        raise SyncViolation(f"expected no message, the session is {phase.value}; found {msg.KIND.name}")

    def _hello(self, msg: Hello) -> list[Action]:
        self.report.swarm = msg.swarm
        if msg.version != VERSION:
            return self._refuse(RefuseCode.VERSION, f"this node speaks sync version {VERSION}")
        assert self._admit is not None
        items = self._admit(msg.swarm)
        if items is None:
            return self._refuse(RefuseCode.NOT_JOINED, "this node has not joined that swarm")
        if self._busy:
            return self._refuse(RefuseCode.BUSY, "busy: try again later")
        self.items = items
        self._rec = Reconciler(items, role="responder", max_rounds=self.limits.max_rounds)
        return self._reconcile(msg.first)

    def _refuse(self, code: RefuseCode, text: str) -> list[Action]:
        self.phase = Phase.REFUSED
        self.report.refuse_code = code
        return [Send(Refuse(code, text)), Refused(code, text)]

    def _reconcile(self, data: bytes) -> list[Action]:
        rec, report, limits = self._rec, self.report, self.limits
        assert rec is not None
        report.reconcile_bytes_in += len(data)
        if report.reconcile_bytes_in > limits.max_reconcile_bytes:
            raise SyncViolation(f"more than {limits.max_reconcile_bytes} bytes of reconciliation")
        try:
            answer = rec.receive(data)
        except MeshError as exc:  # ReconcileError, DecodeError
            raise SyncViolation(f"bad reconciliation message: {exc}") from None
        actions: list[Action] = []
        if answer is not None:
            report.reconcile_bytes_out += len(answer)
            actions.append(Send(Reconcile(answer)))
            if not rec.done:
                self.phase = Phase.RECONCILING
                return actions
        # We sent the done message, or received it: the difference is known.
        self.phase = Phase.TRANSFER
        self.have, self.need = frozenset(rec.have), frozenset(rec.need)
        report.rounds = rec.rounds
        report.have, report.need = len(self.have), len(self.need)
        actions.append(LookUpPruned(self.need))
        return actions

    def _transfer(self, msg: Message) -> list[Action]:
        if self._in is _In.NOTWANT:
            if not isinstance(msg, NotWant):
                raise _unexpected("NOTWANT", msg)
            if not self.have.issuperset(msg.ids):
                raise SyncViolation("NOTWANT names ids that the reconciliation did not find missing")
            self._peer_notwant = frozenset(msg.ids)
            self._in = _In.RECORDS
            return self._maybe_push()
        if self._in is _In.RECORDS:
            if isinstance(msg, Records):
                expect = self._expect
                for data in msg.records:
                    rid = record_id(data)
                    if rid not in expect:
                        raise SyncViolation(f"record {rid.hex()[:16]}… was not expected")
                    expect.discard(rid)
                self.report.records_received += len(msg.records)
                take = self._within_budget(msg.records)
                if not take:
                    return []
                self._ingesting += 1
                return [Ingest(take)]
            if isinstance(msg, End):
                if msg.count != self.report.records_received:
                    raise SyncViolation(
                        f"END counts {msg.count} records, {self.report.records_received} arrived"
                    )
                self._in = _In.ENDED
                self.report.records_missing = len(self._expect)
                return self._maybe_finish()
            raise _unexpected("RECORDS or END", msg)
        raise SyncViolation(f"expected nothing after END, found {msg.KIND.name}")

    def _within_budget(self, records: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The records of a frame this session may still take; the rest are counted as over budget."""
        report, allow = self.report, self.allowance
        if report.budget:
            report.records_over_budget += len(records)
            return ()
        size = sum(map(len, records))
        if self.taken_records + len(records) <= allow.records and self.taken_bytes + size <= allow.bytes:
            self.taken_records += len(records)  # the common case: all of it
            self.taken_bytes += size
            return records
        for n, data in enumerate(records):
            if self.taken_records + 1 > allow.records:
                report.budget = f"reached {allow.records_why}"
            elif self.taken_bytes + len(data) > allow.bytes:
                report.budget = f"reached {allow.bytes_why}"
            if report.budget:
                report.records_over_budget += len(records) - n
                return records[:n]
            self.taken_records += 1
            self.taken_bytes += len(data)
        return records  # pragma: no cover - one of the bounds is reached above

    def _maybe_push(self) -> list[Action]:
        if self._out is not _Out.WAITING or self._peer_notwant is None:
            return []
        self._out = _Out.PUSHING
        # any order would do (the store takes records in any order); ascending ids
        return [Push(tuple(sorted(self.have.difference(self._peer_notwant))))]

    def _maybe_finish(self) -> list[Action]:
        if self._out is _Out.ENDED and self._in is _In.ENDED and self._ingesting == 0:
            self.phase = Phase.DONE
            return [Finished(self.report)]
        return []


def _unexpected(expected: str, msg: Message) -> SyncViolation:
    return SyncViolation(f"expected {expected}, found {msg.KIND.name}")
