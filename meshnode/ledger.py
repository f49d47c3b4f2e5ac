"""Mutual credit: balances of a swarm's members, derived from their signed ``transfer`` records.

Every member starts at zero. A ``transfer`` record
(:class:`meshnode.records.TransferBody`) pays ``amount`` hundredths of the
swarm's unit from its author to ``to``. Like :mod:`meshnode.barter` and
:mod:`meshnode.ringtrade` this module is a pure fold: no I/O, no clock.
:func:`derive_ledger` depends only on the *set* of transfer records and on
the limits ``limit_of(key)`` (hundredths, >= 0) the caller supplies (derived
from trust, never from an administrator): any order, any repetition, the
same :class:`Ledger`.

Chains
------

Each member's transfers form one chain: the transfer at ``seq`` 1 names no
``prev``; the one at ``seq`` k > 1 names as ``prev`` the id of the author's
transfer at ``seq`` k - 1. A transfer is *placed* if it is the first link, or
its ``prev`` is a placed transfer of the same author at the place before.
Otherwise it is ``pending`` (a link is not held: :attr:`Ledger.pending` says
which id it waits for, for sync to fetch), or ``refused`` (its ``prev`` is
someone else's transfer, or one at another place, or a refused one).

How incoming payments enter the payee's chain: acknowledgements
----------------------------------------------------------------

A transfer may list in ``acks`` ids of transfers paid *to its author*. What a
member may spend is computed from their own chain alone: the **chain
balance** after link k is the sum of the incoming transfers credited by
links 1..k minus the amounts paid by links 1..k (only the links that count,
see below). An acknowledged transfer is credited if it counts, is paid to
the author and was not credited by an earlier counted link of the chain;
any other acknowledgement is ignored (:attr:`Ledger.ignored_acks`), it does
not refuse the link, so a voided payment (from a forker, say) costs its
payee only that payment. An acknowledged transfer that is not held, or is
pending, makes the link pending until it is decided.

Why acknowledgements rather than counting every incoming payment: the order
of two members' chains is unknown, so "the payer's balance just before this
transfer" is only well defined if the payer's own chain says which incoming
payments it includes. It also keeps the fold well founded: a link names the
transfers it builds on by id (a hash), so the dependencies between links
never form a cycle and each link is decided exactly once, whatever the
order of arrival. (Counting every incoming payment would need a fixpoint
over payments that pay each other, which is not unique.) The cost: a payee
spends a payment only once they acknowledge it in a later transfer of
their own (:func:`next_transfer` acknowledges the oldest uncredited ones).

Balances (what :attr:`Ledger.balances` shows) credit the payee as soon as a
transfer counts, acknowledged or not, so the sum over members of balances
is always 0: each counted transfer moves its amount from payer to payee,
and nothing else changes a balance.

Which transfers count
---------------------

The placed links of a chain are decided in ``seq`` order. Link k counts if
every acknowledged transfer is decided and, with the ones it credits,
``chain balance after k >= -limit_of(author)``. Otherwise it is refused
(over the limit) and counts for nothing, its acknowledgements included (a
later link may acknowledge them again); later links are still decided
against the chain balance of the links that count. A pending link makes
every later link of the chain pending (their chain balance depends on it).

**Guarantee: no member passes their limit.** A member's balance is the
incoming transfers that count minus the outgoing ones. The credited
incoming are a subset of the counted incoming, and every counted outgoing
transfer is in a link at or before their last counted link, whose check was
``chain balance >= -limit``. So ``balance >= chain balance >= -limit``.

Forks
-----

Two distinct transfers by one author that claim the same place (the same
``seq``, or the same ``prev``) are a fork. A :class:`ForkProof` holds the two
signed records; anyone can check it from them alone
(:func:`check_fork_proof`): same author, same place, different ids, both
signatures valid. An honest node never signs two (:func:`check_transfer`
refuses), so a proof convicts its author.

The fork point F is the lowest ``seq`` of a transfer in any conflicting pair
(the proof kept in :attr:`Ledger.forks` is a pair at F). Then:

* nothing of the forker from ``seq`` F on counts (refused): which branch is
  the real one cannot be decided without an order, and counting both could
  spend twice. The chain is dead; the forker's limit is 0 from then on
  (:attr:`Ledger.limits`, :func:`check_transfer`).
* their links below F form one unambiguous chain and are decided as any
  other, against ``limit_of(author)``: those payments were not double spent,
  and voiding them would punish their payees (who delivered), not the
  forker, and cascade through acknowledgements to third parties. So a
  forker may keep a negative balance down to the limit they had, the same
  loss as a member who leaves owing.

What it cannot prevent: until a node holds both records of a fork, each
victim's node counts its own branch (a partitioned forker can pay two
neighbours with the same place); when the proof arrives, the place and
everything after it stop counting everywhere. Nodes agree on the ledger
when they hold the same records and use the same limits; limits derived
from each node's view of trust may differ, and so may what counts.

Before signing
--------------

:func:`check_transfer` refuses what the fold would not count: paying
oneself, a forker paying, a wrong place (not right after the author's head),
a place already taken by a held transfer of the author (that would fork),
a chain of the author with pending links, acknowledgements that would not
be credited, and going past the limit. A transfer it accepts counts in the
fold of the same records plus itself, with the same limits.
:func:`next_transfer` builds such a body.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from meshnode.errors import NotAllowed, TransitionError, ValidationError
from meshnode.ids import short_id
from meshnode.money import format_amount
from meshnode.records import MAX_ACKS, Record, TransferBody, check_body, verify_record

LimitOf = Callable[[bytes], int]


@dataclass(frozen=True)
class ForkProof:
    """Two signed transfers by ``author`` claiming one place of their chain (``a.id < b.id``)."""

    author: bytes
    a: Record
    b: Record

    @property
    def seq(self) -> int:
        """The lower place of the two: the fork point."""
        a: TransferBody = self.a.body
        b: TransferBody = self.b.body
        return min(a.seq, b.seq)


def check_fork_proof(proof: ForkProof) -> None:
    """Raise unless ``proof`` convicts its author: two valid transfers of theirs at one place."""
    a, b = proof.a, proof.b
    for rec in (a, b):
        if rec.type != "transfer" or not isinstance(rec.body, TransferBody):
            raise ValidationError(f"a fork proof holds two transfers, found a {rec.type} record")
        if rec.author != proof.author:
            raise ValidationError(f"transfer {short_id(rec.id)} is not by {short_id(proof.author)}")
    if a.id == b.id:
        raise ValidationError("a fork proof needs two different transfers, found the same one twice")
    if a.swarm != b.swarm:
        raise ValidationError("the two transfers of a fork proof are in different swarms")
    if not _same_place(a.body, b.body):
        raise ValidationError(
            f"transfers {short_id(a.id)} (seq {a.body.seq}) and {short_id(b.id)} (seq {b.body.seq})"
            " claim different places"
        )
    verify_record(a)
    verify_record(b)


@dataclass(frozen=True)
class Account:
    """One member as the ledger sees them.

    ``balance``: counted incoming minus counted outgoing (hundredths).
    ``limit``: how far below zero they may go from now on (0 for a forker).
    ``chain_balance``: credited (acknowledged) incoming minus counted outgoing,
    what their next transfer is checked against. ``head``/``head_seq``: their
    last placed link (``None``/0 if none). ``incoming``: counted transfers to
    them, by ``(ts, id)``; ``credited``: those their own chain acknowledged.
    """

    key: bytes
    balance: int
    limit: int
    chain_balance: int
    head: bytes | None
    head_seq: int
    incoming: tuple[bytes, ...]
    credited: frozenset[bytes]
    forked: bool

    @property
    def uncredited(self) -> tuple[bytes, ...]:
        """Counted incoming transfers not yet acknowledged, oldest first."""
        return tuple(t for t in self.incoming if t not in self.credited)


@dataclass(frozen=True)
class Ledger:
    """The ledger of one swarm derived from a set of transfer records and limits.

    ``transfers``: every transfer held, by id; each is in exactly one of
    ``counted``, ``refused`` (id -> why) and ``pending`` (id -> the id of the
    missing transfer it waits for). ``balances``: member -> balance (sum 0).
    ``limits``: member -> the limit used from now on (0 for forkers).
    ``forks``: forker -> a :class:`ForkProof`. ``ignored_acks``: transfer id ->
    why some of its acknowledgements credit nothing.
    """

    transfers: Mapping[bytes, Record]
    counted: frozenset[bytes]
    refused: Mapping[bytes, str]
    pending: Mapping[bytes, bytes]
    balances: Mapping[bytes, int]
    limits: Mapping[bytes, int]
    accounts: Mapping[bytes, Account]
    forks: Mapping[bytes, ForkProof]
    ignored_acks: Mapping[bytes, str]

    @property
    def missing(self) -> frozenset[bytes]:
        """The ids of transfers the pending ones wait for (what sync should fetch)."""
        return frozenset(self.pending.values())

    def balance(self, key: bytes) -> int:
        return self.balances.get(key, 0)

    def account(self, key: bytes, limit_of: LimitOf) -> Account:
        """``key``'s account (an empty one, with ``limit_of(key)``, if the ledger never saw it)."""
        found = self.accounts.get(key)
        if found is not None:
            return found
        return Account(key, 0, _limit(limit_of, key), 0, None, 0, (), frozenset(), False)


