"""Run every benchmark, one after the other: ``.venv/bin/python -m bench``.

Each prints its figures next to a ceiling or a peer measured in the same run
(see bench/README.md for what each measures and the targets). Takes ~8 min.
``--quick`` runs each on a smaller load (for a smoke test, not for figures).
"""

from __future__ import annotations

import subprocess
import sys
import time

FULL = [
    ["bench.ingest"],
    ["bench.gossip"],
    ["bench.gossip_latency"],
    ["bench.sync"],
    ["bench.lag"],
    ["bench.footprint"],
    ["bench.rings"],
    ["bench.ledger"],
]
QUICK = [
    ["bench.ingest", "--records", "3000"],
    ["bench.gossip", "--nodes", "4", "--messages", "5", "--rates", "10,20"],
    ["bench.gossip_latency", "--messages", "5"],
    ["bench.sync", "--records", "2000"],
    ["bench.lag", "--records", "3000", "--idle", "1"],
    ["bench.footprint", "--records", "5000", "--runs", "3"],
    ["bench.rings", "--records", "5000", "--runs", "1"],
    ["bench.ledger", "--records", "2000", "--runs", "1"],
]


def main() -> int:
    runs = QUICK if "--quick" in sys.argv[1:] else FULL
    failed = []
    for module, *args in runs:
        print(f"\n=== {module} {' '.join(args)}".rstrip(), flush=True)
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", module, *args])
        print(f"--- {module}: {time.monotonic() - start:.0f} s", flush=True)
        if result.returncode:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
