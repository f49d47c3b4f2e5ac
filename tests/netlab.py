"""A network-namespace lab that models homes behind NAT routers on a small "internet".

Topology (everything lives in namespaces created here; the root namespace, its
interfaces, routes and nftables are never touched)::

    public host ns ─eth0══pN─┐
                             ├─ br0 (bridge in the "internet" ns)
    router ns ───────wan══iN─┘
      │ lan                      WAN: 198.20.1.N/16   public hosts: 198.20.2.N/16
      ║
    home host ns (eth0)          LAN: 192.168.N.0/24, router .1, host .10

* Every veth pair is created *inside* a lab namespace (``ip -n NS link add …
  peer name … netns OTHER``), so no interface ever appears in the root namespace.
* "Public" range 198.20.0.0/16: miniupnpd 2.3.1 refuses a WAN address in any
  of its reserved blocks (0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
  192.0.0/24, 192.0.2/24, 192.31.196/24, 192.52.193/24, 192.88.99/24,
  192.168/16, 192.175.48/24, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4,
  240/4: ``addr_is_reserved`` in its getifaddr.c) and Python's
  ``ipaddress`` calls 198.20.x.x global. The addresses exist only inside the
  lab; nothing is routed anywhere else (the namespaces have no way out).
* Router: ``ip_forward=1`` in its namespace and one nftables table, ``inet
  filter`` (the table and chain names miniupnpd 2.3.1's nftables backend uses
  by default: ``miniupnpd`` in the forward path, ``prerouting_miniupnpd`` and
  ``postrouting_miniupnpd`` for NAT, all in ``table inet filter``), see
  :data:`ROUTER_NFT`: masquerade LAN→WAN; forward accepts established/related
  and LAN→WAN, hands the rest from the WAN to the ``miniupnpd`` chain (where
  miniupnpd's accept rules for mapped ports live) and silently DROPS the rest
  (policy drop: no RST, no ICMP - like most home routers); input from the WAN
  accepts only established/related. With ``upnp=True`` miniupnpd (IGD over
  UPnP, NAT-PMP, secure mode, only LAN clients may map ports 1024-65535) runs
  in the router namespace, its config and log in a temp dir.
* Home host: LAN address, default route via the router, multicast route
  (224.0.0.0/4, so SSDP's 239.255.255.250) on its LAN interface.

Use::

    with Lab() as lab:                      # raises LabUnavailable (see skip_reason())
        a, b = lab.home("a", upnp=True), lab.home("b")
        pub = lab.public_host("pub")
        listener = lab.tcp_listen(pub, port=7000)
        assert lab.tcp_probe(a.host, pub.ip, 7000).connected

Teardown (``Lab.close``, also on ``__exit__``): every process started through
the lab is killed by pid (miniupnpd gets SIGTERM first so it removes its
rules), then every namespace is deleted and the temp dir removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INTERNET = ipaddress.ip_network("198.20.0.0/16")
PUBLIC_PREFIX = "198.20.2."  # public hosts: 198.20.2.N
WAN_PREFIX = "198.20.1."  # routers' WAN side: 198.20.1.N
MAX_HOMES = 250

# The router's ruleset. Table and chain names are miniupnpd 2.3.1's nftables defaults
# (upnp_table_name = upnp_nat_table_name = "filter", family inet; upnp_forward_chain =
# "miniupnpd", upnp_nat_chain = "prerouting_miniupnpd", upnp_nat_postrouting_chain =
# "postrouting_miniupnpd"). miniupnpd only adds rules to those three chains; the base
# chains below jump to them.
ROUTER_NFT = """\
table inet filter {{
    chain miniupnpd {{
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{wan}" jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
        oifname "{wan}" masquerade
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{wan}" ct state established,related accept
        iifname "{wan}" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wan}" accept
        iifname "{wan}" jump miniupnpd
    }}
}}
"""

MINIUPNPD_CONF = """\
ext_ifname={wan}
listening_ip={lan}
http_port={http_port}
enable_upnp=yes
enable_natpmp={natpmp}
ipv6_disable=yes
secure_mode=yes
system_uptime=yes
notify_interval=60
clean_ruleset_interval=600
lease_file={lease_file}
uuid={uuid}
friendly_name=netlab router {name}
allow 1024-65535 {lan_net} 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
"""

_LISTEN_SRC = r"""
import json, socket, sys
ip, port, greeting = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(16)
print(json.dumps({"event": "listening", "port": s.getsockname()[1]}), flush=True)
while True:
    c, peer = s.accept()
    print(json.dumps({"event": "accepted", "peer": peer[0], "peer_port": peer[1]}), flush=True)
    try:
        c.sendall(greeting.encode())
    finally:
        c.close()
