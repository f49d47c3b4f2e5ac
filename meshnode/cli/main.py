"""The ``meshnode`` command line.

Every failure prints one line on stderr and exits with the error's exit code
(:mod:`meshnode.errors`); nothing is half done.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import trio
import typer

from meshnode.errors import MeshError

app = typer.Typer(
    name="meshnode",
    help="Share things with your neighbours, peer to peer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

HomeOption = Annotated[
    str | None,
    typer.Option(
        "--home", help="The node's home directory (default: $MESHNODE_HOME or the platform data dir)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def mesh_errors(func: F) -> F:
    """Turn a MeshError into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MeshError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@mesh_errors
def init(home: HomeOption = None, json_out: JsonOption = False) -> None:
    """Create this node's key and config (safe to run again)."""
    from meshnode.home import ensure_home, resolve_home
    from meshnode.keyfile import create_identity

    h = resolve_home(home)
    ensure_home(h)
    identity, created = create_identity(h.root)
    if json_out:
        typer.echo(json.dumps({"peer_id": identity.peer_id, "home": str(h.root), "created": created}))
        return
    typer.echo(f"{'Created' if created else 'Found'} node {identity.peer_id}")
    typer.echo(f"home: {h.root}")
    typer.echo("next: run 'meshnode daemon' to start it")


@app.command()
@mesh_errors
def daemon(
    home: HomeOption = None,
    listen: Annotated[
        list[str] | None, typer.Option("--listen", help="Listen multiaddr (repeatable); overrides config.")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "warning",
) -> None:
    """Run the node in the foreground until Ctrl-C (SIGINT) or SIGTERM."""
    from meshnode.daemon import run_daemon
    from meshnode.home import resolve_home
    from meshnode.protocols.host import parse_multiaddr

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"--log-level: expected debug, info, warning or error, found {log_level!r}", 64)
    for addr in listen or []:
        parse_multiaddr(addr)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    def announce(line: str) -> None:
        print(line, flush=True)

    trio.run(functools.partial(run_daemon, resolve_home(home), listen=list(listen or []), announce=announce))


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
