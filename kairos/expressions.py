"""One expression language for conditions and templates: Jinja, sandboxed.

Conditions are evaluated inside workflows, so this module is pure: no I/O, no clock, no
randomness. Undefined names in a *condition* are falsy (an optional attribute that a customer
lacks is simply not there); the compiler has already checked that every name is declared.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOTS = ("customer", "event", "journey")


class ExpressionError(ValueError):
    """A condition that does not parse or cannot be evaluated."""


def _environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


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
    tree = _ENV.parse(source if template else "{{ " + source + " }}")
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
