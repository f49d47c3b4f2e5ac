"""The mutual-credit ledger: what a balance costs a node with 10,000 and 100,000 transfers.

Builds N signed ``transfer`` records among N / 100 members: each payer's
next link pays a random other member 0.25-5 units and acknowledges the
payments it received since its last link (at most 64), as
:func:`meshnode.ledger.next_transfer` would; limits are wide, so every
transfer counts. Stores them in a SQLite store (as a node holds them).
Measures, best of ``--runs``:

* ``derive_ledger`` over the records in memory (the fold);
* ``derive_swarm_ledger`` (what ``meshnode balance`` runs in its worker
  thread): reading the transfer and currency records from the store,
  decoding them, deriving the limits from a trust view and the fold;

next to ceilings measured in the same run: verifying every record's
signature with raw PyNaCl (what ingest already paid for each transfer),
and reading the records from the store (``records_of_type``, decode only).

    .venv/bin/python -m bench.ledger [--records 10000,100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace

import nacl.signing

from bench.common import best_of
from meshnode import records as rec
from meshnode import trust as tr
from meshnode.api.ledgerservice import derive_swarm_ledger
from meshnode.ledger import derive_ledger
from meshnode.store import Store
from meshnode.views import TrustView

SWARM = b"l" * 32
NOW = 1_764_000_000_000


def build(n: int) -> tuple[list[rec.Record], list[bytes]]:
    rng = random.Random(15)
    keys = [nacl.signing.SigningKey(rng.randbytes(32)) for _ in range(max(3, n // 100))]
    members = [bytes(k.verify_key) for k in keys]
    heads: dict[bytes, tuple[int, bytes | None]] = {m: (0, None) for m in members}
    waiting: dict[bytes, list[bytes]] = {m: [] for m in members}
    out = []
    for i in range(n):
        p = rng.randrange(len(keys))
        payer = members[p]
        payee = members[(p + 1 + rng.randrange(len(members) - 1)) % len(members)]
        seq, prev = heads[payer]
        acks = tuple(sorted(waiting[payer][:64]))
        del waiting[payer][:64]
        body = rec.TransferBody(to=payee, amount=rng.randint(25, 500), seq=seq + 1, prev=prev, acks=acks)
        r = rec.new_record(body, swarm=SWARM, seq=seq + 1, ts=NOW + i, signing_key=keys[p])
        heads[payer] = (seq + 1, r.id)
        waiting[payee].append(r.id)
        out.append(r)
    return out, members


def verify_all(records: list[rec.Record]) -> None:
    for r in records:
        nacl.signing.VerifyKey(r.author).verify(rec.signing_bytes(r), r.sig)


def measure(n: int, runs: int) -> None:
    records, members = build(n)
    me = members[0]
    # Everyone vouches for the next member: a ring of trust that reaches all.
    edges = [
        tr.TrustEdge(members[i], members[(i + 1) % len(members)], 1.0, "attest") for i in range(len(members))
    ]
    graph = tr.TrustGraph(edges)
    view = TrustView(source=me, graph=graph, scores=graph.scores(me))
    wide = 10**9
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "bench.db")
        for i in range(0, n, 5000):
            store.add_records(records[i : i + 5000], now_ms=NOW + n)
        swarm = SimpleNamespace(id=SWARM, name="bench")
        verify, _ = best_of(runs, lambda: verify_all(records))
        read, _ = best_of(runs, lambda: store.records_of_type("transfer", swarm=SWARM))
        fold, ledger = best_of(runs, lambda: derive_ledger(records, lambda k: wide))
        whole, state = best_of(runs, lambda: derive_swarm_ledger(store, swarm, view, me))
        store.close()
    assert ledger is not None and len(ledger.counted) == n, "every transfer counts with wide limits"
    counted = len(state.ledger.counted)
    each = f"{fold / n * 1e6:.1f} us each"
    print(f"{n:,} transfers among {len(members):,} members, best of {runs}:")
    print(f"  derive_ledger (the fold, in memory)          {fold * 1000:9.1f} ms  ({each})")
    print(
        f"  derive_swarm_ledger (read, limits, fold)     {whole * 1000:9.1f} ms"
        f"  ({counted:,} count: random payments pass the trust-derived limits)"
    )
    one = f"{verify / n * 1e6:.1f} us each"
    print(f"  ceiling: PyNaCl verify of every record       {verify * 1000:9.1f} ms  ({one})")
    print(f"  ceiling: records_of_type (read and decode)   {read * 1000:9.1f} ms")
    print(f"  fold / verify: {fold / verify:.2f}")
    print(f"  balance request / (read + verify): {whole / (read + verify):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", default="10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for n in args.records.split(","):
        measure(int(n), args.runs)


if __name__ == "__main__":
    main()
