"""A node's home directory and its config file.

All state of one node lives under one directory: the key, ``config.toml``,
the database, the API socket, the lock and logs. Which directory: ``--home``,
else ``$MESHNODE_HOME``, else the platform's data directory (platformdirs).
Several nodes run side by side on one machine with different homes.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from meshnode.addrs import split_tcp, strip_peer
from meshnode.errors import ConfigError, MeshError

if TYPE_CHECKING:
    from meshnode.rules import Rules
    from meshnode.swarm import Swarm

# Every CLI command imports this module: what only some of them need (platformdirs, tomllib, the
# encoding and swarm layers) is imported where it is used.

ENV_HOME = "MESHNODE_HOME"
CONFIG_NAME = "config.toml"
DEFAULT_LISTEN = ["/ip4/0.0.0.0/tcp/4001"]
#: Where the daemon serves the web page (config.toml [node] web; "off" for none).
DEFAULT_WEB = "127.0.0.1:8790"

DEFAULT_CONFIG = """\
# meshnode configuration. Edit, then restart the daemon.

[node]
# Addresses to listen on (multiaddrs) for open swarms. Port 0 picks a free
# port once and keeps it (in network.cbor). Each private swarm listens on a
# port of its own, picked the same way.
listen = ["/ip4/0.0.0.0/tcp/4001"]
# Addresses to advertise besides the ones found automatically, e.g. your
# router's public address when you forwarded the port above by hand:
# announce = ["/ip4/203.0.113.7/tcp/4001"]
announce = []
# Peers to dial at start-up, each ending in /p2p/<peer id>.
bootstrap = []
# Find neighbours on the local network (mDNS).
mdns = true
# Ask the home router to forward each listen port to this machine (UPnP),
# with a one-hour lease that is renewed, and removed when the daemon stops.
upnp = true
# Relay for neighbours behind NAT when this node is reachable from outside,
# and use a neighbour as relay when it is not.
relay = true
# Most connections this node keeps.
max_connections = 64
# Seconds between catch-up syncs with a random neighbour (also on every connect).
sync_interval = 60
# The web page ('meshnode web' prints a login link): this machine only by
# default. "0.0.0.0:8790" lets phones on the home network reach it too;
# "off" serves no page.
web = "127.0.0.1:8790"

# Peers to dial for one swarm (e.g. a private one), by swarm name:
# [swarms."Elm Street"]
# bootstrap = ["/ip4/203.0.113.7/tcp/40123/p2p/12D3KooW..."]
"""


@dataclass(frozen=True)
class Home:
    """The paths of one node's home directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def database(self) -> Path:
        return self.root / "meshnode.db"

    @property
    def socket(self) -> Path:
        return self.root / "api.sock"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def swarms(self) -> Path:
        return self.root / "swarms.cbor"

    @property
    def network(self) -> Path:
        """Ports and address book (see :mod:`meshnode.netstate`)."""
        return self.root / "network.cbor"

    @property
    def bans(self) -> Path:
        """The ban book (see :mod:`meshnode.sharedbans`)."""
        return self.root / "bans.cbor"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def people(self) -> Path:
        """Petnames and the own profile (see :mod:`meshnode.petnames`)."""
        return self.root / "people.cbor"


def resolve_home(option: str | os.PathLike[str] | None = None) -> Home:
    """The home directory to use: ``option``, else ``$MESHNODE_HOME``, else the default."""
    if option:
        root = Path(option)
    elif os.environ.get(ENV_HOME):
        root = Path(os.environ[ENV_HOME])
    else:
        import platformdirs

        root = Path(platformdirs.user_data_dir("meshnode", appauthor=False))
    root = root.expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"the home {root} is a file, not a directory: name a directory (--home or MESHNODE_HOME)"
        )
    return Home(root)


