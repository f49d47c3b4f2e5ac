"""End to end: search through the real CLI and daemon (OR, phrases, --near/--km, --swarm)."""

from __future__ import annotations

import pytest

from meshnode import geohash
from tests.daemonutil import Daemon, stopped_at_exit

pytestmark = pytest.mark.timeout(120)

HOME = "u4pruy"  # the searcher's cell (Jutland); neighbours a few hundred metres to a few km away


def titles(d: Daemon, kind: str, *args: str) -> list[str]:
    return [o["title"] for o in d.json(kind, "list", *args)]


def test_search_from_the_command_line(tmp_path):
    with stopped_at_exit() as started:
        d = Daemon(tmp_path / "alice").start()
        started.append(d)
        d.cli("swarm", "create", "Elm Street")
        d.cli("swarm", "create", "Oak Road")
        c = geohash.decode(HOME)
        east_3km = geohash.encode(c.lat, c.lon + 3 / (111.32 * 0.535), 6)  # cos(57.65 deg) ~ 0.535
        assert 2.5 < geohash.distance_km(c.lat, c.lon, *_centre(east_3km)) < 3.5
        for title, where, swarm in [
            ("Cordless drill", HOME, "Elm Street"),
            ("Drill bits, cordless", east_3km, "Elm Street"),
            ("Ladder", "", "Oak Road"),
            ("Lawn mower", HOME, "Oak Road"),
        ]:
            d.cli("offer", "add", title, "--where", where, "--swarm", swarm)
        d.cli("want", "add", "Bread maker", "--where", HOME, "--swarm", "Elm Street")

        assert set(titles(d, "offer", "--query", "drill OR ladder")) == {
            "Cordless drill",
            "Drill bits, cordless",
            "Ladder",
        }
        assert titles(d, "offer", "--query", '"cordless drill"') == ["Cordless drill"]
        assert titles(d, "offer", "--query", "mow* OR ladd*", "--swarm", "Oak Road", "--near", HOME) == [
            "Lawn mower"  # the ladder has no place
        ]
        assert set(titles(d, "offer", "--near", HOME)) == {"Cordless drill", "Lawn mower"}  # within 1 km
        assert titles(d, "offer", "--near", HOME, "--km", "4", "--swarm", "Elm Street") == [
            "Cordless drill",
            "Drill bits, cordless",  # nearest first
        ]
        assert titles(d, "want", "--near", HOME, "--query", "bread") == ["Bread maker"]
        assert titles(d, "want", "--swarm", "Oak Road") == []

        # Bad values: a clear error, its exit code, and the table is never half printed.
        missing = d.cli("offer", "list", "--swarm", "Pine Lane", check=False)
        assert missing.returncode == 66 and "swarm list" in missing.stderr and not missing.stdout
        for args, word in [
            (["--near", "aaa"], "near"),
            (["--near", HOME, "--km", "0"], "km"),
            (["--km", "2"], "km"),
            (["--near", HOME, "--km", "nan"], "km"),
        ]:
            bad = d.cli("offer", "list", *args, check=False)
            assert bad.returncode == 64 and word in bad.stderr and not bad.stdout, (args, bad.stderr)


def _centre(where: str) -> tuple[float, float]:
    c = geohash.decode(where)
    return c.lat, c.lon