"""

_PROBE_SRC = r"""
import errno, json, socket, sys
ip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket()
s.settimeout(timeout)
try:
    s.connect((ip, port))
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    out = {"result": "connected", "greeting": data.decode(errors="replace")}
except socket.timeout:
    out = {"result": "timeout"}
except ConnectionRefusedError:
    out = {"result": "refused"}
except OSError as exc:
    out = {"result": "unreachable", "error": errno.errorcode.get(exc.errno, str(exc))}
print(json.dumps(out), flush=True)
"""


class LabUnavailable(RuntimeError):
    """Namespaces cannot be built here (not root, a tool missing, ``ip netns add`` refused)."""


def open_lab(*, upnp: bool = False) -> Lab:
    """A new, entered :class:`Lab` (close it), or skip the calling test saying why it cannot be built."""
    import pytest

    reason = skip_reason(upnp=upnp)
    if reason:
        pytest.skip(reason)
    try:
        return Lab().__enter__()
    except LabUnavailable as exc:
        pytest.skip(str(exc))


def skip_reason(*, upnp: bool = False) -> str | None:
    """Why a lab cannot be built on this machine (None: it probably can; ``Lab`` has the last word)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    tools = ["ip", "nft"] + (["miniupnpd"] if upnp else [])
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool!r} not found"
    return None


@dataclass
class Host:
    """A namespace with one address; ``ns`` is what ``Lab.run``/``Lab.check`` take."""

    name: str
    ns: str
    ip: str
    iface: str = "eth0"


@dataclass
class Router(Host):
    lan_ip: str = ""
    lan_net: str = ""
    wan_iface: str = "wan"
    lan_iface: str = "lan"
    upnp: bool = False
    miniupnpd: subprocess.Popen | None = None
    miniupnpd_log: Path | None = None
    miniupnpd_conf: Path | None = None
    miniupnpd_natpmp: bool = True

    @property
    def wan_ip(self) -> str:
        return self.ip


@dataclass
class Home:
    """A router (WAN ``router.ip`` on the internet) and one host behind it (``host.ip`` on the LAN)."""

    name: str
    router: Router
    host: Host

    @property
    def upnp(self) -> bool:
        return self.router.upnp


@dataclass(frozen=True)
class Probe:
    """Outcome of one TCP connect: ``connected`` (with the listener's greeting), ``timeout``
    (dropped somewhere), ``refused`` (RST) or ``unreachable`` (ICMP / no route)."""

    result: str
    greeting: str = ""
    error: str = ""

    @property
    def connected(self) -> bool:
        return self.result == "connected"