def ensure_home(home: Home) -> None:
    """Create the home directory (mode 0700) and a default config if missing."""
    try:
        home.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create home directory {home.root}: {exc.strerror}") from None
    mode = stat.S_IMODE(home.root.stat().st_mode)
    if mode & 0o077:
        os.chmod(home.root, mode & 0o700)
    if not home.config.exists():
        fd = os.open(home.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(DEFAULT_CONFIG)


@dataclass(frozen=True)
class Config:
    """The node section of ``config.toml``."""

    listen: list[str] = field(default_factory=lambda: list(DEFAULT_LISTEN))
    bootstrap: list[str] = field(default_factory=list)
    announce: list[str] = field(default_factory=list)
    mdns: bool = True
    upnp: bool = True
    relay: bool = True
    swarm_bootstrap: dict[str, list[str]] = field(default_factory=dict)
    max_connections: int = 64
    sync_interval: float = 60.0
    store: StoreLimits = field(default_factory=lambda: StoreLimits())
    rules: Rules = field(default_factory=lambda: _no_rules())
    web: str = DEFAULT_WEB  # where the web page is served ("HOST:PORT"), or "off"


@dataclass(frozen=True)
class StoreLimits:
    """The ``[store]`` section: what the node keeps of others' records (see meshnode.store.quota)."""

    max_records_per_swarm: int = 20_000
    max_mb_per_swarm: int = 32
    max_records_per_author: int = 1_000
    min_free_disk_mb: int = 256


def load_config(home: Home) -> Config:
    """Read ``config.toml``; a missing file gives the defaults; a bad one a clear error."""
    import tomllib

    try:
        text = home.config.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {home.config}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{home.config} is not valid TOML: {exc}") from None
    node = data.get("node", {})
    if not isinstance(node, dict):
        raise ConfigError(f"{home.config}: [node] must be a table")
    unknown = set(node) - {
        "listen",
        "bootstrap",
        "announce",
        "mdns",
        "upnp",
        "relay",
        "max_connections",
        "sync_interval",
        "web",
    }
    if unknown:
        raise ConfigError(f"{home.config}: unknown keys in [node]: {sorted(unknown)}")
    unknown = set(data) - {"node", "swarms", "store", "rules"}
    if unknown:
        raise ConfigError(f"{home.config}: unknown tables: {sorted(unknown)}")
    listen = node.get("listen", DEFAULT_LISTEN)
    bootstrap = node.get("bootstrap", [])
    announce = node.get("announce", [])
    for name, value in (("listen", listen), ("bootstrap", bootstrap), ("announce", announce)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{home.config}: {name} must be a list of multiaddr strings")
    for addr in announce:
        split = split_tcp(strip_peer(addr))
        if split is None or split[2] == 0 or split[1].is_unspecified or split[3]:
            raise ConfigError(
                f"{home.config}: announce: expected addresses like /ip4/203.0.113.7/tcp/4001, found {addr!r}"
            )
    flags = {}
    for name in ("mdns", "upnp", "relay"):
        flags[name] = node.get(name, True)
        if not isinstance(flags[name], bool):
            raise ConfigError(f"{home.config}: {name} must be true or false")
    swarm_bootstrap = _swarm_tables(home, data.get("swarms", {}))
    max_connections = node.get("max_connections", 64)
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or not 1 <= max_connections <= 10_000
    ):
        raise ConfigError(f"{home.config}: max_connections must be an integer from 1 to 10000")
    sync_interval = node.get("sync_interval", 60)
    if (
        isinstance(sync_interval, bool)
        or not isinstance(sync_interval, int | float)
        or not 0 <= sync_interval <= 86400
    ):
        raise ConfigError(f"{home.config}: sync_interval must be a number of seconds from 0 to 86400")
    return Config(
        listen=listen,
        bootstrap=bootstrap,
        announce=announce,
        mdns=flags["mdns"],
        upnp=flags["upnp"],
        relay=flags["relay"],
        swarm_bootstrap=swarm_bootstrap,
        max_connections=max_connections,
        sync_interval=float(sync_interval),
        store=_store_table(home, data.get("store", {})),
        rules=_rules_table(home, data.get("rules")),
        web=_web_address(home, node.get("web", DEFAULT_WEB)),
    )


def _web_address(home: Home, value: object) -> str:
    """``web`` in ``[node]``: where the web page is served ("HOST:PORT", an IP or localhost), or "off"."""
    from meshnode.web.auth import parse_web_address

    parse_web_address(value, f"{home.config}: web")
    assert isinstance(value, str)
    return value


def _no_rules() -> Rules:
    from meshnode.rules import Rules

    return Rules()


def _rules_table(home: Home, table: object) -> Rules:
    """The ``[rules]`` table (answering while away, :mod:`meshnode.rules`); absent: every rule off."""
    from meshnode.rules import parse_rules

    return parse_rules(table, where=str(home.config))


def _store_table(home: Home, table: object) -> StoreLimits:
    """``[store]``: whole numbers within sane bounds, each optional."""
    if not isinstance(table, dict):
        raise ConfigError(f"{home.config}: [store] must be a table")
    bounds = {
        "max_records_per_swarm": (100, 10_000_000),
        "max_mb_per_swarm": (1, 100_000),
        "max_records_per_author": (10, 1_000_000),
        "min_free_disk_mb": (0, 1_000_000),
    }
    unknown = set(table) - set(bounds)
    if unknown:
        raise ConfigError(f"{home.config}: unknown keys in [store]: {sorted(unknown)}")
    values: dict[str, int] = {}
    for name, (low, high) in bounds.items():
        if name not in table:
            continue
        value = table[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{home.config}: [store] {name} must be a whole number from {low} to {high}")
        values[name] = value
    return StoreLimits(**values)


def _swarm_tables(home: Home, tables: object) -> dict[str, list[str]]:
    """``[swarms."<name>"]`` tables: per-swarm settings (``bootstrap`` for now)."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{home.config}: [swarms] must be a table of swarm names")
    out: dict[str, list[str]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict) or set(table) - {"bootstrap"}:
            raise ConfigError(f'{home.config}: [swarms."{name}"] may only have bootstrap = [...]')
        addrs = table.get("bootstrap", [])
        if not isinstance(addrs, list) or not all(isinstance(a, str) and "/p2p/" in a for a in addrs):
            raise ConfigError(
                f'{home.config}: [swarms."{name}"] bootstrap must be a list of multiaddrs'
                " ending in /p2p/<peer id>"
            )
        out[str(name)] = list(addrs)
    return out


def load_swarms(home: Home) -> list[Swarm]:
    """The swarms this node has joined (the file holds swarm keys: mode 0600)."""
    try:
        data = home.swarms.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {home.swarms}: {exc.strerror}") from None
    if stat.S_IMODE(home.swarms.stat().st_mode) & 0o077:
        raise ConfigError(
            f"{home.swarms} holds swarm keys but others can read it: run 'chmod 600 {home.swarms}'"
        )
    from meshnode import wire
    from meshnode.swarm import Swarm

    try:
        value = wire.decode(data, max_size=1 << 20, max_depth=3)
        return [Swarm(name=s["name"], id=s["id"], key=s.get("key")) for s in value["swarms"]]
    except (MeshError, KeyError, TypeError) as exc:
        raise ConfigError(f"{home.swarms} is corrupt ({exc}); restore it or remove it and rejoin") from None


def save_swarms(home: Home, swarms: list[Swarm]) -> None:
    """Write the swarm list atomically (write a temp file, fsync, rename), mode 0600."""
    from meshnode import wire
    from meshnode.atomicfile import write_atomically

    entries = []
    for s in swarms:
        entry: dict[str, object] = {"name": s.name, "id": s.id}
        if s.key is not None:
            entry["key"] = s.key
        entries.append(entry)
    write_atomically(home.swarms, wire.encode({"v": 1, "swarms": entries}))
