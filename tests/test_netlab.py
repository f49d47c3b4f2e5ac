"""The network-namespace lab (tests/netlab.py) models homes behind NAT routers.

Proves: a home host reaches a public host (masqueraded); nobody outside reaches
a home host unless a port is mapped (unsolicited inbound is silently dropped:
timeouts, not resets); homes cannot reach each other directly; behind a UPnP
router a host discovers the IGD, maps a port, and the public host then connects
through the router to a listener in the home. Skips without root, ip, nft or
miniupnpd, or when ``ip netns add`` fails.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests import netlab

UPNP_SRC = r"""
import json, sys, time
import miniupnpc
action, port = sys.argv[1], int(sys.argv[2])
u = miniupnpc.UPnP()
t0 = time.monotonic()
try:
    n = u.discover()
except Exception as exc:  # miniupnpc raises Exception("Success") when nobody answers
    print(json.dumps({"event": "none", "error": str(exc), "seconds": time.monotonic() - t0}), flush=True)
    sys.exit(0)
u.selectigd()
out = {"event": "igd", "devices": n, "seconds": round(time.monotonic() - t0, 3),
       "lan": u.lanaddr, "external": u.externalipaddress()}
if action == "map":
    out["added"] = u.addportmapping(port, "TCP", u.lanaddr, port, "netlab test", "", 60)
elif action == "unmap":
    out["deleted"] = u.deleteportmapping(port, "TCP")