def derive_ledger(records: Iterable[Record], limit_of: LimitOf) -> Ledger:
    """Fold ``transfer`` records (all of one swarm) into a :class:`Ledger`; see the module docstring."""
    held: dict[bytes, Record] = {}
    swarms: set[bytes] = set()
    for record in records:
        if record.type != "transfer" or not isinstance(record.body, TransferBody):
            raise ValidationError(f"expected transfer records, found a {record.type} record")
        held[record.id] = record
        swarms.add(record.swarm)
    if len(swarms) > 1:
        raise ValidationError(f"expected the transfers of one swarm, found {len(swarms)} swarms")

    by_author: dict[bytes, list[Record]] = {}
    for record in held.values():
        by_author.setdefault(record.author, []).append(record)
    forks = {author: proof for author, rs in by_author.items() if (proof := _fork_of(rs)) is not None}

    refused: dict[bytes, str] = {}
    pending: dict[bytes, bytes] = {}
    chains: dict[bytes, list[Record]] = {}
    for author, rs in by_author.items():
        chains[author] = _place(rs, held, forks.get(author), refused, pending)

    keys = set(by_author) | {r.body.to for r in held.values()}
    limits = {k: _limit(limit_of, k) for k in keys}
    counted, credited, chain_balance, ignored = _decide(chains, held, limits, refused, pending)

    balances = dict.fromkeys(keys, 0)
    incoming: dict[bytes, list[Record]] = {k: [] for k in keys}
    for tid in counted:
        rec = held[tid]
        balances[rec.author] -= rec.body.amount
        balances[rec.body.to] += rec.body.amount
        incoming[rec.body.to].append(rec)
    accounts: dict[bytes, Account] = {}
    for key in sorted(keys):
        chain = chains.get(key, [])
        accounts[key] = Account(
            key=key,
            balance=balances[key],
            limit=0 if key in forks else limits[key],
            chain_balance=chain_balance.get(key, 0),
            head=chain[-1].id if chain else None,
            head_seq=len(chain),
            incoming=tuple(r.id for r in sorted(incoming[key], key=lambda r: (r.ts, r.id))),
            credited=frozenset(credited.get(key, ())),
            forked=key in forks,
        )
    return Ledger(
        transfers=MappingProxyType(dict(sorted(held.items()))),
        counted=frozenset(counted),
        refused=MappingProxyType(dict(sorted(refused.items()))),
        pending=MappingProxyType(dict(sorted(pending.items()))),
        balances=MappingProxyType({k: balances[k] for k in sorted(keys)}),
        limits=MappingProxyType({k: accounts[k].limit for k in sorted(keys)}),
        accounts=MappingProxyType(accounts),
        forks=MappingProxyType(dict(sorted(forks.items()))),
        ignored_acks=MappingProxyType(dict(sorted(ignored.items()))),
    )


