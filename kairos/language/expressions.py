"""One expression language for conditions and templates: Jinja, sandboxed.

Conditions are evaluated inside workflows, so this module is pure: no I/O, no clock, no
randomness (the compiler refuses ``| random`` and ``lipsum`` in conditions). The data is JSON:

* ``event.items`` is the event's ``items`` property, never the ``dict.items`` method: on a
  mapping, ``a.b`` reads the key ``b`` and nothing else;
* a missing property and one sent as ``null`` are both *undefined*: falsy, and every ordering
  comparison with it (``<``, ``<=``, ``>``, ``>=``) is false, so ``event.total > 0`` is false
  for an order without a total instead of an error;
* anything else that cannot be evaluated (``"a" > 1``, a missing filter argument) raises
  ExpressionError; the journey records it on the run and treats the condition as false.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kairos.language.template_safety import GuardedSandbox, Unsafe, too_deep, unsafe

ROOTS = ("customer", "event", "journey")
# What would make a condition answer differently each time it is evaluated (a replay of the
# run could then take another path).
NONDETERMINISTIC_FILTERS = frozenset({"random"})
NONDETERMINISTIC_GLOBALS = frozenset({"lipsum"})


class ExpressionError(ValueError):
    """A condition that does not parse or cannot be evaluated."""


class Missing(ChainableUndefined):
    """A property or attribute that is not there (or null): falsy, never ordered."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        return False


class DataEnvironment(GuardedSandbox, ImmutableSandboxedEnvironment):
    """Sandboxed; on a mapping ``a.b`` is the key ``b`` (or undefined), never a method."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            value = obj.get(attribute)
            return self.undefined(obj=obj, name=attribute) if value is None else value
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Mapping) and isinstance(argument, str):
            return self.getattr(obj, argument)
        return super().getitem(obj, argument)


def _environment() -> ImmutableSandboxedEnvironment:
    return DataEnvironment(undefined=Missing, autoescape=False)


_ENV = _environment()
# Jinja imports its lexer, parser and compiler lazily; workflows import this module through the
# sandbox's pass-through, so load them now rather than in the middle of a workflow task.
_ENV.from_string("{{ warm | default(1) }}").render()


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> Any:
    try:
        return _ENV.compile_expression(expression, undefined_to_none=False)
    except TemplateError as exc:
        raise ExpressionError(f"invalid expression {expression!r}: {exc}") from exc


def check_syntax(expression: str) -> str | None:
    """Return a message if ``expression`` does not parse, else None."""
    deep = too_deep("{{ " + expression + " }}")
    if deep is not None:
        return deep[1]
    try:
        _compiled(expression)
    except ExpressionError as exc:
        return str(exc.__cause__ or exc)
    return None


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate ``expression`` over ``context`` (``customer``, ``event``, ``journey``)."""
    try:
        return _compiled(expression)(**context)
    except ExpressionError:
        raise
    except Exception as exc:  # a condition that fails at run time is a definition problem
        raise ExpressionError(f"cannot evaluate {expression!r}: {exc}") from exc


def holds(expression: str | None, context: dict[str, Any]) -> bool:
    """True when there is no condition, or the condition is truthy."""
    if expression is None:
        return True
    value = evaluate(expression, context)
    if isinstance(value, ChainableUndefined):
        return False
    return bool(value)


@lru_cache(maxsize=4096)
def _tree(source: str, template: bool) -> nodes.Template:
    """The parsed condition (or ``{{ }}`` text), once per text: journeys repeat conditions and
    a check reads each several times. Only read, never changed."""
    return _ENV.parse(source if template else "{{ " + source + " }}")


def nondeterministic(source: str, *, template: bool = False) -> list[str]:
    """The filters and globals in ``source`` that make it answer differently each time."""
    tree = _tree(source, template)
    found = [
        f"| {n.name}" for n in tree.find_all(nodes.Filter) if n.name in NONDETERMINISTIC_FILTERS
    ]
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in NONDETERMINISTIC_GLOBALS:
            found.append(f"{call.node.name}()")
    return sorted(set(found))


def refused(source: str, *, template: bool = False) -> list[Unsafe]:
    """Sandbox-escape attempts and huge constants in a condition (or ``{{ }}`` text)."""
    return unsafe(_tree(source, template))


def compared_paths(source: str) -> set[tuple[str, ...]]:
    """Dotted paths compared with ``<``, ``<=``, ``>`` or ``>=`` directly in a condition."""
    tree = _tree(source, False)
    found: set[tuple[str, ...]] = set()
    for compare in tree.find_all(nodes.Compare):
        if not any(op.op in ("lt", "lteq", "gt", "gteq") for op in compare.ops):
            continue
        for operand in (compare.expr, *(op.expr for op in compare.ops)):
            path = _dotted(operand)
            if path and len(path) > 1:
                found.add(path)
    return found


def _dotted(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            parts.append(str(node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def referenced_paths(source: str, *, template: bool = False) -> set[tuple[str, ...]]:
    """Dotted variable paths a condition (or, with ``template``, a whole template) reads.

    ``customer.first_name | title`` gives ``{("customer", "first_name")}``. Only the longest
    attribute chain of each name is reported; names bound inside the template (loop variables,
    ``set``) are left out.
    """
    return paths_in(_tree(source, template))


def paths_in(tree: nodes.Template) -> set[tuple[str, ...]]:
    """:func:`referenced_paths` of a template already parsed."""
    bound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    found: set[tuple[str, ...]] = set()
    inner: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        child: nodes.Node = node.node  # type: ignore[attr-defined]
        while isinstance(child, nodes.Getattr | nodes.Getitem):
            inner.add(id(child))
            child = child.node
        inner.add(id(child))
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        path = _dotted(node)
        if (
            path
            and path[0] not in bound
            and not (isinstance(node, nodes.Name) and node.ctx != "load")
        ):
            found.add(path)
    return found


@lru_cache(maxsize=1024)
def _template(source: str) -> Any:
    try:
        return _ENV.from_string(source)
    except TemplateError as exc:
        raise ExpressionError(f"invalid template {source!r}: {exc}") from exc


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render strings containing ``{{`` (recursively in lists and mappings); keep the rest."""
    if isinstance(value, str) and "{{" in value:
        try:
            return _template(value).render(**context)
        except ExpressionError:
            raise
        except Exception as exc:
            raise ExpressionError(f"cannot render {value!r}: {exc}") from exc
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value