out["entry"] = u.getspecificportmapping(port, "TCP")
out["total_seconds"] = round(time.monotonic() - t0, 3)
print(json.dumps(out), flush=True)
"""


pytestmark = pytest.mark.slow  # builds network namespaces


@pytest.fixture(scope="module")
def lab():
    lab = netlab.open_lab(upnp=True)
    try:
        t0 = time.monotonic()
        lab.home("a", upnp=True)
        lab.home("b")
        lab.public_host("pub")
        lab.build_total = time.monotonic() - t0  # type: ignore[attr-defined]
        yield lab
    finally:
        lab.close()


def upnp(lab: netlab.Lab, home: netlab.Home, action: str, port: int) -> dict:
    lp = lab.python(home.host, UPNP_SRC, action, str(port))
    return lp.wait_for(lambda e: e.get("event") in ("igd", "none"), 15, "discovery result")


@pytest.mark.timeout(30)
def test_topology(lab: netlab.Lab, record_property) -> None:
    a, b, pub = lab.homes["a"], lab.homes["b"], lab.public["pub"]
    assert (a.router.ip, a.router.lan_ip, a.host.ip) == ("198.20.1.1", "192.168.1.1", "192.168.1.10")
    assert (b.router.ip, b.host.ip, pub.ip) == ("198.20.1.2", "192.168.2.10", "198.20.2.1")
    assert a.upnp and not b.upnp and a.router.miniupnpd is not None and b.router.miniupnpd is None
    assert all(ns.startswith(f"mn-{lab.tag}-") for ns in lab.namespaces)
    ruleset = lab.nft(a.router, "list", "ruleset")
    for chain in ("miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"):
        assert f"chain {chain} " in ruleset
    assert "masquerade" in ruleset and "policy drop" in ruleset
    routes = lab.check(a.host, ["ip", "route"])
    assert "default via 192.168.1.1 dev eth0" in routes and "224.0.0.0/4 dev eth0" in routes
    record_property("netlab_build_seconds", round(lab.build_total, 3))  # type: ignore[attr-defined]
    print(f"\nlab with 2 homes (1 UPnP) and 1 public host built in {lab.build_total:.3f} s")  # type: ignore[attr-defined]


@pytest.mark.timeout(30)
def test_home_reaches_public_host(lab: netlab.Lab) -> None:
    pub = lab.public["pub"]
    listener = lab.tcp_listen(pub, 7001)
    for name in ("a", "b"):
        home = lab.homes[name]
        probe = lab.tcp_probe(home.host, pub.ip, 7001)
        assert probe.connected and probe.greeting == listener.greeting
        assert listener.wait_accepted(1 if name == "a" else 2)[-1]["peer"] == home.router.ip  # masqueraded


@pytest.mark.timeout(30)
def test_public_host_cannot_reach_a_home(lab: netlab.Lab) -> None:
    a, pub = lab.homes["a"], lab.public["pub"]
    listener = lab.tcp_listen(a.host, 7002)
    # to the router's WAN address: no mapping, unsolicited -> dropped (a timeout, not a reset)
    assert lab.tcp_probe(pub, a.router.ip, 7002, timeout=1).result == "timeout"
    # even straight at the LAN address through the router (as if the ISP routed it): dropped
    lab.check(pub, ["ip", "route", "add", "192.168.1.0/24", "via", a.router.ip])
    try:
        assert lab.tcp_probe(pub, a.host.ip, 7002, timeout=1).result == "timeout"
    finally:
        lab.check(pub, ["ip", "route", "del", "192.168.1.0/24"])
    assert listener.accepted() == []
    assert lab.tcp_probe(a.host, a.host.ip, 7002).connected  # the listener itself works


@pytest.mark.timeout(30)
def test_homes_cannot_reach_each_other_directly(lab: netlab.Lab) -> None:
    a, b = lab.homes["a"], lab.homes["b"]
    listener = lab.tcp_listen(a.host, 7003)
    assert lab.tcp_probe(b.host, a.router.ip, 7003, timeout=1).result == "timeout"
    probe = lab.tcp_probe(b.host, a.host.ip, 7003, timeout=1)  # a private address: no route
    assert probe.result == "unreachable", probe
    assert listener.accepted() == []


@pytest.mark.timeout(40)
def test_upnp_router_maps_a_port_for_the_public_host(lab: netlab.Lab, record_property) -> None:
    a, pub = lab.homes["a"], lab.public["pub"]
    listener = lab.tcp_listen(a.host, 7004)
    assert lab.tcp_probe(pub, a.router.ip, 7004, timeout=0.5).result == "timeout"
    got = upnp(lab, a, "map", 7004)
    assert got["event"] == "igd" and got["added"] is True
    assert (got["lan"], got["external"]) == (a.host.ip, a.router.ip)
    assert got["entry"][:2] == [a.host.ip, 7004] and 0 < got["entry"][4] <= 60
    assert "dport 7004" in lab.upnp_rules(a)
    record_property("upnp_discover_seconds", got["seconds"])
    record_property("upnp_discover_and_map_seconds", got["total_seconds"])
    print(f"\nminiupnpc: IGD discovered in {got['seconds']:.3f} s, mapped by {got['total_seconds']:.3f} s")

    probe = lab.tcp_probe(pub, a.router.ip, 7004)
    assert probe.connected and probe.greeting == listener.greeting
    assert listener.wait_accepted(1)[-1]["peer"] == pub.ip  # DNAT only: the home sees the real client

    gone = upnp(lab, a, "unmap", 7004)
    assert gone["deleted"] is True and gone["entry"] is None
    assert "7004" not in lab.upnp_rules(a)
    assert lab.tcp_probe(pub, a.router.ip, 7004, timeout=1).result == "timeout"


@pytest.mark.timeout(20)
def test_teardown_leaves_nothing(tmp_path: Path) -> None:
    lab = netlab.open_lab(upnp=True)
    try:
        home = lab.home("t", upnp=True)
        sleeper = lab.run(home.host, ["sleep", "60"])
        names, tmp = list(lab.namespaces), lab.tmp
        assert tmp.exists() and sleeper.poll() is None
    finally:
        t0 = time.monotonic()
        lab.close()
        took = time.monotonic() - t0
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(ns in listed for ns in names)
    assert sleeper.poll() is not None and home.router.miniupnpd.poll() is not None  # type: ignore[union-attr]
    assert not tmp.exists()
    assert took < 5


@pytest.mark.timeout(120)
def test_scale_sixteen_nodes(record_property) -> None:
    """14 homes (4 with miniupnpd) and 2 public hosts: build time, and every home reaches the internet."""
    lab = netlab.open_lab(upnp=True)
    try:
        t0 = time.monotonic()
        homes = [lab.home(f"h{i}", upnp=i % 4 == 0) for i in range(14)]
        pubs = [lab.public_host(f"pub{i}") for i in range(2)]
        built = time.monotonic() - t0
        listeners = [lab.tcp_listen(p, 7100) for p in pubs]
        t1 = time.monotonic()
        for i, home in enumerate(homes):
            probe = lab.tcp_probe(home.host, pubs[i % 2].ip, 7100)
            assert probe.connected, (home.name, probe)
        probed = time.monotonic() - t1
        assert len(listeners[0].wait_accepted(7)) == 7 and len(listeners[1].wait_accepted(7)) == 7
        # one mapping through one of the UPnP homes, from the other public host
        lst = lab.tcp_listen(homes[4].host, 7101)
        assert upnp(lab, homes[4], "map", 7101)["added"] is True
        assert lab.tcp_probe(pubs[1], homes[4].router.ip, 7101).connected
        assert lst.wait_accepted(1)[-1]["peer"] == pubs[1].ip
    finally:
        t2 = time.monotonic()
        lab.close()
        closed = time.monotonic() - t2
    stats = {"build": round(built, 3), "probe_14": round(probed, 3), "teardown": round(closed, 3)}
    for k, v in stats.items():
        record_property(f"netlab_scale_{k}_seconds", v)
    print(f"\nnetlab 14 homes + 2 public hosts (31 namespaces): {json.dumps(stats)}")
    assert built < 30