def check_transfer(ledger: Ledger, body: TransferBody, author: bytes, limit_of: LimitOf) -> None:
    """Raise unless ``author`` may sign ``body`` now: what the fold would not count, refuse now.

    ``ledger`` is the fold of the records held (``limit_of`` the same limits).
    """
    if not isinstance(body, TransferBody):
        raise ValidationError(f"expected a transfer, found {type(body).__name__}")
    check_body(body)
    if body.to == author:
        raise NotAllowed("a transfer must pay someone else, not its own author")
    proof = ledger.forks.get(author)
    if proof is not None:
        raise NotAllowed(
            f"{short_id(author)}'s chain forks at seq {proof.seq} (transfers {short_id(proof.a.id)}"
            f" and {short_id(proof.b.id)}): their credit limit is 0 and no later transfer counts"
        )
    account = ledger.account(author, limit_of)
    waiting = sorted(
        (r.body.seq, ledger.pending[tid])
        for tid, r in ledger.transfers.items()
        if r.author == author and tid in ledger.pending
    )
    if waiting:
        raise TransitionError(
            f"{short_id(author)}'s chain waits for transfer {short_id(waiting[0][1])}"
            f" (at seq {waiting[0][0]}): fetch it first"
        )
    seq = account.head_seq + 1
    if body.seq != seq or body.prev != account.head:
        where = "no prev" if account.head is None else f"prev {short_id(account.head)}"
        raise TransitionError(
            f"the next transfer of {short_id(author)} is at seq {seq} with {where}, found seq {body.seq}"
        )
    for tid, rec in ledger.transfers.items():
        if rec.author == author and (rec.body.seq == seq or rec.body.prev == body.prev):
            raise TransitionError(
                f"transfer {short_id(tid)} of {short_id(author)} already claims seq {seq}:"
                " signing another would fork the chain"
            )
    credit = 0
    for ack in body.acks:
        why = _ack_problem(ledger, ack, author, account.credited)
        if why:
            raise TransitionError(f"cannot acknowledge transfer {short_id(ack)}: {why}")
        credit += ledger.transfers[ack].body.amount
    after = account.chain_balance + credit - body.amount
    if after < -account.limit:
        raise NotAllowed(
            f"paying {format_amount(body.amount)} would leave {short_id(author)} at {format_amount(after)},"
            f" below their credit limit of -{format_amount(account.limit)}"
        )


