"""Typer, started faster: no pydantic for plain text and flags, each signature read once.

Typer (0.29) coerces every command-line value with a pydantic ``TypeAdapter``
that it builds for each parameter of the command being run, even for a
``str`` option left at ``None``: importing pydantic and building the
adapters costs ~80-110 ms at every command, a third of a quick one.

:func:`install` makes the adapter lazy: a ``None`` value needs no coercion
(typer returns it before asking the adapter), a ``str`` value for a ``str``
parameter and a ``bool`` value for a ``bool`` one are already what the
adapter would return, and only any other value (a number, a list, a
parser) builds typer's own coercion, on first use, with its own messages.
What a command receives is unchanged.

Typer also reads every command's signature (``get_type_hints``, which
evaluates each annotation's text) twice while it builds the command tree
at each start; :func:`install` keeps the first reading (~10-15 ms).

And typer builds every command's parser before it parses the command line;
:func:`only_the_command` hands it just the command (or group) the line names
(~10 ms with 38 commands), and the whole app when the line names none
exactly (``--help``, ``--version``, a typo: the same help and suggestions).

If typer's internals differ from what this expects, :func:`install` does
nothing and typer works as it always does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

_PLAIN = (str, bool)


def install() -> bool:
    """Both changes, each where typer has what it expects; whether the coercion one could be made."""
    _read_signatures_once()
    return _lazy_coercion()


def _read_signatures_once() -> None:
    """``typer.main.get_params_from_function`` remembers its answer per function (typer only reads it)."""
    from typer import main

    read = getattr(main, "get_params_from_function", None)
    if read is None or getattr(read, "once", False):
        return
    known: dict[Any, Any] = {}

    def read_once(func: Any) -> Any:
        params = known.get(func)
        if params is None:
            params = known[func] = read(func)
        return params

    read_once.once = True  # type: ignore[attr-defined]
    main.get_params_from_function = read_once


def _lazy_coercion() -> bool:
    """Typer builds its pydantic coercion of a parameter only for a value that needs it."""
    try:
        from typer import _coercion, core
    except ImportError:  # pragma: no cover - another typer
        return False
    build: Any = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if build is None or base is None or getattr(build, "lazy", False):
        return build is not None and getattr(build, "lazy", False)

    class LazyRuntimeParam(base):  # type: ignore[misc, valid-type]
        """Passes plain values through; anything else goes to typer's coercion, built on first use."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            info = self.parameter_info
            if (
                self.annotation in _PLAIN
                and type(value) is self.annotation
                and getattr(info, "parser", None) is None
                and getattr(info, "click_type", None) is None
            ):
                return value
            real = self.__dict__.get("_real")
            if real is None:
                real = build(self.descriptor)
                object.__setattr__(self, "_real", real)
            return real._coerce_value(value, param=param, ctx=ctx)

    def lazy_build(descriptor: Any) -> Any:
        if getattr(descriptor, "file_annotation", None) is not None:
            return build(descriptor)
        param = LazyRuntimeParam(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
        object.__setattr__(param, "descriptor", descriptor)
        return param

    lazy_build.lazy = True  # type: ignore[attr-defined]
    core.build_runtime_param = lazy_build
    return True


def only_the_command(app: typer.Typer, argv: Sequence[str]) -> typer.Typer:
    """``app`` with only the command or group ``argv[0]`` names; ``app`` itself if it names none exactly."""
    if not argv or argv[0].startswith("-") or app.registered_callback is None:
        return app  # (without a callback, typer runs a lone command without its name)
    name = argv[0]
    commands = [
        c
        for c in app.registered_commands
        if (c.name or (c.callback.__name__.lower().replace("_", "-") if c.callback else None)) == name
    ]
    groups = [g for g in app.registered_groups if g.name == name]
    if len(commands) + len(groups) != 1:
        return app
    pruned = copy.copy(app)
    pruned.registered_commands, pruned.registered_groups = commands, groups
    return pruned
