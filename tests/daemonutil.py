"""Helpers for end-to-end tests: real daemon processes driven by the real CLI."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MESHNODE = [sys.executable, "-m", "meshnode.cli.main"]


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MESHNODE_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Daemon:
    """One ``meshnode daemon`` process with its own home, on 127.0.0.1."""

    home: Path
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", ns]
    listen: str | None = "/ip4/127.0.0.1/tcp/0"  # None: the default config (0.0.0.0:4001, mDNS, UPnP)
    args: list[str] = field(default_factory=list)  # more daemon arguments, e.g. ["--log-level", "info"]
    env: dict[str, str] = field(default_factory=dict)  # more environment for the daemon process
    # The web page: "127.0.0.1:0" on a free port; None: as config.toml says (default 127.0.0.1:8790).
    # Left as "auto", a daemon on 127.0.0.1 (``listen`` set) takes a free port, one with the default config
    # (in a namespace of its own) the default.
    web: str | None = "auto"
    web_url: str = ""
    proc: subprocess.Popen[str] | None = None
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> Daemon:
        listen = ["--listen", self.listen] if self.listen else []
        web = self.web if self.web != "auto" else ("127.0.0.1:0" if self.listen else None)
        if web is not None:
            listen += ["--web", web]
        self.proc = subprocess.Popen(
            [*self.prefix, *MESHNODE, "daemon", "--home", str(self.home), *listen, *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env_for(self.home) | self.env,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"daemon did not get ready: {''.join(self.output)}")
            if line.startswith("ready "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                self.peer_id = fields["peer_id"]
                self.addrs = fields["addrs"].split(",")
                self.web_url = fields.get("web", "")
                return self

    def cli(self, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*MESHNODE, *args, "--home", str(self.home)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=env_for(self.home),
        )
        if check and result.returncode != 0:
            raise AssertionError(f"meshnode {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def json(self, *args: str) -> object:
        return json.loads(self.cli(*args, "--json").stdout)

    def stop(self, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            self.cli("stop", check=False, timeout=10)
            proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            proc.kill()
            proc.wait(timeout=5)


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition") -> float:
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def stopped_at_exit() -> Iterator[list[Daemon]]:
    """A list for the daemons a test starts; every one in it is stopped when the block ends."""
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()
