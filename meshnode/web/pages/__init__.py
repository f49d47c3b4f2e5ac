"""The pages of the web page: one module per area, each with ``routes(ctx)``.

:func:`all_routes` imports every module of this package and gathers its
routes, so adding a page is adding a module (no central list to edit).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from meshnode.web.app import WebContext


def all_routes(ctx: WebContext) -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        out += module.routes(ctx)
    return out