def next_transfer(
    ledger: Ledger,
    author: bytes,
    to: bytes,
    amount: int,
    limit_of: LimitOf,
    *,
    memo: str = "",
    trade: bytes | None = None,
) -> TransferBody:
    """The body ``author`` signs next to pay ``to``: the next place, acknowledging the oldest uncredited.

    Raises as :func:`check_transfer` does if it would not count.
    """
    account = ledger.account(author, limit_of)
    acks = tuple(sorted(account.uncredited[:MAX_ACKS]))
    body = TransferBody(
        to=to, amount=amount, seq=account.head_seq + 1, prev=account.head, acks=acks, memo=memo, trade=trade
    )
    check_transfer(ledger, body, author, limit_of)
    return body


# --- the fold ----------------------------------------------------------------------


def _same_place(a: TransferBody, b: TransferBody) -> bool:
    return a.seq == b.seq or (a.prev is not None and a.prev == b.prev)


def _fork_of(rs: list[Record]) -> ForkProof | None:
    """The fork proof of one author's transfers (a pair at the fork point), if they fork."""
    groups: dict[tuple[str, object], list[Record]] = {}
    for rec in rs:
        groups.setdefault(("seq", rec.body.seq), []).append(rec)
        if rec.body.prev is not None:
            groups.setdefault(("prev", rec.body.prev), []).append(rec)
    best: tuple[int, bytes, bytes] | None = None
    pair: tuple[Record, Record] | None = None
    for group in groups.values():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda r: (r.body.seq, r.id))
        first = group[0]
        partner = min(group[1:], key=lambda r: r.id)
        a, b = sorted((first, partner), key=lambda r: r.id)
        key = (first.body.seq, a.id, b.id)
        if best is None or key < best:
            best, pair = key, (a, b)
    if pair is None:
        return None
    return ForkProof(pair[0].author, pair[0], pair[1])


def _place(
    rs: list[Record],
    held: Mapping[bytes, Record],
    fork: ForkProof | None,
    refused: dict[bytes, str],
    pending: dict[bytes, bytes],
) -> list[Record]:
    """The placed chain of one author (seq 1, 2, ...); the others into ``refused`` or ``pending``."""
    placed: dict[bytes, Record] = {}
    for rec in sorted(rs, key=lambda r: (r.body.seq, r.id)):
        body, name = rec.body, short_id(rec.author)
        if fork is not None and body.seq >= fork.seq:
            refused[rec.id] = (
                f"{name}'s chain forks at seq {fork.seq} (transfers {short_id(fork.a.id)} and"
                f" {short_id(fork.b.id)} claim one place): nothing of theirs from there on counts"
            )
            continue
        if body.prev is None:
            placed[rec.id] = rec
            continue
        prev = held.get(body.prev)
        if prev is None:
            pending[rec.id] = body.prev
        elif prev.author != rec.author:
            refused[rec.id] = f"transfer {short_id(rec.id)} links to {short_id(prev.author)}'s transfer"
        elif prev.body.seq != body.seq - 1:
            refused[rec.id] = (
                f"transfer {short_id(rec.id)} at seq {body.seq} links to one at seq {prev.body.seq}"
            )
        elif prev.id in placed:
            placed[rec.id] = rec
        elif prev.id in pending:
            pending[rec.id] = pending[prev.id]
        else:
            refused[rec.id] = f"transfer {short_id(rec.id)} follows refused transfer {short_id(prev.id)}"
    # Below the fork point seqs are unique, so the placed links are seq 1..n in order.
    return sorted(placed.values(), key=lambda r: r.body.seq)


