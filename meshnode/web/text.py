"""The page's words, kept out of the templates: one TOML file per page area and language.

``meshnode/web/text/<lang>/<area>.toml`` holds flat ``key = "text"`` pairs;
a template asks for ``t("area.key", name=...)`` and gets the text with its
``{name}`` fields filled in (``str.format``; the values are escaped by
Jinja2 like any other). English (``en``) is complete; another language
(French first) is a folder of the same files, and any key it lacks falls
back to English. A key missing in English is an error (tests find it).
Each request is answered in the first language of its ``Accept-Language``
the page has (:meth:`Text.choose`, set by the app's guard), else in the
node's default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from typing import Any

DEFAULT = "en"


#: The language of the request being answered (set by :meth:`Text.use` for each request).
_current: ContextVar[str | None] = ContextVar("meshnode_web_lang", default=None)


class Text:
    """The words of the languages the page has, English behind each; the request's language is used."""

    def __init__(self, lang: str = DEFAULT) -> None:
        self.default = lang if lang in languages() else DEFAULT

    @property
    def lang(self) -> str:
        """The language of the request being answered (the default outside one)."""
        return _current.get() or self.default

    def __call__(self, key: str, **fields: Any) -> str:
        lang = self.lang
        text = _load(lang).get(key) if lang != DEFAULT else None
        if text is None:
            try:
                text = _load(DEFAULT)[key]
            except KeyError:
                raise KeyError(f"no text {key!r} in meshnode/web/text/{DEFAULT}/") from None
        return text.format(**fields) if fields else text

    def has(self, key: str) -> bool:
        return key in _load(DEFAULT)

    def choose(self, accept_language: str | None) -> str:
        """The first language of an ``Accept-Language`` header the page has (``fr-CH`` counts as ``fr``)."""
        have = set(languages())
        ranked = []
        for i, part in enumerate((accept_language or "").split(",")):
            tag, _, params = part.strip().partition(";")
            q = 1.0
            if params.strip().startswith("q="):
                try:
                    q = float(params.strip()[2:])
                except ValueError:
                    q = 0.0
            ranked.append((-q, i, tag.strip().lower().split("-")[0]))
        for _, _, tag in sorted(ranked):
            if tag in have:
                return tag
        return self.default

    @contextmanager
    def use(self, lang: str) -> Iterator[None]:
        """Answer one request in ``lang``."""
        token = _current.set(lang)
        try:
            yield
        finally:
            _current.reset(token)


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


@cache
def languages() -> list[str]:
    folder = resources.files("meshnode.web") / "text"
    return sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("_"))
