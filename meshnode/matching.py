"""Wants that meet offers: whether an offer answers a want, and how well (pure).

:func:`match` takes a want and an offer (anything with the fields of
:class:`Matchable`, e.g. :class:`meshnode.store.LiveItem`) and returns a
:class:`Match`, or ``None`` when the offer does not answer the want. It
looks at content only: whether either item is withdrawn or expired is the
caller's business (the store's queries in :mod:`meshnode.store.matches`
only hand in live items). It never raises: items of the wrong types, or
text with nothing to match on, simply give ``None``.

The rules, in order (every one must hold):

1. **Types**: ``want.type == "want"`` and ``offer.type == "offer"``.
2. **Same swarm**, **different authors** (nobody matches themselves).
3. **Kinds**: the want's kind says how the wanter wants the thing
   (:data:`COMPATIBLE_KINDS`): a ``lend`` want (to borrow) is met by a
   ``lend`` or a ``give`` offer; a ``give`` want (to keep) only by ``give``;
   a ``swap`` want by ``swap`` or ``give``; a ``service`` want only by
   ``service``.
4. **Content**: a shared tag, or enough shared significant words:

   * tags compare after casefolding and plural folding (below) of the
     whole tag, so the tags ``drills`` and ``drill`` are shared;
   * the want's words are the significant words of its title and of its
     tags (a tag ``power-tools`` gives ``power`` and ``tool``); the offer's
     are those of its title, its tags and its description;
   * the offer must hold at least one of the want's words, and at least
     half as many as the want's title has (rounded up; tags add words that
     may be found, never words that must be): a want "maker" matches
     "Panasonic bread maker";
     "bread maker" matches "Panasonic bread maker" and also, with a lower
     score, "coffee maker" (one of two words); "cordless drill" matches
     "Bosch drill"; "Cordless drill 18V battery" (4 words) needs 2 of them.
     A want's description is never matched on: it says more than what is
     wanted ("for a weekend, will return it clean").

Words (:func:`significant_words`): the text is NFKC-normalised and
casefolded, then cut into runs of Unicode letters and digits (``_`` and
every other character separate words; scripts written without spaces give
one word per run). A word counts when it has at least two characters, is
not only digits (quantities and years are noise; ``18v`` counts) and is not
in :data:`STOP_WORDS` (English function words and the words every want or
offer says, like "looking", "need", "free"). Plural folding, an English
heuristic applied alike to both sides, on words of four characters or
more: ``-ies`` -> ``-y`` (batteries -> battery), ``-sses`` -> ``-ss``,
``-ches``/``-shes``/``-xes``/``-zes`` lose ``es`` (boxes -> box), any other
final ``s`` not after ``s``, ``u`` or ``i`` is dropped (drills -> drill;
glass, bus and axis stay). Markup is just punctuation: ``<b>drill</b>``
gives ``b`` (too short) and ``drill``.

Score, in [0, 1], orders matches (higher first); tags and title words
count more than description words::

    text  = (3 * shared_tags + 2 * words_in_offer_title_or_tags + 1 * words_only_in_offer_desc)
            / (3 * want_tags + 2 * want_words)
    score = 0.9 * text + 0.1 * (1 if want.kind == offer.kind else 0)

rounded to 6 decimal places. ``text`` is at most 1 (each want tag or word
counts once, at its best place in the offer), so adding a tag to both items
never lowers the score. :class:`Match` says why it matched: the shared
tags, the shared words and the offer's kind. Everything is deterministic
(sorted tuples), with no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

#: Want kind -> the offer kinds that meet it (see the module's docstring, rule 3).
COMPATIBLE_KINDS: dict[str, frozenset[str]] = {
    "lend": frozenset({"lend", "give"}),
    "give": frozenset({"give"}),
    "swap": frozenset({"swap", "give"}),
    "service": frozenset({"service"}),
}

#: Words that never count (after casefolding and plural folding).
STOP_WORDS = frozenset(
    """
    a an and are as at be but by for from has have in into is it its of on or our so than that the their
    them then there these this those to too up was we were will with you your my me mine some any all
    no not very just also only more most other own same such can could would should may might
    need needed needing want wanted wanting wants looking look seeking search anyone someone somebody
    something thing please borrow lend lending give giving swap swapping offer offering free new used
    good great nice old small big large one two
    """.split()
)

_WORD_RE = re.compile(r"[^\W_]+")
_TAG_WEIGHT = 3
_TITLE_WEIGHT = 2
_DESC_WEIGHT = 1
_TEXT_SHARE = 0.9
_KIND_SHARE = 0.1


class Matchable(Protocol):
    """What matching reads of an offer or a want (:class:`meshnode.store.LiveItem` has it all)."""

    @property
    def id(self) -> bytes: ...

    @property
    def type(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def desc(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...

    @property
    def author(self) -> bytes: ...

    @property
    def swarm(self) -> bytes: ...


@dataclass(frozen=True)
class Item:
    """An offer or want as plain values: a :class:`Matchable` built from a record or for a test."""

    id: bytes
    type: str
    kind: str
    title: str
    desc: str
    tags: tuple[str, ...]
    author: bytes
    swarm: bytes


@dataclass(frozen=True)
class Match:
    """An offer that answers a want, how well (``score`` in [0, 1]) and why."""

    want_id: bytes
    offer_id: bytes
    score: float
    shared_tags: tuple[str, ...]  # folded, sorted
    shared_words: tuple[str, ...]  # folded, sorted
    kind: str  # the offer's kind


def fold_word(word: str) -> str:
    """``word`` (already casefolded) with a simple English plural folded to its singular."""
    if len(word) < 4 or not word.endswith("s"):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith(("ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    return word[:-1]


def _tokens(text: str) -> list[str]:
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def significant_words(text: str) -> set[str]:
    """The folded words of ``text`` that count for matching (rules in the module's docstring)."""
    out: set[str] = set()
    for token in _tokens(text):
        if len(token) < 2 or token.isdigit():
            continue
        word = fold_word(token)
        if word not in STOP_WORDS and len(word) >= 2:
            out.add(word)
    return out


def folded_tags(tags: Iterable[str]) -> set[str]:
    """Tags casefolded and plural-folded as a whole (empty ones dropped)."""
    return {fold_word(t) for t in (unicodedata.normalize("NFKC", t).strip().casefold() for t in tags) if t}


def want_words(want: Matchable) -> set[str]:
    """The words a want is matched on: those of its title and its tags."""
    return significant_words(want.title) | significant_words(" ".join(want.tags))


def offer_words(offer: Matchable) -> tuple[set[str], set[str]]:
    """An offer's words: (title and tags, description)."""
    head = significant_words(offer.title) | significant_words(" ".join(offer.tags))
    return head, significant_words(offer.desc)


def kinds_meet(want_kind: str, offer_kind: str) -> bool:
    """Whether an offer of ``offer_kind`` can meet a want of ``want_kind``."""
    return offer_kind in COMPATIBLE_KINDS.get(want_kind, frozenset())


def match(want: Matchable, offer: Matchable) -> Match | None:
    """How ``offer`` answers ``want``, or None if it does not (rules in the module's docstring)."""
    if want.type != "want" or offer.type != "offer":
        return None
    if want.swarm != offer.swarm or want.author == offer.author or not kinds_meet(want.kind, offer.kind):
        return None
    w_tags = folded_tags(want.tags)
    shared_tags = w_tags & folded_tags(offer.tags)
    w_words = want_words(want)
    head, desc = offer_words(offer)
    in_head = w_words & head
    in_desc = (w_words & desc) - in_head
    found = len(in_head) + len(in_desc)
    enough_words = found >= 1 and 2 * found >= len(significant_words(want.title))
    if not shared_tags and not enough_words:
        return None
    text = (_TAG_WEIGHT * len(shared_tags) + _TITLE_WEIGHT * len(in_head) + _DESC_WEIGHT * len(in_desc)) / (
        _TAG_WEIGHT * len(w_tags) + _TITLE_WEIGHT * len(w_words)
    )
    score = _TEXT_SHARE * text + (_KIND_SHARE if want.kind == offer.kind else 0.0)
    return Match(
        want_id=want.id,
        offer_id=offer.id,
        score=round(min(1.0, score), 6),
        shared_tags=tuple(sorted(shared_tags)),
        shared_words=tuple(sorted(in_head | in_desc)),
        kind=offer.kind,
    )


def rank(matches: Iterable[Match]) -> list[Match]:
    """``matches`` best first: by score, then by the offer's and the want's ids (deterministic)."""
    return sorted(matches, key=lambda m: (-m.score, m.offer_id, m.want_id))
