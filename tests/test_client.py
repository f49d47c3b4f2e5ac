"""The CLI's HTTP/1.1 client (meshnode.cli.client): requests, answers, and a daemon that is not there."""

from __future__ import annotations

import pytest

from meshnode.cli.client import ApiClient, http_request, parse_response, query_string
from meshnode.errors import DaemonNotRunning, MeshError
from meshnode.home import Home


def test_a_request_asks_to_close_and_carries_its_body():
    assert http_request("GET", "/v1/offers?query=drill", None) == (
        b"GET /v1/offers?query=drill HTTP/1.1\r\nhost: meshnode\r\nconnection: close\r\n"
        b"accept: application/json\r\n\r\n"
    )
    sent = http_request("POST", "/v1/offers", b'{"title":"Saw"}')
    assert sent.endswith(b'content-length: 15\r\n\r\n{"title":"Saw"}')
    assert b"content-length: 0\r\n" in http_request("POST", "/v1/stop", None)


def test_query_strings_as_the_api_reads_them():
    assert query_string({"query": "cordless drill", "limit": 5, "all": True, "mine": False}) == (
        "query=cordless%20drill&limit=5&all=true&mine=false"
    )
    assert query_string({"tag": ["a&b", "ü"]}) == "tag=a%26b&tag=%C3%BC"


def test_answers_plain_cut_chunked_and_malformed():
    assert parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]") == (200, b"[]")
    assert parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Type: x\r\n\r\n{}") == (404, b"{}")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
    assert parse_response(chunked) == (200, b"[1,2]")
    for bad in (b"", b"garbage", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n[]", chunked[:-12]):
        with pytest.raises(MeshError):
            parse_response(bad)


def test_no_daemon_is_a_clear_error(tmp_path):
    with pytest.raises(DaemonNotRunning, match="no meshnode daemon is running"):
        ApiClient(Home(tmp_path)).get("/offers")
