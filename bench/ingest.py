"""Ingest rate on one core and on every core vs the raw PyNaCl verify rate, measured in one run.

Ingest = strict decode + schema + context checks + Ed25519 verify + batched
store (SQLite, WAL, FTS5, derived state), into a fresh database file:

* one core: a plain loop, 1,000 records per transaction;
* ``Ingest.ingest_many`` as the node runs it (chunks opened in one worker
  thread, each batch stored as soon as it is opened, in a thread of its
  own), and with one opener thread per core (slower here: decoding and most
  of storing hold the GIL, so openers only contend for it).

The ceilings are PyNaCl verifying the same records' signatures, nothing
else: on one thread, and on as many threads as the machine has cores (PyNaCl
releases the GIL), each thread a share of the records.

    .venv/bin/python -m bench.ingest [--records 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import nacl.signing
import trio

from bench.common import sample_offer
from bench.sync import local_ingest_many
from meshnode import records as rec
from meshnode.store import Store

SWARM = os.urandom(32)


def make_records(n: int, authors: int = 100) -> list[bytes]:
    keys = [nacl.signing.SigningKey.generate() for _ in range(authors)]
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        key = keys[i % authors]
        body = sample_offer(f"number {i}")
        out.append(rec.new_record(body, swarm=SWARM, seq=i // authors + 1, ts=now, signing_key=key).encoded)
    return out


def raw_verify_rate(datas: list[bytes], threads: int = 1) -> float:
    """Signatures verified a second by ``threads`` threads, each a share of the records."""
    prepared = []
    for data in datas:
        r = rec.decode_record(data)
        prepared.append((nacl.signing.VerifyKey(r.author), rec.signing_bytes(r), r.sig))

    def verify(share: list[tuple[nacl.signing.VerifyKey, bytes, bytes]]) -> None:
        for key, msg, sig in share:
            key.verify(msg, sig)

    workers = [threading.Thread(target=verify, args=(prepared[i::threads],)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(prepared) / (time.perf_counter() - start)


def ingest_many_rate(datas: list[bytes], path: Path, threads: int) -> float:
    """Records a second through ``Ingest.ingest_many`` (the sync path) into a fresh store."""
    return len(datas) / trio.run(local_ingest_many, datas, path, SWARM, threads)


def ingest_rate(datas: list[bytes], path: Path, batch: int = 1000) -> float:
    store = Store.open(path)
    now = int(time.time() * 1000)
    swarms = {SWARM}
    try:
        start = time.perf_counter()
        for i in range(0, len(datas), batch):
            records = [rec.open_record(d, now_ms=now, swarms=swarms) for d in datas[i : i + batch]]
            result = store.add_records(records, now_ms=now)
            assert len(result.added) == len(records), result.refused[:3]
        elapsed = time.perf_counter() - start
        assert store.count() == len(datas)
    finally:
        store.close()
    return len(datas) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    datas = make_records(args.records)
    size = sum(map(len, datas)) / len(datas)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        verify = raw_verify_rate(datas)
        verify_n = raw_verify_rate(datas, cores)
        ingest = ingest_rate(datas, Path(tmp) / "bench.db")
        many = ingest_many_rate(datas, Path(tmp) / "many.db", 1)  # the node's setting
        many_n = ingest_many_rate(datas, Path(tmp) / "many_n.db", cores)
        verify2 = raw_verify_rate(datas)  # again, to see the machine's drift
        verify_n2 = raw_verify_rate(datas, cores)
    ceiling = (verify + verify2) / 2
    ceiling_n = (verify_n + verify_n2) / 2
    print(f"{args.records} offer records, {size:.0f} B each, {cores} cores")
    print(f"raw PyNaCl verify, 1 thread    {ceiling:>9,.0f} /s  (runs: {verify:,.0f}, {verify2:,.0f})")
    print(
        f"raw PyNaCl verify, {cores} threads   {ceiling_n:>9,.0f} /s"
        f"  (runs: {verify_n:,.0f}, {verify_n2:,.0f})"
    )
    print(f"meshnode ingest, one core      {ingest:>9,.0f} /s  (decode+check+verify+store, 1,000/txn)")
    print(
        f"meshnode ingest_many, 1 opener  {many:>9,.0f} /s"
        "  (the sync path as the node runs it: opened in a thread, stored in another meanwhile)"
    )
    print(f"meshnode ingest_many, {cores} openers {many_n:>9,.0f} /s  (one opener thread per core)")
    print(f"ratio one-core ingest / 1-thread verify   {ingest / ceiling:>6.2f}")
    print(f"ratio ingest_many / 1-thread verify       {many / ceiling:>6.2f}   (target > 1)")
    print(f"ratio ingest_many / {cores}-thread verify       {many / ceiling_n:>6.2f}")
    print(f"ratio {cores} openers / 1 opener              {many_n / many:>6.2f}")


if __name__ == "__main__":
    main()
