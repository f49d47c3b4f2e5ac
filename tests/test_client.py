"""The CLI's client (meshnode.cli.client): a daemon that is not there, answers that are not JSON."""

from __future__ import annotations

import pytest

from meshnode.cli.client import ApiClient, request_body
from meshnode.errors import BadValue, DaemonNotRunning
from meshnode.home import Home


def test_no_daemon_is_a_clear_error(tmp_path):
    with pytest.raises(DaemonNotRunning, match="no meshnode daemon is running"):
        ApiClient(Home(tmp_path)).get("/offers")


def test_what_cannot_be_sent_is_a_one_line_bad_value():
    assert request_body({"title": "Säge"}) == '{"title": "Säge"}'.encode()
    with pytest.raises(BadValue, match="not finite"):
        request_body({"level": float("nan")})
    with pytest.raises(BadValue, match="not UTF-8"):
        request_body({"title": "\udcff"})
