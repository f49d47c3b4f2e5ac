"""How reachable a node is, and why, in one word and one sentence (pure).

``meshnode status`` shows this. The inputs are what the node's parts found
out; the verdict is the first rule that applies:

=============  ==========================================================
``local``      listening on loopback only: nobody else can connect
``public``     peers dialled back one of our addresses (AutoNAT)
``upnp``       the router maps a public port to us (UPnP); unconfirmed or
               confirmed by dial-backs
``relayed``    behind NAT, reachable through circuit relay reservations
``private``    behind NAT (AutoNAT or no public address), no relay yet:
               this node dials out, nobody dials in
``unknown``    nothing has been checked yet
=============  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshnode.addrs import Scope, scope_of, split_tcp


@dataclass(frozen=True)
class Reachability:
    state: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"state": self.state, "reason": self.reason}


def assess(
    *,
    listen: Sequence[str],
    advertised: Sequence[str],
    announce: Sequence[str] = (),
    upnp_state: str | None = None,
    upnp_addr: str | None = None,
    upnp_reason: str = "",
    autonat_state: str | None = None,
    autonat_reason: str = "",
    relayed: Sequence[str] = (),
) -> Reachability:
    """The verdict for one network (see the module docstring)."""
    scopes = [s for a in listen if (s := _scope(a)) is not None]
    if scopes and all(s is Scope.LOOPBACK for s in scopes):
        return Reachability(
            "local", "listening on loopback only: only this machine can connect (see 'listen' in config.toml)"
        )
    autonat = (autonat_state or "").lower()
    if autonat == "public":
        return Reachability("public", f"other peers dialled back this node: {autonat_reason}".rstrip(": "))
    if upnp_state == "mapped" and upnp_addr and _scope(upnp_addr) is Scope.PUBLIC:
        note = "" if autonat != "private" else f"; but dial-backs failed: {autonat_reason}"
        return Reachability("upnp", f"the router maps {upnp_addr} to this node (UPnP){note}")
    if relayed:
        why = autonat_reason or upnp_reason or "no public address"
        relays = ", ".join(_relay_of(a) for a in relayed)
        return Reachability("relayed", f"behind NAT ({why}); others reach this node through relay {relays}")
    if autonat == "private":
        return Reachability(
            "private",
            f"behind NAT ({autonat_reason}); no relay yet: this node dials out, nobody can dial in",
        )
    if announce:
        return Reachability("unknown", f"announced by hand: {', '.join(announce)} (not confirmed yet)")
    public = [a for a in advertised if _scope(a) is Scope.PUBLIC]
    if public:
        return Reachability("unknown", f"has a public address ({public[0]}) that no peer has checked yet")
    reason = "only private (LAN) addresses"
    if upnp_reason:
        reason += f"; UPnP: {upnp_reason}"
    return Reachability("unknown", f"{reason}; no peer has checked yet whether others can dial in")


def _scope(addr: str) -> Scope | None:
    split = split_tcp(addr)
    return None if split is None else scope_of(split[1])


def _relay_of(addr: str) -> str:
    parts = addr.split("/")
    try:
        i = parts.index("p2p-circuit")
        return parts[i - 1]
    except (ValueError, IndexError):
        return addr
