"""Writer process for the store's crash test (tests/test_store.py): not a test itself.

    python tests/store_crash_writer.py DB RUN BATCH_SIZE

Ingests deterministic batches (see :func:`make_batch`) into the store at DB,
forever. Before handing a batch to the store it prints ``B <batch number>``;
after the store acknowledged it, ``A <batch number> <id of its last record>``
(each line flushed at once). The test kills it with SIGKILL at a random moment
and regenerates the very same records (Ed25519 signatures are deterministic)
to check what the store kept.
"""

from __future__ import annotations

import hashlib
import sys
from functools import lru_cache

import nacl.signing

from meshnode.records import ItemBody, OfferBody, Record, UpdateBody, WantBody, WithdrawBody, new_record

SWARM = hashlib.blake2b(b"crash-test swarm", digest_size=32).digest()
NOW = 1_700_000_000_000


@lru_cache(maxsize=4)
def _key(run: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.blake2b(f"crash-test key {run}".encode(), digest_size=32).digest())


@lru_cache(maxsize=8)
def originals(run: int, batch: int, size: int) -> tuple[Record, ...]:
    """The offers and wants of one batch."""
    out = []
    for i in range(size):
        n = batch * size + i
        cls = WantBody if i % 7 == 3 else OfferBody
        body = cls(title=f"thing {run}-{batch}-{i}", desc=f"run {run} batch {batch}", tags=("crash",))
        out.append(new_record(body, swarm=SWARM, seq=n + 1, ts=NOW + n, signing_key=_key(run)))
    return tuple(out)


def make_batch(run: int, batch: int, size: int) -> list[Record]:
    """Batch ``batch`` of writer ``run``: new items, plus updates and withdraws.

    Updates (every 10th) and withdraws (every 20th, offset 5) name the previous
    batch's items; one update names the *next* batch's first item, so it is
    stored before its target.
    """
    key = _key(run)
    records = list(originals(run, batch, size))
    base = 10_000_000 + batch * size * 2
    if batch > 0:
        prev = originals(run, batch - 1, size)
        for j in range(0, size, 10):
            item = ItemBody(title=f"updated {run}-{batch - 1}-{j}", tags=("crash", "updated"))
            body = UpdateBody(target=prev[j].id, item=item)
            records.append(new_record(body, swarm=SWARM, seq=base + j, ts=prev[j].ts + 1, signing_key=key))
        for j in range(5, size, 20):
            body_w = WithdrawBody(target=prev[j].id)
            records.append(
                new_record(body_w, swarm=SWARM, seq=base + size + j, ts=prev[j].ts + 2, signing_key=key)
            )
    nxt = originals(run, batch + 1, size)[0]
    early = UpdateBody(target=nxt.id, item=ItemBody(title=f"early {run}-{batch + 1}-0", tags=("early",)))
    records.append(new_record(early, swarm=SWARM, seq=base - 1, ts=nxt.ts + 1, signing_key=key))
    return records


def main() -> None:
    from meshnode.store import Store

    path, run, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with Store.open(path) as store:
        batch = 0
        while True:
            records = make_batch(run, batch, size)
            print(f"B {batch}", flush=True)
            store.add_records(records, now_ms=NOW)
            print(f"A {batch} {records[-1].id.hex()}", flush=True)
            batch += 1


if __name__ == "__main__":
    main()
