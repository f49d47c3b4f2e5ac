"""Building and dialling a libp2p host the way meshnode needs it.

* The node's Ed25519 key is the libp2p identity (same seed, same peer id).
* Noise is the ONLY security transport: py-libp2p's default list also admits
  plaintext peers (PY-LIBP2P-NOTES pitfall 1).
* Yamux, TCP, one connection per peer (pitfall 2: otherwise ~250 ms a dial).
* An optional pre-shared key makes a private network (pnet): peers without
  the key cannot complete a connection.
* Every dial has a timeout (pitfall 14: a wrong pnet key hangs ~21 s) and
  clears libp2p's 60 s negative dial cache first (pitfall 3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import libp2p
import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from meshnode.errors import BadValue, NetworkError
from meshnode.identity import Identity

# Route libp2p's logs into ours (pitfall 11) but keep its chatter down.
_libp2p_logger = logging.getLogger("libp2p")
_libp2p_logger.propagate = True
if _libp2p_logger.level == logging.NOTSET:
    _libp2p_logger.setLevel(logging.WARNING)
# The auto-connector forces its own logger to INFO and reports every 30 s cycle.
logging.getLogger("libp2p.network.auto_connector").setLevel(logging.WARNING)

DEFAULT_DIAL_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 64


def build_host(
    identity: Identity,
    *,
    psk: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    min_peers: int = 8,
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
) -> IHost:
    """A libp2p host for ``identity``: Noise only, Yamux, TCP, optional pnet key.

    ``min_peers`` is libp2p's low watermark: below it, the host dials peers it
    knows from its peerstore every 30 s (pitfall 17). 0 turns that off.
    """
    key_pair = create_new_key_pair(seed=identity.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    config = ConnectionConfig(
        max_connections_per_peer=1,
        max_connections=max_connections,
        high_watermark=max_connections,
        low_watermark=min(min_peers, max_connections),
        min_connections=0,
        dial_timeout=dial_timeout,
    )
    return libp2p.new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
        connection_config=config,
        psk=psk,
    )


def parse_multiaddr(text: str) -> multiaddr.Multiaddr:
    """Parse a multiaddr, or raise :class:`BadValue` with an example of a good one."""
    try:
        return multiaddr.Multiaddr(text)
    except Exception as exc:
        raise BadValue(
            f"not a multiaddr: {text!r} ({exc}); expected e.g. /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW…"
        ) from None


def peer_info_of(text: str) -> PeerInfo:
    """The peer id and address in a ``…/p2p/<peer id>`` multiaddr."""
    addr = parse_multiaddr(text)
    try:
        return info_from_p2p_addr(addr)
    except Exception:
        raise BadValue(f"multiaddr {text!r} must end in /p2p/<peer id> to be dialled") from None


async def dial(host: IHost, info: PeerInfo, *, timeout: float = DEFAULT_DIAL_TIMEOUT) -> None:
    """Connect to ``info`` within ``timeout`` seconds, or raise :class:`NetworkError`."""
    if info.peer_id == host.get_id():
        raise BadValue("that address is this node itself")
    network = host.get_network()
    unblock = getattr(network, "unblock_peer", None)
    if unblock is not None:
        try:
            unblock(info.peer_id)
        except Exception:  # not blocked: nothing to clear
            pass
    try:
        with trio.fail_after(timeout):
            await host.connect(info)
    except trio.TooSlowError:
        raise NetworkError(
            f"could not reach {info.peer_id} within {timeout:.0f} s"
            " (is it running, and do you hold the swarm key if the swarm is private?)"
        ) from None
    except Exception as exc:
        raise NetworkError(f"could not connect to {info.peer_id}: {exc}") from None


def listen_addrs(host: IHost) -> list[str]:
    """The host's dialable addresses, each ending in /p2p/<peer id>."""
    pid = host.get_id().to_base58()
    out = []
    for addr in host.get_addrs():
        text = str(addr)
        out.append(text if "/p2p/" in text else f"{text}/p2p/{pid}")
    return out


def parse_listen(addrs: Sequence[str]) -> list[multiaddr.Multiaddr]:
    return [parse_multiaddr(a) for a in addrs]


__all__ = ["ID", "build_host", "dial", "listen_addrs", "parse_listen", "parse_multiaddr", "peer_info_of"]
