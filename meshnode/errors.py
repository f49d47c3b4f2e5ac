"""The one exception hierarchy of meshnode.

Every refusal anywhere in meshnode raises a :class:`MeshError` subclass. Each
class carries a stable machine-readable ``code`` (used in API error bodies and
``--json`` output) and a process ``exit_code`` (used by the CLI). Messages say
what was expected and what was found, and where it helps, what to do next.

The tree (code, exit code)::

    MeshError ("error", 1)
    ├── DecodeError ("malformed", 65)
    ├── ValidationError ("invalid", 65)
    │   ├── SignatureError ("bad_signature")
    │   ├── ClockSkewError ("clock_skew")
    │   ├── ExpiredError ("expired")
    │   ├── WrongSwarmError ("wrong_swarm")
    │   ├── ReconcileError ("bad_reconcile")
    │   └── SyncViolation ("protocol_violation")
    ├── NotAllowed ("not_allowed", 77)
    │   └── TransitionError ("bad_transition")
    ├── NotFound ("not_found", 66)
    ├── BadValue ("bad_value", 64)
    │   └── InviteError ("bad_invite")
    ├── IdentityError ("identity", 78)
    ├── ConfigError ("config", 78)
    │   └── PortInUse ("port_in_use")
    ├── StoreError ("store", 74)
    │   ├── StorageFull ("storage_full")
    │   └── OverQuota ("over_quota")
    ├── NetworkError ("network", 69)
    │   ├── SyncTimeout ("timeout")
    │   └── PeerGone ("peer_gone")
    ├── DaemonNotRunning ("daemon_down", 69)
    └── DaemonAlreadyRunning ("daemon_running", 75)

A test checks that this drawing and :data:`ALL_ERRORS` name every class.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error meshnode raises on purpose."""

    code: str = "error"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- bytes and records -------------------------------------------------------


class DecodeError(MeshError):
    """Bytes that are not a well-formed, canonical, bounded CBOR value."""

    code = "malformed"
    exit_code = 65  # EX_DATAERR


class ValidationError(MeshError):
    """A well-formed value that breaks the schema or a limit."""

    code = "invalid"
    exit_code = 65


class SignatureError(ValidationError):
    """The signature does not verify, or the author key is unusable."""

    code = "bad_signature"


class ClockSkewError(ValidationError):
    """A record timestamped too far in the future."""

    code = "clock_skew"


class ExpiredError(ValidationError):
    """A record (or the thing it refers to) has expired."""

    code = "expired"


class WrongSwarmError(ValidationError):
    """A record that names another swarm than the one it arrived in."""

    code = "wrong_swarm"


# --- rules of who may do what --------------------------------------------------


class NotAllowed(MeshError):
    """A well-formed request that the rules refuse (e.g. accepting your own proposal)."""

    code = "not_allowed"
    exit_code = 77  # EX_NOPERM


class TransitionError(NotAllowed):
    """A barter reply that is not a legal move from the proposal's current state."""

    code = "bad_transition"


class NotFound(MeshError):
    """An id, name or key that this node does not know."""

    code = "not_found"
    exit_code = 66  # EX_NOINPUT


class BadValue(MeshError):
    """A user-supplied value (CLI argument, API field, config entry) that is wrong."""

    code = "bad_value"
    exit_code = 64  # EX_USAGE


# --- the node's own environment ----------------------------------------------


class IdentityError(MeshError):
    """The node's key file is missing, unreadable, malformed or too open."""

    code = "identity"
    exit_code = 78  # EX_CONFIG


class ConfigError(MeshError):
    """The node's config file or home directory is unusable."""

    code = "config"
    exit_code = 78


class PortInUse(ConfigError):
    """A listen port that another socket holds already."""

    code = "port_in_use"


class StoreError(MeshError):
    """The database refused or failed an operation."""

    code = "store"
    exit_code = 74  # EX_IOERR


class StorageFull(StoreError):
    """The disk holding the store is nearly full: others' records are refused (no fault of theirs)."""

    code = "storage_full"


class OverQuota(StoreError):
    """A record that this store's quotas leave no room for (no fault of the sender)."""

    code = "over_quota"


class InviteError(BadValue):
    """An invite code that cannot be parsed or does not verify."""

    code = "bad_invite"


class NetworkError(MeshError):
    """A peer could not be reached or spoke nonsense."""

    code = "network"
    exit_code = 69  # EX_UNAVAILABLE


# --- peers breaking a protocol ----------------------------------------------------


class ReconcileError(ValidationError):
    """A reconciliation message or move that breaks the protocol: drop the peer."""

    code = "bad_reconcile"


class SyncViolation(ValidationError):
    """A sync peer broke the protocol: abort, reset the stream, penalise it."""

    code = "protocol_violation"


class SyncTimeout(NetworkError):
    """A sync peer did not send or take a frame in time."""

    code = "timeout"


class PeerGone(NetworkError):
    """The stream ended or was reset by the peer (not its fault: not penalised)."""

    code = "peer_gone"


class DaemonNotRunning(MeshError):
    """The CLI could not reach the daemon's API socket."""

    code = "daemon_down"
    exit_code = 69


class DaemonAlreadyRunning(MeshError):
    """Another daemon holds this home directory."""

    code = "daemon_running"
    exit_code = 75  # EX_TEMPFAIL


ALL_ERRORS: tuple[type[MeshError], ...] = (
    MeshError,
    DecodeError,
    ValidationError,
    SignatureError,
    ClockSkewError,
    ExpiredError,
    WrongSwarmError,
    NotAllowed,
    TransitionError,
    NotFound,
    BadValue,
    IdentityError,
    ConfigError,
    PortInUse,
    StoreError,
    StorageFull,
    OverQuota,
    InviteError,
    NetworkError,
    ReconcileError,
    SyncViolation,
    SyncTimeout,
    PeerGone,
    DaemonNotRunning,
    DaemonAlreadyRunning,
)

ERRORS_BY_CODE: dict[str, type[MeshError]] = {cls.code: cls for cls in ALL_ERRORS}
