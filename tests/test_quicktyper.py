"""meshnode.cli.quicktyper: typer started faster, commands unchanged."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.testing import CliRunner

from meshnode.cli import quicktyper
from meshnode.cli.main import app


def test_only_the_named_command_or_group_is_built():
    assert quicktyper.install()  # installed by meshnode.cli.main: True again, nothing done twice
    pruned = quicktyper.only_the_command(app, ["offer", "list", "--json"])
    assert [g.name for g in pruned.registered_groups] == ["offer"] and pruned.registered_commands == []
    assert len(app.registered_groups) > 1  # the app itself is left alone
    pruned = quicktyper.only_the_command(app, ["id"])
    assert [c.name for c in pruned.registered_commands] == ["id"] and pruned.registered_groups == []
    for argv in ([], ["--help"], ["--version"], ["ofer"], ["-x", "offer"]):
        assert quicktyper.only_the_command(app, argv) is app


def test_values_are_coerced_as_typer_does():
    probe = typer.Typer()
    seen = {}

    @probe.command()
    def run(
        name: Annotated[str, typer.Option("--name")] = "x",
        maybe: Annotated[str | None, typer.Option("--maybe")] = None,
        limit: Annotated[int, typer.Option("--limit")] = 3,
        km: Annotated[float | None, typer.Option("--km")] = None,
        tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
        flag: Annotated[bool, typer.Option("--flag")] = False,
    ) -> None:
        seen.update(name=name, maybe=maybe, limit=limit, km=km, tag=tag, flag=flag)

    runner = CliRunner()
    result = runner.invoke(probe, ["--name", "drill", "--limit", "7", "--km", "1.5", "--tag", "a", "--flag"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "drill", "maybe": None, "limit": 7, "km": 1.5, "tag": ["a"], "flag": True}
    result = runner.invoke(probe, ["--limit", "many"])
    assert result.exit_code == 2 and "--limit" in result.output  # typer's own refusal
    result = runner.invoke(probe, [])
    assert result.exit_code == 0 and seen["limit"] == 3 and seen["name"] == "x" and seen["tag"] is None
