"""The core is pure by construction: importing it pulls in no I/O library.

docs/architecture.md's rule (outer layers depend on inner ones, never the
reverse; the core does no I/O) is checked here in a fresh interpreter, so an
import added anywhere in the core's dependency graph that brings in trio,
libp2p, SQLite, sockets or threads fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "meshnode.errors",
    "meshnode.ids",
    "meshnode.wire",
    "meshnode.records",
    "meshnode.identity",
    "meshnode.swarm",
    "meshnode.barter",
    "meshnode.trust",
    "meshnode.reconcile",
    "meshnode.syncindex",
    "meshnode.ratelimit",
    "meshnode.verdicts",
    "meshnode.bans",
    "meshnode.addrs",
    "meshnode.addrbook",
    "meshnode.reach",
    "meshnode.lifetime",
    "meshnode.geohash",
    "meshnode.people",
    "meshnode.matching",
    "meshnode.rings",
    "meshnode.ringtrade",
    "meshnode.inbox",
    "meshnode.sealing",
    "meshnode.rules",
    "meshnode.ledger",
    "meshnode.credit",
    "meshnode.money",
    "meshnode.pools",
    "meshnode.protocols.sync.limits",
    "meshnode.protocols.sync.messages",
    "meshnode.protocols.sync.session",
]
FORBIDDEN = [
    "trio",
    "libp2p",
    "multiaddr",
    "sqlite3",
    "_sqlite3",
    "socket",
    "threading",
    "zeroconf",
    "miniupnpc",
    "httpx",
    "hypercorn",
    "starlette",
    "asyncio",
]


def io_imports(modules: list[str]) -> list[str]:
    """The forbidden modules that importing ``modules`` loads, in a fresh interpreter."""
    probe = f"""
import json, sys
before = set(sys.modules)
for name in {modules!r}:
    __import__(name)
loaded = set(sys.modules) - before
print(json.dumps(sorted(m for m in loaded if m.split(".")[0] in {FORBIDDEN!r})))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_core_modules_import_no_io_library() -> None:
    assert io_imports(CORE) == []


def test_the_probe_sees_io_imports() -> None:
    """The check itself works: the node (an outer layer) does load libp2p and trio."""
    found = {m.split(".")[0] for m in io_imports(["meshnode.node"])}
    assert {"libp2p", "trio", "sqlite3"} <= found


def test_one_error_tree_every_code_distinct_and_drawn() -> None:
    """Every MeshError subclass is in ALL_ERRORS (so its code round-trips through the API) and drawn."""
    import meshnode.errors as errors

    classes = {
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, errors.MeshError)
    }
    assert classes == set(errors.ALL_ERRORS)
    assert len({cls.code for cls in classes}) == len(classes)
    assert all(errors.ERRORS_BY_CODE[cls.code] is cls for cls in classes)
    drawing = errors.__doc__ or ""
    for cls in classes:
        assert f'{cls.__name__} ("{cls.code}"' in drawing, cls.__name__


def test_the_cli_starts_without_the_node_or_cryptography() -> None:
    """Every command loads the CLI, the home and the client: none of them may pull in
    libp2p, trio, the record layer or PyNaCl (each costs 20 ms to a second at every command)."""
    probe = """
import json, sys
import meshnode.cli.main, meshnode.cli.client, meshnode.home, meshnode.lock
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"libp2p", "trio", "nacl", "rich"}
    | {m for m in sys.modules if m in ("meshnode.records", "meshnode.node", "meshnode.store")})))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_command_runs_without_pydantic_rich_or_the_record_layer(tmp_path) -> None:
    """A whole command (here 'offer list --query … --json', refused as no daemon runs) loads neither
    pydantic (typer's coercion of plain options, ~100 ms: see meshnode.cli.quicktyper), nor rich
    (tables only), nor the record layer; httpx is the CLI's client and comes."""
    probe = f"""
import atexit, json, sys
def loaded():
    heavy = {{"pydantic", "rich", "nacl", "cbor2"}}
    found = {{m.split(".")[0] for m in sys.modules}} & heavy
    ours = {{m for m in sys.modules if m in ("meshnode.records", "meshnode.store")}}
    print(json.dumps(sorted(found | ours)))
atexit.register(loaded)
sys.argv = ["meshnode", "offer", "list", "--query", "drill", "--json", "--home", {str(tmp_path / "home")!r}]
from meshnode.cli.main import main
main()
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert '"daemon_down"' in result.stderr, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
