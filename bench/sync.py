"""Sync a newcomer from one peer vs ingesting the same records locally, in one run.

Two real nodes in this process on 127.0.0.1 (Noise, Yamux, TCP). The source
node's store is pre-loaded directly with N signed records (not via gossip);
the newcomer starts empty and runs one ``/meshnode/sync/1`` session with it.
The ceiling is validating and storing the same records locally into a fresh
store: ``Ingest.ingest_many`` (the very path sync uses: decode, checks,
signatures in worker threads, batched store), and a plain single-threaded
decode + verify + ``add_records`` loop; the ratio is against the faster.

Then each side gets N/200 further records the other lacks, spread at random
over the whole time range (a 1 % difference, the hard case for range-based
reconciliation), and they sync again: the bytes of that re-sync against the
full sync's.

    .venv/bin/python -m bench.sync [--records 100000]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import nacl.signing
import trio

from bench.common import BENCH_QUOTAS, sample_offer
from meshnode import records as rec
from meshnode.identity import Identity
from meshnode.ingest import Ingest
from meshnode.node import Node, NodeConfig
from meshnode.protocols.autonat import quiet_dial_back_noise
from meshnode.store import Store
from meshnode.swarm import Swarm


def make_records(n: int, swarm: bytes, *, authors: int = 100, seed_ts: int | None = None) -> list[bytes]:
    """N offer records by ``authors`` keys, timestamps spread over the last N ms."""
    keys = [nacl.signing.SigningKey.generate() for _ in range(authors)]
    now = seed_ts if seed_ts is not None else int(time.time() * 1000)
    out = []
    for i in range(n):
        body = sample_offer(f"number {i}")
        record = rec.new_record(
            body, swarm=swarm, seq=i // authors + 1, ts=now - n + i, signing_key=keys[i % authors]
        )
        out.append(record.encoded)
    return out


def preload(path: Path, datas: list[bytes]) -> None:
    """Put records straight into a store (setup only: no signature checks)."""
    store = Store.open(path)
    now = int(time.time() * 1000)
    try:
        for i in range(0, len(datas), 2000):
            store.add_records([rec.decode_record(d) for d in datas[i : i + 2000]], now_ms=now)
    finally:
        store.close()


async def local_ingest_many(datas: list[bytes], path: Path, swarm: bytes, threads: int = 2) -> float:
    """Seconds ``Ingest.ingest_many`` takes to store ``datas`` into a fresh store at ``path``."""
    store = Store.open(path)
    ingest = Ingest(store, swarm_ids=lambda: {swarm}, verify_threads=threads)
    try:
        start = time.perf_counter()
        report = await ingest.ingest_many(datas)
        elapsed = time.perf_counter() - start
        assert report.stored == len(datas), report
    finally:
        ingest.close()
        store.close()
    return elapsed


def local_sequential(datas: list[bytes], path: Path, swarm: bytes, batch: int = 1000) -> float:
    store = Store.open(path)
    now = int(time.time() * 1000)
    try:
        start = time.perf_counter()
        for i in range(0, len(datas), batch):
            records = [rec.open_record(d, now_ms=now, swarms={swarm}) for d in datas[i : i + batch]]
            store.add_records(records, now_ms=now)
        elapsed = time.perf_counter() - start
        assert store.count() == len(datas)
    finally:
        store.close()
    return elapsed


def bench_node(store: Store) -> Node:
    """A node on 127.0.0.1 that syncs only when told (the benchmarks drive every session)."""
    config = NodeConfig(
        listen=["/ip4/127.0.0.1/tcp/0"],
        min_peers=0,
        sync_interval=0,
        sync_on_connect=False,
        quotas=BENCH_QUOTAS,
    )
    return Node(Identity.generate(), store, config)


async def run(n: int) -> None:
    swarm = Swarm.create("Bench Street")
    print(f"signing {n:,} records ...", flush=True)
    diff = max(n // 100, 2)  # records that differ in all: half of them on each side
    everything = make_records(n + diff, swarm.id)
    extra = set(random.Random(1).sample(range(n + diff), diff))
    datas = [d for i, d in enumerate(everything) if i not in extra]
    spread = [everything[i] for i in sorted(extra)]
    random.Random(2).shuffle(spread)
    extra_a, extra_b = spread[: diff // 2], spread[diff // 2 :]
    total = sum(map(len, datas))
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        t_many = await local_ingest_many(datas, tmpdir / "ceiling1.db", swarm.id)
        t_seq = await trio.to_thread.run_sync(local_sequential, datas, tmpdir / "ceiling2.db", swarm.id)
        ceiling = min(t_many, t_seq)

        preload(tmpdir / "a.db", datas)
        store_a, store_b = Store.open(tmpdir / "a.db"), Store.open(tmpdir / "b.db")
        a, b = bench_node(store_a), bench_node(store_b)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                start = time.perf_counter()
                await a.join_swarm(swarm)
                t_index = time.perf_counter() - start
                await b.join_swarm(swarm)
                await b.connect(a.addrs()[0])

                start = time.perf_counter()
                full = await b.sync_with(a.peer_id, swarm)
                t_sync = time.perf_counter() - start
                assert full.outcome == "ok", full
                assert store_b.count() == n, store_b.count()
                full_bytes = full.bytes_in + full.bytes_out

                # a 1 % difference: diff/2 new records on each side
                await a.ingest.ingest_many(extra_a)
                await b.ingest.ingest_many(extra_b)
                start = time.perf_counter()
                again = await b.sync_with(a.peer_id, swarm)
                t_resync = time.perf_counter() - start
                assert again.outcome == "ok", again
                # B's session ends when B has stored what it got; A (the responder)
                # may still be storing what B pushed: give it a moment.
                with trio.move_on_after(30):
                    while store_a.count() < n + diff:
                        await trio.sleep(0.01)
                t_resync_both = time.perf_counter() - start
                assert store_a.count() == store_b.count() == n + diff, (store_a.count(), store_b.count())
                resync_bytes = again.bytes_in + again.bytes_out
                nursery.cancel_scope.cancel()
        finally:
            store_a.close()
            store_b.close()

    print(f"{n:,} offer records, {total / n:.0f} B each ({total / 1e6:.1f} MB), 2 nodes in one process")
    print(f"source index build (one store scan)   {t_index * 1000:8.0f} ms")
    print(f"local ingest_many (ceiling)           {t_many:8.2f} s  ({n / t_many:,.0f} records/s)")
    print(f"local decode+verify+add_records       {t_seq:8.2f} s  ({n / t_seq:,.0f} records/s)")
    print(
        f"newcomer sync from one peer           {t_sync:8.2f} s  ({n / t_sync:,.0f} records/s,"
        f" {full.rounds} reconcile rounds)"
    )
    print(f"  of which reconciliation             {full.reconcile_seconds:8.2f} s")
    print(f"  sync time / local ingest            {t_sync / ceiling:8.2f} x   (target <= 1.5)")
    print(
        f"  wire bytes                          {full_bytes / 1e6:8.2f} MB (reconcile"
        f" {(full.reconcile_bytes_in + full.reconcile_bytes_out) / 1e6:.2f} MB)"
    )
    print(f"  wire bytes / records' size          {full_bytes / total:8.3f} x   (target <= 1.15)")
    print(
        f"re-sync, {diff} records differ (1 %)     {resync_bytes / 1e3:8.1f} KB in {t_resync * 1000:.0f} ms"
        f" ({t_resync_both * 1000:.0f} ms until both stored),"
        f" {again.rounds} rounds (reconcile"
        f" {(again.reconcile_bytes_in + again.reconcile_bytes_out) / 1e3:.1f} KB)"
    )
    print(f"  re-sync bytes / full sync bytes     {resync_bytes / full_bytes * 100:8.2f} %   (target <= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    quiet_dial_back_noise()  # as the daemon does: AutoNAT's dial-backs are expected
    trio.run(run, args.records)


if __name__ == "__main__":
    main()
