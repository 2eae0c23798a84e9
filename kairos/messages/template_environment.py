"""The sandboxed Jinja environment every message renders in: undefined variables are errors
with a name that can be read back, ``a.b`` on template data is always the key ``b``, and each
compiled file is noted for whether its output can carry the markers of
:mod:`kairos.messages.inlining`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, nodes
from jinja2.environment import TemplateModule

from kairos.language.template_safety import GuardedSandbox, guard_filters
from kairos.messages.formatting import FILTERS, GLOBALS
from kairos.messages.inlining import faithful_tree, finalize


class _Undefined(StrictUndefined):
    """StrictUndefined whose message always has one shape, so the name can be read back."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        return f"{self._undefined_name!r} is undefined"


_PLAIN_DATA = frozenset({dict, list, tuple, str, int, float, bool})


class _Environment(GuardedSandbox):
    """Sandboxed; on a mapping ``a.b`` is the key ``b`` and never a method.

    Template data is JSON-like, so ``event.items`` means the event's ``items`` property, which
    the compiler checked against the catalogue, not ``dict.items``; when the event has no
    ``items`` it is undefined, so ``event.items | default([], true)`` gives the empty list.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Compiled file -> (its output can carry markers, the files it names).
        self.faithful: dict[str, tuple[bool, tuple[str, ...]]] = {}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict or isinstance(obj, Mapping):  # the exact type first: ABCs are slow
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        if type(obj) is TemplateModule and not attribute.startswith("_"):
            # What an imported template exports (legal.footers): the sandbox's checks pass
            # any such name whose value is plain data, so plain data skips them.
            value = vars(obj).get(attribute)
            if type(value) in _PLAIN_DATA:
                return value
        return super().getattr(obj, attribute)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A plain dict, not Jinja's ChainMap over the environment's globals: every render
        # copies a template's globals into its context, and set-differences them on every
        # {% import %}, a third of a short part's render time with a ChainMap. The globals
        # are set before the first template loads and never change (_environment).
        return {**self.globals, **(d or {})}

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Jinja's hook for every compile: note, from the very tree compiled, whether the
        # file's output can carry the markers of kairos.messages.inlining, and which files it names.
        if name is not None:
            self.faithful[name] = faithful_tree(source)
        return super()._generate(source, name, filename, defer_init)


def _environment(root: Path) -> _Environment:
    env = _Environment(
        loader=FileSystemLoader(str(root)),
        undefined=_Undefined,
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # a store lives as long as its project: templates are read once
        cache_size=4096,
        finalize=finalize,
    )
    env.filters.update(FILTERS)
    guard_filters(env.filters)
    env.globals.update(GLOBALS)
    return env