def _decide(
    chains: Mapping[bytes, list[Record]],
    held: Mapping[bytes, Record],
    limits: Mapping[bytes, int],
    refused: dict[bytes, str],
    pending: dict[bytes, bytes],
) -> tuple[set[bytes], dict[bytes, set[bytes]], dict[bytes, int], dict[bytes, str]]:
    """Decide the placed links of every chain, in chain order, each once its acknowledgements are decided."""
    counted: set[bytes] = set()
    credited: dict[bytes, set[bytes]] = {a: set() for a in chains}
    balance: dict[bytes, int] = dict.fromkeys(chains, 0)
    ignored: dict[bytes, str] = {}
    cursor: dict[bytes, int] = dict.fromkeys(chains, 0)

    def decided(tid: bytes) -> bool:
        return tid in counted or tid in refused or tid in pending

    progress = True
    while progress:
        progress = False
        for author in sorted(chains):
            chain = chains[author]
            while cursor[author] < len(chain):
                rec = chain[cursor[author]]
                body: TransferBody = rec.body
                waits = [a for a in body.acks if a in held and not decided(a)]
                if waits:
                    break  # decided later in this pass or the next
                cursor[author] += 1
                progress = True
                missing = next((a for a in body.acks if a not in held), None)
                if missing is None:
                    missing = next((pending[a] for a in body.acks if a in pending), None)
                if missing is not None:
                    for later in chain[cursor[author] - 1 :]:
                        pending[later.id] = missing
                    cursor[author] = len(chain)
                    break
                credit, new, why = 0, set(), []
                for ack in body.acks:
                    target = held[ack]
                    if ack not in counted:
                        why.append(f"{short_id(ack)} does not count")
                    elif target.body.to != author:
                        why.append(f"{short_id(ack)} was not paid to {short_id(author)}")
                    elif ack in credited[author]:
                        why.append(f"{short_id(ack)} was credited already")
                    else:
                        credit += target.body.amount
                        new.add(ack)
                if why:
                    ignored[rec.id] = "acknowledgements credit nothing: " + "; ".join(why)
                after = balance[author] + credit - body.amount
                if after < -limits[author]:
                    refused[rec.id] = (
                        f"paying {format_amount(body.amount)} would leave {short_id(author)}"
                        f" at {format_amount(after)},"
                        f" below their credit limit of -{format_amount(limits[author])}"
                    )
                    continue
                balance[author] = after
                credited[author] |= new
                counted.add(rec.id)
    # Hash links cannot form a cycle, so nothing is left undecided; were it ever, it would wait.
    for author, chain in chains.items():
        if cursor[author] < len(chain):
            stuck = chain[cursor[author]]
            blocker = next(a for a in stuck.body.acks if a in held and not decided(a))
            for rec in chain[cursor[author] :]:
                pending[rec.id] = blocker
    return counted, credited, balance, ignored


def _ack_problem(ledger: Ledger, ack: bytes, author: bytes, credited: frozenset[bytes]) -> str:
    rec = ledger.transfers.get(ack)
    if rec is None:
        return "it is not held"
    if ack in ledger.pending:
        return f"it waits for transfer {short_id(ledger.pending[ack])}"
    if ack not in ledger.counted:
        return f"it does not count ({ledger.refused.get(ack, 'refused')})"
    if rec.body.to != author:
        return f"it was paid to {short_id(rec.body.to)}, not to {short_id(author)}"
    if ack in credited:
        return "it was credited already"
    return ""


def _limit(limit_of: LimitOf, key: bytes) -> int:
    value = limit_of(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"a credit limit is an integer >= 0 (hundredths), found {value!r}")
    return value
