"""What the benchmarks share: the sample record they all measure with."""

from __future__ import annotations

from meshnode import records as rec


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
