"""A flood of valid but hostile records, for tests and measurements (issue 12).

:func:`flood_records` signs ``count`` records from ``keys`` fresh keys, each
record valid on its own: offers, vouches for random keys, proposals naming
:data:`records.MAX_ITEMS` random ids on each side, and withdraws of ids that
were never stored, in the proportions of :class:`FloodMix`. Keys, contents
and timestamps come from ``seed``, so a flood is the same every time (the
signatures too: Ed25519 is deterministic). Signing 30,000 records takes a
few seconds; :func:`cached_flood` keeps each flood for the test session.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import nacl.signing

from meshnode import records as r

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class FloodMix:
    """Shares of each kind of record in a flood (weights, need not sum to 1)."""

    offers: float = 0.25
    vouches: float = 0.25
    proposals: float = 0.25
    withdraws: float = 0.25


def flood_keys(keys: int, seed: int = 0) -> list[nacl.signing.SigningKey]:
    """``keys`` signing keys drawn from ``seed``."""
    rng = random.Random(seed)
    return [nacl.signing.SigningKey(rng.randbytes(32)) for _ in range(keys)]


def flood_records(
    count: int = 30_000,
    keys: int = 1_000,
    *,
    swarm: bytes,
    now_ms: int,
    seed: int = 0,
    mix: FloodMix = FloodMix(),
    spread_ms: int = HOUR_MS,
    offer_lifetime_ms: int = 14 * DAY_MS,
) -> list[r.Record]:
    """``count`` valid records of ``swarm`` from ``keys`` fresh keys (round-robin), oldest first per key.

    Timestamps fall in the ``spread_ms`` before ``now_ms``; offers expire
    ``offer_lifetime_ms`` after it. Vouches name random keys (level 0.001-1),
    proposals a random key and random offer ids, withdraws random ids.
    """
    rng = random.Random(seed)
    signers = flood_keys(keys, seed)
    kinds = ("offers", "vouches", "proposals", "withdraws")
    weights = [getattr(mix, k) for k in kinds]
    base = now_ms - spread_ms
    out: list[r.Record] = []
    seqs = [0] * keys
    for i in range(count):
        k = i % keys
        seqs[k] += 1
        kind = rng.choices(kinds, weights)[0]
        body: object
        if kind == "offers":
            body = r.OfferBody(
                title=f"flood offer {i}",
                kind=rng.choice(r.ITEM_KINDS),
                tags=("flood",),
                expires=now_ms + offer_lifetime_ms,
            )
        elif kind == "vouches":
            body = r.AttestBody(subject=rng.randbytes(32), level=rng.randint(1, r.LEVEL_SCALE))
        elif kind == "proposals":
            body = r.ProposalBody(
                to=rng.randbytes(32),
                give=tuple(rng.randbytes(32) for _ in range(r.MAX_ITEMS)),
                take=tuple(rng.randbytes(32) for _ in range(r.MAX_ITEMS)),
            )
        else:
            body = r.WithdrawBody(target=rng.randbytes(32))
        ts = base + (spread_ms * seqs[k] * keys) // max(1, count)
        out.append(r.new_record(body, swarm=swarm, seq=seqs[k], ts=ts, signing_key=signers[k]))
    return out


@functools.lru_cache(maxsize=4)
def cached_flood(count: int, keys: int, swarm: bytes, now_ms: int, seed: int = 0) -> tuple[r.Record, ...]:
    """:func:`flood_records` with the default mix, signed once per test session."""
    return tuple(flood_records(count, keys, swarm=swarm, now_ms=now_ms, seed=seed))
