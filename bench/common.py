"""What the benchmarks share: the sample record they all measure with."""

from __future__ import annotations

import time
from collections.abc import Callable

from meshnode import records as rec
from meshnode.store import Quotas


def sample_offer(label: object) -> rec.OfferBody:
    """A typical lend offer (~340 bytes once signed); ``label`` makes each one distinct."""
    return rec.OfferBody(
        title=f"Cordless drill {label}",
        kind="lend",
        desc="18 V, two batteries, bits included. Ask for the case.",
        tags=("diy", "tools"),
        where="u4pruy",
        terms=rec.LendTerms(max_days=7),
    )


#: Quotas far above what a bench stores: their checks run after every batch, as in a
#: daemon, but evict nothing (the default 20,000 records per swarm would cut a 100k sync).
BENCH_QUOTAS = Quotas(swarm_records=10**9, swarm_bytes=1 << 40, author_records=10**9, author_bytes=1 << 40)


def best_of(runs: int, fn: Callable[[], object]) -> tuple[float, object]:
    """The shortest of ``runs`` timings of ``fn()`` (s), and what its last call returned."""
    times, out = [], None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out
