"""Fuzzing: protocol message parsers and the local API answer bad input with typed errors only."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode import wire
from meshnode.errors import MeshError
from meshnode.protocols.sync.messages import (
    VERSION,
    End,
    Hello,
    NotWant,
    Reconcile,
    Records,
    Refuse,
    RefuseCode,
    decode_message,
)
from tests.daemonutil import Daemon

GOOD_SYNC = [
    Hello(VERSION, bytes(32), b"").to_wire(),
    Refuse(RefuseCode.BUSY, "busy").to_wire(),
    Reconcile(b"\x80").to_wire(),
    NotWant((bytes([1]) * 32,)).to_wire(),
    Records((b"x" * 40,)).to_wire(),
    End(3).to_wire(),
]
MESSAGE_CLASSES = [Hello, Refuse, Reconcile, NotWant, Records, End]


@given(st.binary(max_size=300))
def test_sync_decoder_takes_any_bytes(data):
    try:
        decode_message(data)
    except MeshError:
        pass


@given(st.sampled_from(GOOD_SYNC), st.data())
def test_sync_decoder_takes_mutated_messages(message, data):
    pos = data.draw(st.integers(0, len(message) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = message[:pos] + bytes([byte]) + message[pos + 1 :]
    try:
        decode_message(mutated)
    except MeshError:
        pass


@given(st.lists(st.integers(0, 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=10), max_size=6))
def test_sync_decoder_takes_wrong_shapes(fields):
    try:
        decode_message(wire.encode(fields))
    except MeshError:
        pass


@given(st.sampled_from(MESSAGE_CLASSES), st.binary(max_size=300) | st.sampled_from(GOOD_SYNC))
def test_each_message_kind_takes_any_bytes(cls, data):
    """``X.from_wire`` refuses garbage, and every other kind, with MeshErrors only."""
    try:
        msg = cls.from_wire(data)
    except MeshError:
        return
    assert isinstance(msg, cls) and msg.to_wire() == data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
ROUTES = [
    ("POST", "/v1/offers", ["title", "kind", "tags", "desc", "expires_days", "where", "swarm"]),
    ("POST", "/v1/wants", ["title", "kind", "tags"]),
    ("POST", "/v1/proposals", ["offer", "give", "note"]),
    ("POST", "/v1/vouch", ["peer", "level", "note", "swarm"]),
    ("POST", "/v1/swarms", ["name", "private"]),
    ("POST", "/v1/swarms/join", ["code"]),
    ("POST", "/v1/connect", ["addr"]),
    ("POST", "/v1/proposals/abcdef012345/accept", ["note"]),
    ("POST", "/v1/proposals/abcdef012345/counter", ["give", "take"]),
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("fuzz") / "home").start()
    d.cli("swarm", "create", "Elm Street")
    yield d
    d.stop()


@pytest.mark.timeout(300)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ROUTES), st.data())
def test_api_answers_bad_requests_with_a_typed_error_and_changes_nothing(daemon, route, data):
    method, path, fields = route
    body = data.draw(
        st.dictionaries(st.sampled_from([*fields, "junk"]), json_values, max_size=len(fields) + 1)
        | json_values
        | st.binary(max_size=50).map(lambda b: b.decode("latin-1")),
        label="body",
    )
    raw = (
        body.encode("utf-8", "surrogatepass")
        if isinstance(body, str) and data.draw(st.booleans())
        else json.dumps(body)
    )
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(daemon.home / "api.sock")),
        base_url="http://meshnode",
        timeout=30,
    ) as client:
        before = client.get("/v1/status").json()["records"]
        response = client.request(method, path, content=raw, headers={"content-type": "application/json"})
        after = client.get("/v1/status").json()["records"]
    assert response.status_code != 500, response.text  # never an internal error
    payload = response.json()
    if response.status_code >= 400:
        assert set(payload) == {"error"} and isinstance(payload["error"]["code"], str)
        assert payload["error"]["message"]
        assert after == before  # a refused request changes nothing
    else:
        assert after >= before