class LineProc:
    """A process whose stdout JSON lines are collected by a thread (non-JSON lines go to ``other``)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue[dict] = queue.Queue()
        self.events: list[dict] = []
        self.other: list[str] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        if proc.stderr is not None:
            threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                self.other.append(line)
                continue
            if isinstance(msg, dict):
                self.lines.put(msg)
            else:
                self.other.append(line)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def drain(self) -> list[dict]:
        """Move every line received so far into ``events``; return ``events``."""
        while True:
            try:
                self.events.append(self.lines.get_nowait())
            except queue.Empty:
                return self.events

    def wait_for(self, predicate, timeout: float, what: str = "event") -> dict:
        """The first collected line for which ``predicate(line)`` holds, waiting up to ``timeout``."""
        if isinstance(predicate, str):
            name = predicate
            predicate = lambda m: m.get("event") == name  # noqa: E731
            what = repr(name)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for msg in self.events[seen:]:
                if predicate(msg):
                    return msg
            seen = len(self.events)
            left = deadline - time.monotonic()
            if left <= 0:
                err = "".join(self.stderr)[-2000:]
                raise AssertionError(f"no {what} within {timeout} s; lines {self.events[-5:]}; stderr {err}")
            try:
                self.events.append(self.lines.get(timeout=min(left, 0.5)))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    time.sleep(0.05)  # let the reader thread hand over the last lines
                    if self.lines.empty():
                        err = "".join(self.stderr)[-2000:]
                        raise AssertionError(
                            f"process exited ({self.proc.returncode}) before {what}; stderr {err}"
                        ) from None

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


class Lab:
    """Builds namespaces on demand; ``close()`` (or leaving the ``with``) tears everything down."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.prefix = f"mn-{self.tag}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.homes: dict[str, Home] = {}
        self.public: dict[str, Host] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix=f"netlab-{self.tag}-"))
        self._internet: str | None = None
        self._ports = 0  # bridge ports used in the internet ns
        self.build_seconds: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        reason = skip_reason()
        if reason:
            self.close()
            raise LabUnavailable(reason)
        try:
            self._internet_ns()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process started here (by pid), delete every namespace, remove the temp dir."""
        procs, self.processes = self.processes, []
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for p in procs:
            try:
                p.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=3)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        self.namespaces = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ plumbing

    def _ip(self, ns: str | None, commands: Sequence[str]) -> None:
        """Run ``ip`` batch ``commands`` (in namespace ``ns``)."""
        argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
        res = subprocess.run(
            argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=20, check=False
        )
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()} (commands: {commands})")

    def _add_ns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        res = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            raise LabUnavailable(f"ip netns add failed: {res.stderr.strip()}")
        self.namespaces.append(ns)
        return ns

    def _sysctl(self, ns: str, *settings: str) -> None:
        self.check(ns, ["sysctl", "-q", "-w", *settings])

    def _internet_ns(self) -> str:
        if self._internet is None:
            ns = self._add_ns("inet")
            self._internet = ns
            self._ip(ns, ["link set lo up", "link add br0 type bridge stp_state 0", "link set br0 up"])
        return self._internet

    def _attach(self, ns: str, iface: str) -> None:
        """A veth from the internet's bridge to ``iface`` in ``ns`` (created inside the internet ns)."""
        inet = self._internet_ns()
        self._ports += 1
        port = f"p{self._ports}"
        self._ip(
            inet,
            [f"link add {port} type veth peer name {iface} netns {ns}", f"link set {port} master br0 up"],
        )

    @staticmethod
    def _ns_of(where: str | Host | Home) -> str:
        if isinstance(where, Home):
            return where.host.ns
        if isinstance(where, Host):
            return where.ns
        return where

    def _check_name(self, name: str) -> None:
        if not name.replace("-", "").isalnum() or len(name) > 20 or name.endswith("-gw"):
            raise ValueError(f"bad name {name!r} (letters, digits, '-'; at most 20; no '-gw' suffix)")
        if name in self.homes or name in self.public or name == "inet":
            raise ValueError(f"{name!r} already exists")

    # ------------------------------------------------------------------ building

    def public_host(self, name: str) -> Host:
        """A namespace on the internet bridge with a public address (198.20.2.N)."""
        t0 = time.monotonic()
        self._check_name(name)
        n = len(self.public) + 1
        if n > MAX_HOMES:
            raise ValueError("too many public hosts")
        ns = self._add_ns(name)
        ip = f"{PUBLIC_PREFIX}{n}"
        self._attach(ns, "eth0")
        self._ip(
            ns,
            ["link set lo up", f"addr add {ip}/{INTERNET.prefixlen} dev eth0", "link set eth0 up"],
        )
        host = Host(name=name, ns=ns, ip=ip)
        self.public[name] = host
        self.build_seconds[name] = time.monotonic() - t0
        return host

    def home(self, name: str, upnp: bool = False, *, natpmp: bool = True, http_port: int = 5000) -> Home:
        """A home: router ns (WAN 198.20.1.N, LAN 192.168.N.1/24, nftables NAT, miniupnpd if
        ``upnp``) and a host ns behind it (192.168.N.10). Returns once miniupnpd listens."""
        t0 = time.monotonic()
        self._check_name(name)
        n = len(self.homes) + 1
        if n > MAX_HOMES:
            raise ValueError("too many homes")
        rns = self._add_ns(f"{name}-gw")
        hns = self._add_ns(name)
        wan_ip, lan_net = f"{WAN_PREFIX}{n}", f"192.168.{n}.0/24"
        lan_ip, host_ip = f"192.168.{n}.1", f"192.168.{n}.10"
        self._attach(rns, "wan")
        self._ip(
            rns,
            [
                "link set lo up",
                "link add lan type veth peer name eth0 netns " + hns,
                f"addr add {wan_ip}/{INTERNET.prefixlen} dev wan",
                f"addr add {lan_ip}/24 dev lan",
                "link set wan up",
                "link set lan multicast on up",
                "route add 224.0.0.0/4 dev lan",
            ],
        )
        self._ip(
            hns,
            [
                "link set lo up",
                f"addr add {host_ip}/24 dev eth0",
                "link set eth0 multicast on up",
                f"route add default via {lan_ip}",
                "route add 224.0.0.0/4 dev eth0",
            ],
        )
        self._sysctl(rns, "net.ipv4.ip_forward=1")
        nft_file = self.tmp / f"{name}.nft"
        nft_file.write_text(ROUTER_NFT.format(wan="wan", lan="lan"))
        self.check(rns, ["nft", "-f", str(nft_file)])
        router = Router(
            name=f"{name}-gw", ns=rns, ip=wan_ip, iface="wan", lan_ip=lan_ip, lan_net=lan_net, upnp=upnp
        )
        home = Home(name=name, router=router, host=Host(name=name, ns=hns, ip=host_ip))
        self.homes[name] = home
        if upnp:
            self._start_miniupnpd(home, natpmp=natpmp, http_port=http_port)
        self.build_seconds[name] = time.monotonic() - t0
        return home

    def _start_miniupnpd(self, home: Home, *, natpmp: bool, http_port: int) -> None:
        if shutil.which("miniupnpd") is None:
            raise LabUnavailable("'miniupnpd' not found")
        r = home.router
        d = self.tmp / f"miniupnpd-{home.name}"
        d.mkdir()
        r.miniupnpd_conf = d / "miniupnpd.conf"
        r.miniupnpd_conf.write_text(
            MINIUPNPD_CONF.format(
                wan="wan",
                lan="lan",
                http_port=http_port,
                natpmp="yes" if natpmp else "no",
                lease_file=d / "leases",
                uuid=f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-4000-8000-{secrets.token_hex(6)}",
                name=home.name,
                lan_net=r.lan_net,
            )
        )
        r.miniupnpd_natpmp = natpmp
        self.start_upnp(home)

    def start_upnp(self, home: Home, timeout: float = 10) -> None:
        """(Re)start the home router's miniupnpd; returns once it listens (HTTP, and NAT-PMP if on).
        miniupnpd reloads the mappings of its lease file, like a router that kept them."""
        r = home.router
        if r.miniupnpd_conf is None:
            raise ValueError(f"home {home.name!r} was built without upnp")
        if r.miniupnpd is not None and r.miniupnpd.poll() is None:
            return
        d = r.miniupnpd_conf.parent
        log = d / "miniupnpd.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            # -d: stay in the foreground (our pid), log to stderr; -P: our own pid file
            r.miniupnpd = self.run(
                r.ns,
                ["miniupnpd", "-d", "-f", str(r.miniupnpd_conf), "-P", str(d / "miniupnpd.pid")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        r.miniupnpd_log = log
        deadline = time.monotonic() + timeout
        want = ["HTTP listening on port"] + (["Listening for NAT-PMP"] if r.miniupnpd_natpmp else [])
        while True:
            with log.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            if all(w in text for w in want):
                return
            if r.miniupnpd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"miniupnpd in {r.ns} did not come up:\n{text[-3000:]}")
            time.sleep(0.02)

    def stop_upnp(self, home: Home, timeout: float = 10) -> None:
        """Stop the home router's miniupnpd (SIGTERM: it removes its rules), as if UPnP went away."""
        p = home.router.miniupnpd
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    # ------------------------------------------------------------------ running things

    def run(self, where: str | Host | Home, argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
        """Start ``argv`` inside a namespace (``ip netns exec``); killed at teardown."""
        proc = subprocess.Popen(["ip", "netns", "exec", self._ns_of(where), *argv], **popen_kwargs)
        self.processes.append(proc)
        return proc

    def check(self, where: str | Host | Home, argv: Sequence[str], timeout: float = 20) -> str:
        """Run ``argv`` inside a namespace, wait for it, raise on failure; return its stdout."""
        res = subprocess.run(
            ["ip", "netns", "exec", self._ns_of(where), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"{argv} in {self._ns_of(where)} failed ({res.returncode}): {res.stderr}")
        return res.stdout

    def python(self, where: str | Host | Home, source: str, *args: str, **popen_kwargs) -> LineProc:
        """Run Python ``source`` (``python -c``) in a namespace; its JSON stdout lines are collected."""
        popen_kwargs.setdefault("stdin", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
        proc = self.run(
            where,
            [sys.executable, "-c", source, *args],
            stdout=subprocess.PIPE,
            text=True,
            **popen_kwargs,
        )
        return LineProc(proc)

    def tcp_listen(
        self, where: str | Host | Home, port: int = 0, ip: str = "0.0.0.0", greeting: str = "", timeout=10
    ) -> Listener:
        """A TCP listener in a namespace that greets each client and records it (``accepted`` events)."""
        greeting = greeting or f"hello from {self._ns_of(where)}"
        lp = self.python(where, _LISTEN_SRC, ip, str(port), greeting)
        ready = lp.wait_for("listening", timeout)
        return Listener(lp.proc, lp, ready["port"], greeting)

    def tcp_probe(self, where: str | Host | Home, ip: str, port: int, timeout: float = 1.5) -> Probe:
        """Connect once from a namespace to ``ip:port``; ``timeout`` bounds the connect and the read."""
        out = self.check(
            where, [sys.executable, "-S", "-c", _PROBE_SRC, ip, str(port), str(timeout)], timeout + 15
        )
        msg = json.loads(out.strip().splitlines()[-1])
        return Probe(msg["result"], msg.get("greeting", ""), msg.get("error", ""))

    def nft(self, where: str | Host | Home, *args: str) -> str:
        return self.check(where, ["nft", *args])

    def upnp_rules(self, home: Home) -> str:
        """The router's DNAT rules added by miniupnpd (its ``prerouting_miniupnpd`` chain)."""
        return self.nft(home.router, "list", "chain", "inet", "filter", "prerouting_miniupnpd")


@dataclass
class Listener:
    proc: subprocess.Popen
    lines: LineProc
    port: int
    greeting: str

    def accepted(self) -> list[dict]:
        """Every ``accepted`` event so far (``peer`` = the client address the listener saw)."""
        return [e for e in self.lines.drain() if e.get("event") == "accepted"]

    def wait_accepted(self, count: int = 1, timeout: float = 5) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.accepted()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"listener saw {len(self.accepted())} connections, wanted {count}")
            time.sleep(0.02)
        return self.accepted()
