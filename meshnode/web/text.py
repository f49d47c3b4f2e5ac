"""The page's words, kept out of the templates: one TOML file per page area and language.

``meshnode/web/text/<lang>/<area>.toml`` holds flat ``key = "text"`` pairs;
a template asks for ``t("area.key", name=...)`` and gets the text with its
``{name}`` fields filled in (``str.format``; the values are escaped by
Jinja2 like any other). English (``en``) is complete; another language
(French first) is a folder of the same files, and any key it lacks falls
back to English. A key missing in English is an error (tests find it).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

DEFAULT = "en"


class Text:
    """The words of one language, with English behind them."""

    def __init__(self, lang: str = DEFAULT) -> None:
        self.lang = lang
        self._words = {**_load(DEFAULT), **(_load(lang) if lang != DEFAULT else {})}

    def __call__(self, key: str, **fields: Any) -> str:
        try:
            text = self._words[key]
        except KeyError:
            raise KeyError(f"no text {key!r} in meshnode/web/text/{DEFAULT}/") from None
        return text.format(**fields) if fields else text

    def has(self, key: str) -> bool:
        return key in self._words


@cache
def _load(lang: str) -> dict[str, str]:
    """Every ``area.key`` of one language (empty if the language has no folder)."""
    folder = resources.files("meshnode.web") / "text" / lang
    if not folder.is_dir():
        return {}
    out: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        area = entry.name[: -len(".toml")]
        for key, value in tomllib.loads(entry.read_text(encoding="utf-8")).items():
            if not isinstance(value, str):
                raise ValueError(f"meshnode/web/text/{lang}/{entry.name}: {key} must be text")
            out[f"{area}.{key}"] = value
    return out


def languages() -> list[str]:
    folder = resources.files("meshnode.web") / "text"
    return sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("_"))
