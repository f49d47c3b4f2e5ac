"""The home directory, config.toml and the saved swarms."""

from __future__ import annotations

import os

import pytest

from meshnode.errors import ConfigError
from meshnode.home import Config, Home, ensure_home, load_config, load_swarms, resolve_home, save_swarms
from meshnode.swarm import Swarm


def test_resolve_home_prefers_option_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHNODE_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "opt").root == tmp_path / "opt"
    assert resolve_home(None).root == tmp_path / "env"
    monkeypatch.delenv("MESHNODE_HOME")
    assert resolve_home(None).root.name == "meshnode"


def test_new_home_is_private_with_a_default_config(tmp_path):
    home = Home(tmp_path / "h")
    ensure_home(home)
    assert os.stat(home.root).st_mode & 0o777 == 0o700
    assert os.stat(home.config).st_mode & 0o777 == 0o600
    assert load_config(home) == Config(listen=["/ip4/0.0.0.0/tcp/4001"], sync_interval=60.0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[node\nlisten=", "not valid TOML"),
        ("[node]\ncolour = 'red'", "unknown keys"),
        ("[node]\nlisten = '/ip4/1.2.3.4/tcp/1'", "list of multiaddr"),
        ("[node]\nmdns = 'yes'", "true or false"),
        ("[node]\nmax_connections = 0", "max_connections"),
        ("[node]\nsync_interval = -5", "sync_interval"),
        ("node = 3", "must be a table"),
        ("[node]\nupnp = 1", "upnp must be true or false"),
        ("[node]\nrelay = 'no'", "relay must be true or false"),
        ("[node]\nannounce = ['/ip4/0.0.0.0/tcp/4001']", "announce: expected"),
        ("[node]\nannounce = ['/ip4/81.2.69.1/tcp/0']", "announce: expected"),
        ("[node]\nannounce = ['/dns4/example.org/tcp/4001']", "announce: expected"),
        ("[elsewhere]\nx = 1", "unknown tables"),
        ('[swarms."Elm"]\ncolour = 1', "may only have bootstrap"),
        ('[swarms."Elm"]\nbootstrap = ["/ip4/1.2.3.4/tcp/1"]', "ending in /p2p/"),
        ("store = 3", r"\[store\] must be a table"),
        ("[store]\nmax_records = 5", r"unknown keys in \[store\]"),
        ("[store]\nmax_records_per_swarm = 10", "max_records_per_swarm must be a whole number from 100"),
        ("[store]\nmin_free_disk_mb = -1", "min_free_disk_mb must be"),
        ("[store]\nmax_mb_per_swarm = 1.5", "max_mb_per_swarm must be"),
        ("[store]\nmax_records_per_author = true", "max_records_per_author must be"),
    ],
)
def test_bad_config_is_refused_clearly(tmp_path, text, words):
    home = Home(tmp_path)
    home.config.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_config(home)


def test_store_limits_are_read(tmp_path):
    home = Home(tmp_path)
    home.config.write_text("[store]\nmax_records_per_swarm = 5000\nmin_free_disk_mb = 1024\n")
    limits = load_config(home).store
    assert (limits.max_records_per_swarm, limits.min_free_disk_mb) == (5000, 1024)
    assert (limits.max_mb_per_swarm, limits.max_records_per_author) == (32, 1000)  # the defaults


def test_reachability_settings_are_read(tmp_path):
    home = Home(tmp_path)
    pid = "12D3KooWHT5sHybxFXhDkm2gPASTivnjHynJrkULd1JX7w18LBAP"
    home.config.write_text(
        "[node]\nupnp = false\nrelay = false\nannounce = ['/ip4/81.2.69.1/tcp/4001']\n"
        f'[swarms."Elm Street"]\nbootstrap = ["/ip4/81.2.69.1/tcp/40123/p2p/{pid}"]\n'
    )
    config = load_config(home)
    assert (config.upnp, config.relay, config.announce) == (False, False, ["/ip4/81.2.69.1/tcp/4001"])
    assert config.swarm_bootstrap == {"Elm Street": [f"/ip4/81.2.69.1/tcp/40123/p2p/{pid}"]}


def test_swarms_round_trip_privately(tmp_path):
    home = Home(tmp_path)
    swarms = [Swarm.create("Elm Street"), Swarm.create("Quiet Close", private=True)]
    save_swarms(home, swarms)
    assert os.stat(home.swarms).st_mode & 0o777 == 0o600
    assert load_swarms(home) == swarms


def test_swarm_file_readable_by_others_or_corrupt_is_refused(tmp_path):
    home = Home(tmp_path)
    save_swarms(home, [Swarm.create("x", private=True)])
    os.chmod(home.swarms, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_swarms(home)
    os.chmod(home.swarms, 0o600)
    home.swarms.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="corrupt"):
        load_swarms(home)
