"""Event-loop lag during a 30,000-record sync vs an idle loop, measured in one run.

Two real nodes in this process on 127.0.0.1 (as ``bench.sync``): the source
is pre-loaded with N signed records, the newcomer syncs them in one session.
A probe task sleeps 1 ms at a time and records how late it wakes (the lag:
how long the trio loop was busy with something else). The ceiling is the
same probe over the same nodes idle (connected, nothing to do) for a few
seconds just before. Both nodes share the loop, so the lag includes the
sender's work too (in a deployment each node has its own process).

    .venv/bin/python -m bench.lag [--records 30000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import trio

from bench.sync import bench_node, make_records, preload
from meshnode.protocols.autonat import quiet_dial_back_noise
from meshnode.store import Store
from meshnode.swarm import Swarm

TICK = 0.001


class LagProbe:
    """Wakes every ``TICK`` s while running; ``lags`` holds how late each wake-up was (s)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.running = False

    async def run(self) -> None:
        while True:
            before = trio.current_time()
            await trio.sleep(TICK)
            if self.running:
                self.lags.append(max(trio.current_time() - before - TICK, 0.0))

    def measure(self) -> _Window:
        return _Window(self)


class _Window:
    def __init__(self, probe: LagProbe) -> None:
        self.probe = probe

    def __enter__(self) -> list[float]:
        self.probe.lags = []
        self.probe.running = True
        return self.probe.lags

    def __exit__(self, *exc: object) -> None:
        self.probe.running = False


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


def summary(lags: list[float]) -> str:
    ms = [v * 1000 for v in lags]
    return (
        f"p50 {percentile(ms, 0.5):6.2f} ms  p99 {percentile(ms, 0.99):6.2f} ms  max {max(ms):7.2f} ms"
        f"  ({len(ms):,} wake-ups)"
    )


async def run(n: int, idle_seconds: float) -> None:
    swarm = Swarm.create("Bench Street")
    print(f"signing {n:,} records ...", flush=True)
    datas = make_records(n, swarm.id, authors=300)  # 100 each: within the store's per-author quota
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        preload(tmpdir / "a.db", datas)
        store_a, store_b = Store.open(tmpdir / "a.db"), Store.open(tmpdir / "b.db")
        a, b = bench_node(store_a), bench_node(store_b)
        probe = LagProbe()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(a.run)
                await nursery.start(b.run)
                nursery.start_soon(probe.run)
                with probe.measure() as build:
                    await a.join_swarm(swarm)  # builds the source's index (in a thread)
                await b.join_swarm(swarm)
                await b.connect(a.addrs()[0])
                with probe.measure() as idle:
                    await trio.sleep(idle_seconds)
                start = time.perf_counter()
                with probe.measure() as busy:
                    report = await b.sync_with(a.peer_id, swarm)
                took = time.perf_counter() - start
                assert report.outcome == "ok" and report.records_received == n, report
                nursery.cancel_scope.cancel()
        finally:
            store_a.close()
            store_b.close()
    print(
        f"{n:,} offer records, 2 nodes in one process, probe every {TICK * 1000:.0f} ms"
        f" ({report.records_stored:,} stored, {report.records_refused:,} refused by the store's rules)"
    )
    print(f"idle loop (ceiling)        {summary(idle)}")
    print(f"during the sync ({took:5.2f} s) {summary(busy)}")
    print(f"during the index build     {summary(build)}")
    print(f"p99 lag during sync / idle {percentile(busy, 0.99) / max(percentile(idle, 0.99), 1e-6):8.1f} x")
    print(f"p99 lag during sync        {percentile(busy, 0.99) * 1000:8.2f} ms   (target <= 20 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle-loop probe")
    args = parser.parse_args()
    quiet_dial_back_noise()
    trio.run(run, args.records, args.idle)


if __name__ == "__main__":
    main()
