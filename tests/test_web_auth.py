"""meshnode/web/auth.py without a server: hosts, addresses, login links, sessions, CSRF tokens."""

from __future__ import annotations

import itertools

import pytest

from meshnode.errors import ConfigError
from meshnode.web import auth
from meshnode.web.auth import (
    LOGIN_TTL_MS,
    MAX_LOGINS,
    MAX_SESSIONS,
    SESSION_IDLE_MS,
    SESSION_MAX_MS,
    WebAuth,
    host_allowed,
    is_loopback,
    parse_web_address,
)

T0 = 1_760_000_000_000
HOUR = 3600 * 1000


def counting_bytes():
    """A deterministic stand-in for os.urandom: each call a different run of bytes."""
    counter = itertools.count(1)

    def random_bytes(n: int) -> bytes:
        return next(counter).to_bytes(4, "big") * (n // 4) + b"\x00" * (n % 4)

    return random_bytes


# --- Host ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8790", "localhost:8790", "LOCALHOST:8790", "[::1]:8790", "127.0.0.2:8790"]
)
def test_the_loopback_names_of_the_bound_port_are_allowed(host):
    assert host_allowed(host, "127.0.0.1", 8790)


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "127.0.0.1",  # no port
        "127.0.0.1:8791",  # another port
        "127.0.0.1:",
        "127.0.0.1:80x",
        "evil.example:8790",  # DNS rebinding: a name that may resolve to 127.0.0.1
        "localhost.evil.example:8790",
        "127.0.0.1.evil.example:8790",
        "192.168.1.5:8790",  # an IP literal while bound to loopback
        "0.0.0.0:8790",
        "[127.0.0.1]:8790",  # brackets are for IPv6 only
        "user@127.0.0.1:8790",
    ],
)
def test_other_hosts_are_refused_on_loopback(host):
    assert not host_allowed(host, "127.0.0.1", 8790)


def test_the_configured_address_is_allowed_when_the_owner_set_one():
    assert host_allowed("192.168.1.5:8790", "192.168.1.5", 8790)
    assert host_allowed("127.0.0.1:8790", "192.168.1.5", 8790)
    assert not host_allowed("192.168.1.6:8790", "192.168.1.5", 8790)
    assert not host_allowed("evil.example:8790", "192.168.1.5", 8790)
    assert not host_allowed("192.168.1.5:8791", "192.168.1.5", 8790)
    assert host_allowed("[fd00::5]:8790", "fd00::5", 8790)
    assert host_allowed("[FD00::5]:8790", "[fd00::5]", 8790)


def test_bound_to_every_address_any_ip_literal_but_no_name():
    for bound in ("0.0.0.0", "::"):
        assert host_allowed("192.168.1.5:8790", bound, 8790)
        assert host_allowed("10.0.0.7:8790", bound, 8790)
        assert host_allowed("[fe80::1]:8790", bound, 8790)
        assert host_allowed("localhost:8790", bound, 8790)
        assert not host_allowed("evil.example:8790", bound, 8790)
        assert not host_allowed("meshnode.local:8790", bound, 8790)
        assert not host_allowed("192.168.1.5:8791", bound, 8790)


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("[::1]") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("evil")


# --- the configured address --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8790", ("127.0.0.1", 8790)),
        (" 127.0.0.1:8790 ", ("127.0.0.1", 8790)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8790", ("::1", 8790)),
        ("0.0.0.0:8790", ("0.0.0.0", 8790)),
        ("192.168.1.20:65535", ("192.168.1.20", 65535)),
        ("off", None),
        ("OFF", None),
        (" off ", None),
    ],
)
def test_parse_web_address(text, expected):
    assert parse_web_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1:-1",
        "127.0.0.1:http",
        "example.com:8790",
        "meshnode.local:8790",
        ":8790",
        "",
        "on",
        8790,
        None,
        ["127.0.0.1:8790"],
    ],
)
def test_a_bad_web_address_is_a_config_error_naming_where(text):
    with pytest.raises(ConfigError) as raised:
        parse_web_address(text, "config.toml: web")
    assert str(raised.value).startswith("config.toml: web:")


def test_the_default_address_is_loopback():
    parsed = parse_web_address(auth.DEFAULT_WEB)
    assert parsed is not None and is_loopback(parsed[0])


# --- login links ---------------------------------------------------------------------


