"""Ingest rate on one core vs the raw PyNaCl verify rate, measured in one run.

Ingest = strict decode + schema + context checks + Ed25519 verify + batched
store (SQLite, WAL, FTS5, derived state), 1,000 records per transaction, into
a fresh database file. The ceiling is PyNaCl verifying the same records'
signatures, nothing else. Both run single-threaded on the same records.

    .venv/bin/python -m bench.ingest [--records 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nacl.signing

from bench.common import sample_offer
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


def raw_verify_rate(datas: list[bytes]) -> float:
    prepared = []
    for data in datas:
        r = rec.decode_record(data)
        prepared.append((nacl.signing.VerifyKey(r.author), rec.signing_bytes(r), r.sig))
    start = time.perf_counter()
    for key, msg, sig in prepared:
        key.verify(msg, sig)
    return len(prepared) / (time.perf_counter() - start)


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
    with tempfile.TemporaryDirectory() as tmp:
        verify = raw_verify_rate(datas)
        ingest = ingest_rate(datas, Path(tmp) / "bench.db")
        verify2 = raw_verify_rate(datas)  # again, to see the machine's drift
    ceiling = (verify + verify2) / 2
    print(f"{args.records} offer records, {size:.0f} B each, one core")
    print(f"raw PyNaCl verify      {ceiling:>9,.0f} /s  (runs: {verify:,.0f}, {verify2:,.0f})")
    print(f"meshnode ingest        {ingest:>9,.0f} /s  (decode+check+verify+store, 1,000/txn)")
    print(f"ratio ingest/verify    {ingest / ceiling:>9.2f}")


if __name__ == "__main__":
    main()
