"""Answering while away: the owner's rules, and what they decide about one trade (pure).

This module does no I/O and has no clock: the daemon reads ``config.toml``,
derives the trades (:mod:`meshnode.barter`) and the trust scores
(:mod:`meshnode.trust`), asks :func:`decide` about each trade, and sends
the answer as a normal signed reply whose note is :attr:`Decision.note`.

Config
------

The rules live in the ``[rules]`` table of ``config.toml``;
:func:`parse_rules` turns what ``tomllib`` gives for it into :class:`Rules`.
Each rule is off when its key is absent (a missing table: every rule off)::

    [rules]
    accept_give_from_trust = 0.7       # number from 0 to 1
    decline_below_trust = 0.1          # number greater than 0, at most 1
    max_open_loans_per_borrower = 2    # whole number from 0 to 1000
    accept_counter_that_only_adds = true

Trust scores run from 0 to 1 (a key with no trusted path to me, a stranger,
scores 0), so ``decline_below_trust`` must be above 0: at 0 or below it
could never decline anyone. A wrong type, a value out of range or an
unknown key is a one-line :class:`~meshnode.errors.ConfigError` naming the
key and what is allowed.

What the rules name
-------------------

``trust`` is what :meth:`meshnode.trust.TrustGraph.scores` gives for me (a
key missing from it scores 0). "What I give" is my side of the current
terms (``take`` when I am the responder, ``give`` when I am the proposer),
"what I receive" the other side.

* ``decline_below_trust`` (Y): a **proposal** to me (state ``proposed``, I
  am the responder) from a neighbour whose trust is below Y is declined.
  It also bars every automatic accept from such a neighbour: a counter
  from them, in a trade I started or answered, is left to me (no decline:
  I chose to trade with them, and a decline is final).
* ``accept_give_from_trust`` (X): a **give request** to me is accepted when
  its proposer's trust is at least X. A give request is a proposal to me
  (state ``proposed``) in which what I give is one or more offers, each
  known (in ``offers``), authored by me, of kind ``give`` and not
  withdrawn; what I receive may be anything or nothing. A counter is never
  a give request.
* ``accept_counter_that_only_adds``: a **counter** awaiting me (state
  ``countered``) is accepted when what I give is the same set of offers
  as before the counter, and what I receive is a strict superset of what I
  received before it. :class:`~meshnode.barter.Trade` keeps only the
  current terms, so the terms before the counter are a parameter,
  ``previous_terms`` (``give``, ``take``) from the proposer's point of view,
  as the trade stood just before its latest move; without them this rule
  never fires. Those are the terms I made (only the awaiting party may
  counter), so the other party asked for nothing I had not offered.
* ``max_open_loans_per_borrower`` (N): not a rule that answers, a limit on
  the accept rules. An accept that would lend one of my ``lend`` offers to
  a borrower who already holds N or more open loans from me (``open_loans_by``:
  per borrower, the accepted, not yet completed trades on my ``lend``
  offers; a trade counts once) is not made: :func:`decide` returns ``None``,
  and the trade is left to me. It never declines: the borrower may
  return a loan before I look, and a decline is final. When it holds back
  an accept, :func:`held_back` says so, for the inbox.

Precedence
----------

:func:`decide` answers only a trade that is open (``proposed`` or
``countered``) and awaiting me (``trade.awaiting() == me``); anything else
gets ``None``. Then, in this order, the first that applies wins:

1. ``decline_below_trust``: a decline of a proposal, or ``None`` for a
   counter, from a neighbour below Y (no accept rule is considered);
2. ``accept_give_from_trust``;
3. ``accept_counter_that_only_adds``;

and an accept from 2 or 3 is dropped (``None``) when
``max_open_loans_per_borrower`` forbids it. Nothing applies: ``None``.

Notes
-----

:attr:`Decision.note` is one sentence naming the rule, its setting and the
fact it applied to, e.g. ``"accepted automatically by my rule
accept_give_from_trust (0.7): Bob is trusted 0.82"``. It is the note of a
reply the owner signs, read by both parties, so it speaks as the owner
("my rule", "what I receive"). The other party is named by ``label``
(:func:`meshnode.people.label`), else its short peer id. Trust in a note is
rounded *down* to two decimals, so it never reads as reaching a threshold
it missed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import TypeGuard

from meshnode.barter import COUNTERED, OPEN_STATES, PROPOSED, OfferInfo, Trade
from meshnode.errors import ConfigError
from meshnode.people import short_peer

ACCEPT_GIVE_FROM_TRUST = "accept_give_from_trust"
DECLINE_BELOW_TRUST = "decline_below_trust"
MAX_OPEN_LOANS_PER_BORROWER = "max_open_loans_per_borrower"
ACCEPT_COUNTER_THAT_ONLY_ADDS = "accept_counter_that_only_adds"
RULE_NAMES: tuple[str, ...] = (
    DECLINE_BELOW_TRUST,
    ACCEPT_GIVE_FROM_TRUST,
    ACCEPT_COUNTER_THAT_ONLY_ADDS,
    MAX_OPEN_LOANS_PER_BORROWER,
)
"""Every key ``[rules]`` may hold, in the order of precedence."""

MAX_LOANS_LIMIT = 1000


@dataclass(frozen=True)
class Rules:
    """The ``[rules]`` table: ``None`` (or ``False``) is a rule that is off."""

    accept_give_from_trust: float | None = None
    decline_below_trust: float | None = None
    max_open_loans_per_borrower: int | None = None
    accept_counter_that_only_adds: bool = False

    @property
    def any_on(self) -> bool:
        """Whether any rule is on (else the daemon need not look)."""
        return self != Rules()


@dataclass(frozen=True)
class Decision:
    """What the daemon does about one trade on its owner's behalf.

    ``action`` is ``"accept"`` or ``"decline"``; ``rule`` the name of the
    rule that decided (a key of ``[rules]``); ``note`` the sentence that goes
    into the reply's note and the inbox.
    """

    action: str
    rule: str
    note: str


def parse_rules(table: object, where: str = "config.toml") -> Rules:
    """The :class:`Rules` of a ``[rules]`` table as ``tomllib`` gives it; ``None``: all off.

    ``where`` names the file in error messages.
    """
    if table is None:
        return Rules()
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: [rules] must be a table")
    unknown = sorted(str(k) for k in table if k not in RULE_NAMES)
    if unknown:
        raise ConfigError(f"{where}: unknown keys in [rules]: {unknown}; known are {list(RULE_NAMES)}")
    accept_give = table.get(ACCEPT_GIVE_FROM_TRUST)
    if accept_give is not None and not (_is_number(accept_give) and 0 <= accept_give <= 1):
        raise ConfigError(
            f"{where}: [rules] {ACCEPT_GIVE_FROM_TRUST} must be a number from 0 to 1, found {accept_give!r}"
        )
    decline_below = table.get(DECLINE_BELOW_TRUST)
    if decline_below is not None and not (_is_number(decline_below) and 0 < decline_below <= 1):
        raise ConfigError(
            f"{where}: [rules] {DECLINE_BELOW_TRUST} must be a number greater than 0 and at most 1"
            f" (trust scores run from 0 to 1), found {decline_below!r}"
        )
    max_loans = table.get(MAX_OPEN_LOANS_PER_BORROWER)
    if max_loans is not None and (
        isinstance(max_loans, bool) or not isinstance(max_loans, int) or not 0 <= max_loans <= MAX_LOANS_LIMIT
    ):
        raise ConfigError(
            f"{where}: [rules] {MAX_OPEN_LOANS_PER_BORROWER} must be a whole number from 0 to"
            f" {MAX_LOANS_LIMIT}, found {max_loans!r}"
        )
    only_adds = table.get(ACCEPT_COUNTER_THAT_ONLY_ADDS, False)
    if not isinstance(only_adds, bool):
        raise ConfigError(
            f"{where}: [rules] {ACCEPT_COUNTER_THAT_ONLY_ADDS} must be true or false, found {only_adds!r}"
        )
    return Rules(
        accept_give_from_trust=None if accept_give is None else float(accept_give),
        decline_below_trust=None if decline_below is None else float(decline_below),
        max_open_loans_per_borrower=max_loans,
        accept_counter_that_only_adds=only_adds,
    )


def describe_rules(rules: Rules) -> tuple[str, ...]:
    """One sentence per rule that is on, in the order of precedence (for ``meshnode rules``)."""
    lines: list[str] = []
    if rules.decline_below_trust is not None:
        lines.append(
            f"{DECLINE_BELOW_TRUST} = {rules.decline_below_trust:g}: decline proposals from neighbours"
            f" trusted below {rules.decline_below_trust:g}, and never accept anything from them"
        )
    if rules.accept_give_from_trust is not None:
        lines.append(
            f"{ACCEPT_GIVE_FROM_TRUST} = {rules.accept_give_from_trust:g}: accept requests for your"
            f" give offers from neighbours trusted at least {rules.accept_give_from_trust:g}"
        )
    if rules.accept_counter_that_only_adds:
        lines.append(
            f"{ACCEPT_COUNTER_THAT_ONLY_ADDS} = true: accept a counter that gives you more than your"
            " own terms and asks for nothing more"
        )
    if rules.max_open_loans_per_borrower is not None:
        lines.append(
            f"{MAX_OPEN_LOANS_PER_BORROWER} = {rules.max_open_loans_per_borrower}: never lend"
            f" automatically to a borrower holding {rules.max_open_loans_per_borrower} open loans"
            " from you (left to you)"
        )
    return tuple(lines)


def decide(
    trade: Trade,
    *,
    me: bytes,
    offers: Mapping[bytes, OfferInfo],
    trust: Mapping[bytes, float],
    open_loans_by: Mapping[bytes, int],
    rules: Rules,
    previous_terms: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None,
    label: str | None = None,
) -> Decision | None:
    """What to do about ``trade`` on ``me``'s behalf, or ``None`` to leave it to the owner.

    See the module docstring for the rules and their precedence.
    """
    if trade.state not in OPEN_STATES or trade.awaiting() != me:
        return None
    other = trade.other(me)
    score = trust.get(other, 0.0)
    who = label if label is not None else short_peer(other)
    if rules.decline_below_trust is not None and score < rules.decline_below_trust:
        if trade.state != PROPOSED:
            return None
        return Decision(
            "decline",
            DECLINE_BELOW_TRUST,
            f"declined automatically by my rule {DECLINE_BELOW_TRUST} ({rules.decline_below_trust:g}):"
            f" {who} is trusted {_shown(score)}",
        )
    accept = _accept_give(trade, me, offers, score, who, rules) or _accept_counter(
        trade, me, previous_terms, who, rules
    )
    if accept is None or held_back(trade, me=me, offers=offers, open_loans_by=open_loans_by, rules=rules):
        return None
    return accept


def held_back(
    trade: Trade,
    *,
    me: bytes,
    offers: Mapping[bytes, OfferInfo],
    open_loans_by: Mapping[bytes, int],
    rules: Rules,
) -> str | None:
    """Why ``max_open_loans_per_borrower`` forbids accepting ``trade`` automatically, else ``None``.

    It forbids it when what I give includes one of my known ``lend`` offers
    and the other party already holds the limit of open loans from me.
    """
    limit = rules.max_open_loans_per_borrower
    if limit is None or trade.role(me) is None:
        return None
    if not any(_is_mine(offers.get(oid), me, "lend") for oid in _given_by(trade, me)):
        return None
    held = open_loans_by.get(trade.other(me), 0)
    if held + 1 <= limit:
        return None
    return (
        f"left to you by your rule {MAX_OPEN_LOANS_PER_BORROWER} ({limit}):"
        f" the borrower holds {held} open loan{'' if held == 1 else 's'} from you"
    )


def _accept_give(
    trade: Trade, me: bytes, offers: Mapping[bytes, OfferInfo], score: float, who: str, rules: Rules
) -> Decision | None:
    threshold = rules.accept_give_from_trust
    if threshold is None or trade.state != PROPOSED or score < threshold:
        return None
    given = _given_by(trade, me)
    if not given or not all(_is_mine(offers.get(oid), me, "give") for oid in given):
        return None
    return Decision(
        "accept",
        ACCEPT_GIVE_FROM_TRUST,
        f"accepted automatically by my rule {ACCEPT_GIVE_FROM_TRUST} ({threshold:g}):"
        f" {who} is trusted {_shown(score)}",
    )


def _accept_counter(
    trade: Trade,
    me: bytes,
    previous_terms: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None,
    who: str,
    rules: Rules,
) -> Decision | None:
    if not rules.accept_counter_that_only_adds or trade.state != COUNTERED or previous_terms is None:
        return None
    before_give, before_take = previous_terms
    mine_first = trade.proposer == me
    gave_before = set(before_give if mine_first else before_take)
    got_before = set(before_take if mine_first else before_give)
    if set(_given_by(trade, me)) != gave_before:
        return None
    got_now = set(_received_by(trade, me))
    if not got_now > got_before:
        return None
    added = len(got_now - got_before)
    return Decision(
        "accept",
        ACCEPT_COUNTER_THAT_ONLY_ADDS,
        f"accepted automatically by my rule {ACCEPT_COUNTER_THAT_ONLY_ADDS}: {who}'s counter adds {added}"
        f" offer{'' if added == 1 else 's'} to what I receive and asks for nothing more",
    )


def _given_by(trade: Trade, me: bytes) -> tuple[bytes, ...]:
    """The offers ``me`` hands over under the current terms."""
    return trade.give if trade.proposer == me else trade.take


def _received_by(trade: Trade, me: bytes) -> tuple[bytes, ...]:
    """The offers ``me`` receives under the current terms."""
    return trade.take if trade.proposer == me else trade.give


def _is_mine(info: OfferInfo | None, me: bytes, kind: str) -> bool:
    return info is not None and info.author == me and info.kind == kind and info.withdrawn_at is None


def _is_number(value: object) -> TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _shown(score: float) -> str:
    """A trust score rounded down to two decimals (of its shortest decimal form: 0.29 shows 0.29)."""
    return str(Decimal(repr(score)).quantize(Decimal("0.01"), rounding=ROUND_FLOOR))