def test_a_login_link_works_once():
    a = WebAuth()
    token = a.new_login(T0)
    assert len(token) == 2 * auth.TOKEN_BYTES
    session = a.redeem(token, T0 + 1000)
    assert session is not None and a.session(session.id, T0 + 2000) is session
    assert a.redeem(token, T0 + 3000) is None


def test_a_login_link_lasts_ten_minutes():
    assert LOGIN_TTL_MS == 10 * 60 * 1000
    a = WebAuth()
    late, in_time = a.new_login(T0), a.new_login(T0)
    assert a.redeem(late, T0 + LOGIN_TTL_MS) is None
    assert a.redeem(in_time, T0 + LOGIN_TTL_MS - 1) is not None


def test_unknown_tokens_open_nothing():
    a = WebAuth()
    token = a.new_login(T0)
    for wrong in ("", "0" * 64, token[:-1], token.upper() if token != token.upper() else token + "0"):
        assert a.redeem(wrong, T0) is None
    assert a.redeem(token, T0) is not None  # the wrong tries did not use it up


def test_only_a_hash_of_a_login_token_is_kept():
    a = WebAuth()
    token = a.new_login(T0)
    assert token not in repr(vars(a)) and token.encode() not in repr(vars(a)).encode()


def test_at_most_max_logins_links_are_kept_the_oldest_goes():
    a = WebAuth(counting_bytes())
    tokens = [a.new_login(T0 + i) for i in range(MAX_LOGINS + 1)]
    assert len(set(tokens)) == MAX_LOGINS + 1
    assert a.redeem(tokens[0], T0 + 100) is None
    assert all(a.redeem(t, T0 + 100) is not None for t in tokens[1:])


# --- sessions ------------------------------------------------------------------------


def opened(a: WebAuth, now: int) -> auth.Session:
    session = a.redeem(a.new_login(now), now)
    assert session is not None
    return session


def test_a_session_ends_after_being_idle():
    a = WebAuth()
    s = opened(a, T0)
    assert a.session(s.id, T0 + SESSION_IDLE_MS) is s  # in use: the idle time starts again
    assert a.session(s.id, T0 + 2 * SESSION_IDLE_MS) is s
    assert a.session(s.id, T0 + 3 * SESSION_IDLE_MS + 1) is None
    assert a.session(s.id, T0 + 3 * SESSION_IDLE_MS) is None  # ended for good


def test_a_session_in_use_still_ends_after_its_longest_life():
    a = WebAuth()
    s = opened(a, T0)
    now = T0
    while now + HOUR <= T0 + SESSION_MAX_MS:
        now += HOUR
        assert a.session(s.id, now) is s
    assert a.session(s.id, T0 + SESSION_MAX_MS + 1) is None


def test_logging_out_ends_the_session():
    a = WebAuth()
    s, other = opened(a, T0), opened(a, T0)
    a.end(s.id)
    a.end(None)
    a.end("unknown")
    assert a.session(s.id, T0) is None and a.session(other.id, T0) is other


def test_no_cookie_or_an_unknown_one_is_no_session():
    a = WebAuth()
    opened(a, T0)
    assert a.session(None, T0) is None and a.session("", T0) is None and a.session("f" * 64, T0) is None


def test_at_most_max_sessions_the_least_recently_used_goes():
    a = WebAuth(counting_bytes())
    sessions = [opened(a, T0 + i) for i in range(MAX_SESSIONS)]
    a.session(sessions[0].id, T0 + 1000)  # the oldest is used again: sessions[1] is now the least recent
    newest = opened(a, T0 + 2000)
    assert a.session(sessions[1].id, T0 + 3000) is None
    assert a.session(sessions[0].id, T0 + 3000) is sessions[0]
    assert a.session(newest.id, T0 + 3000) is newest
    assert all(a.session(s.id, T0 + 3000) is s for s in sessions[2:])


# --- CSRF ----------------------------------------------------------------------------


def test_csrf_tokens_are_per_session_and_per_daemon():
    a, b = WebAuth(), WebAuth()
    s1, s2 = opened(a, T0), opened(a, T0)
    token = a.csrf(s1)
    assert a.check_csrf(s1, token) and a.csrf(s1) == token
    assert not a.check_csrf(s2, token)
    assert not a.check_csrf(s1, None) and not a.check_csrf(s1, "") and not a.check_csrf(s1, token[:-1])
    same_id = auth.Session(id=s1.id, started=T0, used=T0)
    assert b.csrf(same_id) != token  # another daemon's secret
    assert token != s1.id
