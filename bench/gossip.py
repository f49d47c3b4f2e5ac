"""Gossip across 10 separate processes: meshnode vs raw py-libp2p, same run.

Each node is its own process (bench/gossip_worker.py) on 127.0.0.1, in the
same sparse topology for both (a ring where node i also links to i+3:
degree 4, diameter 3), publishing the same kind of payload (a signed ~340-byte
offer record; the raw publisher signs it too). Figures:

* latency: publish -> the record is *stored* on every node (meshnode: in its
  SQLite store after decode, checks and signature; raw: delivered to every
  subscription), median and p95 over sequential publishes from rotating
  origins;
* throughput: the highest aggregate publish rate (all nodes publishing
  together for 5 s) at which every node ends up with every record.

    .venv/bin/python -m bench.gossip [--nodes 10] [--messages 40]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict


class Worker:
    def __init__(self, mode: str, index: int) -> None:
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.gossip_worker", "--mode", mode, "--seed", os.urandom(32).hex()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.got: dict[str, float] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ev") == "got":
                with self.lock:
                    self.got.setdefault(ev["id"], ev["t"])
            else:
                self.events.put(ev)

    def send(self, **cmd: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(self, ev: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if item.get("ev") == ev:
                return item

    def close(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _cpu(w: Worker) -> float:
    import psutil

    try:
        t = psutil.Process(w.proc.pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run_mode(mode: str, n: int, messages: int, rates: list[int]) -> dict[str, object]:
    workers = [Worker(mode, i) for i in range(n)]
    try:
        addrs = [w.wait("ready")["addr"] for w in workers]
        for i, w in enumerate(workers):
            for j in {(i + 1) % n, (i + 3) % n}:
                w.send(cmd="connect", addr=addrs[j])
                w.wait("connected")
        time.sleep(3.0)  # meshes form (heartbeat 1 s)

        latencies = []
        for k in range(messages):
            origin = workers[(k * 7) % n]
            origin.send(cmd="publish", count=1, rate=1000)
            rid, t0 = origin.wait("published")["items"][0]
            deadline = time.monotonic() + 10
            while not all(rid in w.got for w in workers):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            else:
                latencies.append(max(w.got[rid] for w in workers) - t0)
            time.sleep(0.05)

        best = 0
        cpu_before = sum(_cpu(w) for w in workers)
        for rate in rates:
            per_node = rate / n
            count = max(1, round(per_node * 5))
            for w in workers:
                w.send(cmd="publish", count=count, rate=per_node)
            ids = []
            for w in workers:
                ids += [rid for rid, _ in w.wait("published", timeout=120)["items"]]
            deadline = time.monotonic() + 10
            missing = len(ids) * n
            while time.monotonic() < deadline:
                missing = sum(1 for w in workers for rid in ids if rid not in w.got)
                if not missing:
                    break
                time.sleep(0.1)
            cpu = sum(_cpu(w) for w in workers)
            cpu_ms = (cpu - cpu_before) * 1000 / max(1, len(ids))
            cpu_before = cpu
            status = "lossless" if not missing else f"{missing} copies missing"
            print(f"  {mode:8} {rate:>4} msgs/s: {status:24} {cpu_ms:6.1f} CPU-ms per message, all nodes")
            if missing:
                break
            best = rate
        return {"latencies": latencies, "lost": messages - len(latencies), "throughput": best}
    finally:
        for w in workers:
            w.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--rates", default="20,30,40,45,50,55,60,65,70,80,100")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    results = defaultdict(dict)
    for mode in ("raw", "meshnode"):
        results[mode] = run_mode(mode, args.nodes, args.messages, rates)
    raw, ours = results["raw"], results["meshnode"]
    print(
        f"{args.nodes} processes, ring + chords (degree 4), 127.0.0.1, {args.messages} sequential publishes"
    )
    print(f"{'':26}{'median':>9}{'p95':>9}{'lossless':>14}")
    for name, r in (("raw py-libp2p gossip", raw), ("meshnode (stored on all)", ours)):
        lat = r["latencies"] or [float("nan")]
        print(
            f"{name:26}{statistics.median(lat) * 1000:>7.1f}ms{pct(lat, 0.95) * 1000:>7.1f}ms"
            f"{r['throughput']:>9} msg/s   (lost {r['lost']})"
        )
    med_ratio = statistics.median(ours["latencies"]) / statistics.median(raw["latencies"])
    print(
        f"ratios meshnode/raw: latency median {med_ratio:.2f}"
        f", p95 {pct(ours['latencies'], 0.95) / pct(raw['latencies'], 0.95):.2f}"
        f", throughput {ours['throughput'] / max(1, raw['throughput']):.2f}"
    )


if __name__ == "__main__":
    main()
