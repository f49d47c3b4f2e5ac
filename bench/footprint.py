"""Daemon footprint and CLI speed with 100,000 live offers.

Builds a home whose store holds N signed offers from 500 authors (titles from
a vocabulary of everyday things, so a word matches ~1-2 % of them), starts
the real daemon on it, and measures:

* RSS of the idle daemon (after start-up settles), next to a bare
  ``python -c "import libp2p"`` (the floor any py-libp2p daemon pays);
* median wall time of ``meshnode offer list --query drill --json`` against
  it, next to ``python -c pass`` (the floor of any Python CLI; target: at
  most 5x), ``python -c "import typer"`` (the floor of a typer CLI) and
  typer with httpx's client over a Unix socket (the floor of this CLI's stack);
* full-text search over the N offers in-process (the store's query), p50/p95.

    .venv/bin/python -m bench.footprint [--records 100000]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing
import psutil

from meshnode import records as rec
from meshnode.home import Home, ensure_home, save_swarms
from meshnode.keyfile import create_identity
from meshnode.store import Store
from meshnode.swarm import Swarm

THINGS = (
    "drill ladder bike pump tent saw hammer sander mower strimmer kayak paddle projector speaker "
    "sewing-machine bread-maker wok stand-mixer juicer pressure-washer wheelbarrow spade rake "
    "hedge-trimmer chainsaw jigsaw router level clamp vice toolbox camping-stove lantern sleeping-bag "
    "rucksack skis snowboard helmet guitar keyboard amplifier microphone tripod camera lens telescope "
    "binoculars board-game puzzle book cot highchair pram car-seat crib bouncer scooter skateboard"
).split()
CLI_RATIO_TARGET = 5.0  # offer list --query over 100,000 offers, against 'python -c pass'
ADJ = "cordless old new heavy light small large electric manual folding spare red blue green".split()


def build_store(path: Path, swarm: Swarm, n: int, authors: int = 500) -> float:
    keys = [nacl.signing.SigningKey.generate() for _ in range(authors)]
    rng = random.Random(7)
    now = int(time.time() * 1000)
    start = time.perf_counter()
    with Store.open(path) as store:
        batch = []
        for i in range(n):
            thing = rng.choice(THINGS).replace("-", " ")
            body = rec.OfferBody(
                title=f"{rng.choice(ADJ).capitalize()} {thing}",
                kind=rng.choice(rec.ITEM_KINDS),
                desc=f"A {rng.choice(ADJ)} {thing} in good order; ask me about it. #{i}",
                tags=tuple(
                    sorted({thing.split()[0], rng.choice(["diy", "garden", "kids", "music", "outdoor"])})
                ),
                expires=now + 90 * 86_400_000,
            )
            batch.append(
                rec.new_record(
                    body,
                    swarm=swarm.id,
                    seq=i // authors + 1,
                    ts=now - (n - i),
                    signing_key=keys[i % authors],
                )
            )
            if len(batch) == 2000:
                store.add_records(batch, now_ms=now)
                batch.clear()
        if batch:
            store.add_records(batch, now_ms=now)
    return time.perf_counter() - start


#: What every command pays before it does anything: typer, and httpx with its Unix-socket transport.
CLIENT_FLOOR = "import typer, httpx; httpx.Client(transport=httpx.HTTPTransport(uds='/nonexistent'))"


def median_wall(cmd: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp) / "home")
        ensure_home(home)
        create_identity(home.root)
        swarm = Swarm.create("bench")
        save_swarms(home, [swarm])
        took = build_store(home.database, swarm, args.records)
        size_mb = home.database.stat().st_size / 1e6
        print(f"built a store of {args.records:,} offers in {took:.1f} s ({size_mb:.0f} MB)")

        # Full-text search in-process.
        now = int(time.time() * 1000)
        with Store.open(home.database) as store:
            fts = []
            for word in ["drill", "ladder", "tent", "guitar", "kayak", "sewing", "camera", "lantern"] * 5:
                t = time.perf_counter()
                store.items("offer", query=word, now_ms=now, limit=100)
                fts.append(time.perf_counter() - t)

        env = dict(os.environ, MESHNODE_HOME=str(home.root))
        # As an installed CLI runs: its bytecode compiled once (pip does it at install), not at each call.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        meshnode = [sys.executable, "-m", "meshnode.cli.main"]
        daemon = subprocess.Popen(
            [*meshnode, "daemon", "--listen", "/ip4/127.0.0.1/tcp/0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert daemon.stdout is not None
            line = daemon.stdout.readline()
            if not line.startswith("ready"):
                raise SystemExit(f"daemon failed: {line}{daemon.stdout.read()}")
            time.sleep(5.0)  # settle: start-up work done, idle
            rss = psutil.Process(daemon.pid).memory_info().rss
            median_wall([*meshnode, "offer", "list", "--query", "drill", "--json"], 1, env)  # warm-up
            cli = median_wall([*meshnode, "offer", "list", "--query", "drill", "--json"], args.runs, env)
            floor = median_wall([sys.executable, "-c", "pass"], args.runs, env)
            typer_floor = median_wall([sys.executable, "-c", "import typer"], args.runs, env)
            client_floor = median_wall([sys.executable, "-c", CLIENT_FLOOR], args.runs, env)
            libp2p_probe = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import libp2p, sys; sys.stdout.write('x'); sys.stdout.flush(); sys.stdin.read()",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            assert libp2p_probe.stdout is not None
            libp2p_probe.stdout.read(1)
            libp2p_rss = psutil.Process(libp2p_probe.pid).memory_info().rss
            libp2p_probe.communicate(b"")
            rss_after = psutil.Process(daemon.pid).memory_info().rss
        finally:
            subprocess.run([*meshnode, "stop"], env=env, capture_output=True)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()

    print(
        f"idle daemon RSS          {rss / 2**20:7.1f} MB"
        f"  (after {args.runs * 2} CLI calls: {rss_after / 2**20:.1f} MB;"
        f" bare 'import libp2p': {libp2p_rss / 2**20:.1f} MB)   target <= 150 MB"
    )
    print(
        f"offer list --query drill {cli * 1000:7.0f} ms  median of {args.runs};"
        f" 'python -c pass' {floor * 1000:.0f} ms (ratio {cli / floor:.1f})   target <= 500 ms"
    )
    print(
        f"offer list / 'python -c pass' {cli / floor:5.1f}x   target <= {CLI_RATIO_TARGET:.0f}x"
        f" ({'met' if cli / floor <= CLI_RATIO_TARGET else 'NOT met'});"
        f" floor of a typer CLI, 'python -c \"import typer\"': {typer_floor * 1000:.0f} ms"
        f" ({typer_floor / floor:.1f}x); typer + the httpx client: {client_floor * 1000:.0f} ms"
        f" ({client_floor / floor:.1f}x)"
    )
    print(
        f"FTS over {args.records:,} offers   p50 {statistics.median(fts) * 1000:.1f} ms, "
        f"p95 {sorted(fts)[int(0.95 * (len(fts) - 1))] * 1000:.1f} ms   target p50 <= 20 ms"
    )


if __name__ == "__main__":
    main()
