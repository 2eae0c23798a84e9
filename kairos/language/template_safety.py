"""What a template, condition or set value may not do, found in its parsed tree.

Templates and expressions render in Jinja's sandbox, which stops an escape when the message is
sent; ``kairos validate`` refuses the same attempts earlier, with ``file:line``:

* reading an attribute whose name starts with ``_`` (``customer.__class__``), through ``.``,
  ``[...]`` or the ``attr`` filter, and the other ways out of the data that sandbox escapes
  use (``.format(...)``, ``.mro()``, frame and code attributes);
* a constant expression that would make something huge: Jinja's compiler computes constant
  expressions while compiling, so ``{{ 'x' * 200000000 }}`` would allocate 200 MB before a
  single message is rendered.

The environments also guard at run time (:func:`guarded_binop`, :func:`guarded_call`, and
:data:`INTERCEPTED_BINOPS`, which stops the compiler from folding those operators at all), so
data that only exists at send time cannot do what a constant may not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_CONSTANT = 100_000
"""The most characters or items an expression may make by repeating or padding."""
MAX_DIGITS = 1_000
"""The most digits ``a ** b`` may have."""

MAX_NESTING = 40
"""The deepest brackets (``(``, ``[``, ``{``) may nest in a template or an expression."""
MAX_CHAIN = 100
"""The most operators, filters, ``.`` and brackets one ``{{ }}`` or ``{% %}`` may hold."""
_CHAINING = frozenset({".", "|", "+", "-", "*", "/", "//", "%", "**"})
_CHAINING_WORDS = frozenset({"and", "or", "not", "if", "is", "in"})
_LEXER = Environment()
NESTING_HINT = "split it into smaller expressions; nobody can read one this deep"

INTERCEPTED_BINOPS = frozenset({"*", "**", "%"})
"""Operators the sandbox calls :func:`guarded_binop` for; they are never folded at compile time."""

# Attributes sandbox escapes walk through that do not start with an underscore.
_INTERNALS = frozenset(
    {
        "mro",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "func_globals",
        "func_code",
        "im_func",
        "im_self",
    }
)
# Methods that format by attribute path (`"{0.__class__}".format(x)`), a classic escape.
_FORMATTING = frozenset({"format", "format_map"})
# Filters and string methods whose numeric argument is how long the result is.
_PADDING = frozenset({"center", "indent", "ljust", "rjust", "zfill", "expandtabs"})
_WIDTH = re.compile(r"%[-+ #0]*(\d+)|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")
_INTERNALS_HINT = "a template reads only its data: customer, event, journey and message fields"


def too_deep(source: str) -> tuple[int, str] | None:
    """The line where an expression first gets too deep for Jinja to compile, and why.

    Jinja's parser recurses about a dozen frames per bracket, and its compiler a few per
    operator, filter or ``.`` in a chain, which Python then nests in parentheses of its own: a
    few hundred of either raise RecursionError (or Python's "too many nested parentheses")
    instead of a located error. This reads Jinja's lexer, which does not recurse, so it is safe
    on anything; text outside ``{{ }}`` and ``{% %}`` is not counted.
    """
    depth = chain = 0
    try:
        for line, kind, value in _LEXER.lex(source):
            if kind in ("variable_begin", "block_begin"):
                depth = chain = 0
            elif kind == "operator" and value in "([{":
                depth += 1
                chain += 1
            elif kind == "operator" and value in ")]}":
                depth -= 1
            elif (kind == "operator" and value in _CHAINING) or (
                kind == "name" and value in _CHAINING_WORDS
            ):
                chain += 1
            if depth > MAX_NESTING:
                return line, f"brackets nest more than {MAX_NESTING} deep"
            if chain > MAX_CHAIN:
                return line, f"more than {MAX_CHAIN} operators, filters and `.` in one expression"
    except TemplateSyntaxError:
        return None  # the parser says what is wrong, in its own words
    return None


@dataclass(frozen=True)
class Unsafe:
    """One thing refused: its line in the template, what and why, and text to point at."""

    line: int
    message: str
    hint: str
    needle: str


def unsafe(tree: nodes.Node) -> list[Unsafe]:
    """Every escape attempt and huge constant in ``tree``, outermost first."""
    found: list[Unsafe] = []
    inside_reported: set[int] = set()
    for node in tree.find_all(nodes.Expr):
        if id(node) in inside_reported:
            continue
        problem = _escape(node) or _huge(node)
        if problem is not None:
            found.append(problem)
            inside_reported.update(id(n) for n in node.find_all(nodes.Expr))
    return found


def _escape(node: nodes.Expr) -> Unsafe | None:
    name: Any = None
    if isinstance(node, nodes.Getattr):
        name = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        name = node.arg.value
    elif isinstance(node, nodes.Filter) and node.name == "attr":
        return Unsafe(
            node.lineno,
            "the `attr` filter reads Python attributes, not your data",
            "write `value.name` or `value['name']`",
            "attr",
        )
    elif (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr in _FORMATTING
    ):
        return Unsafe(
            node.lineno,
            f"`.{node.node.attr}(...)` can read Python internals through its placeholders",
            "join text with `~`, such as `'Hi ' ~ customer.first_name`",
            node.node.attr,
        )
    if isinstance(name, str) and (name.startswith("_") or name in _INTERNALS):
        return Unsafe(
            node.lineno, f"`{name}` is Python internals, not your data", _INTERNALS_HINT, name
        )
    return None


def _huge(node: nodes.Expr) -> Unsafe | None:
    size = _size(node)
    if size is None:
        return None
    made, what = size
    if made <= (MAX_DIGITS if what == "digits" else MAX_CONSTANT):
        return None
    limit = MAX_DIGITS if what == "digits" else MAX_CONSTANT
    return Unsafe(
        node.lineno,
        f"this expression makes {made:,} {what}",
        f"keep it under {limit:,}; Jinja works constants out while compiling",
        _needle(node),
    )


def _size(node: nodes.Expr) -> tuple[int, str] | None:
    """How long what ``node`` makes would be, when that is known without making it."""
    if isinstance(node, nodes.Mul):
        left, right = _value(node.left), _value(node.right)
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                return len(seq) * max(times, 0), _unit(seq)
    if isinstance(node, nodes.Pow):
        base, exponent = _value(node.left), _value(node.right)
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            return len(str(abs(base))) * exponent, "digits"
    if isinstance(node, nodes.Mod):
        text = _value(node.left)
        if isinstance(text, str):
            return _widest(text), "characters"
    if isinstance(node, nodes.Filter) and node.name in _PADDING:
        return _widest_argument(node.args, node.kwargs), "characters"
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr in _PADDING
    ):
        return _widest_argument(node.args, node.kwargs), "characters"
    return None


def _value(node: nodes.Expr) -> Any:
    """The constant ``node`` is, folding repetition by its size only; else None."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        return [None] * len(node.items)
    if isinstance(node, nodes.Neg):
        inner = _value(node.node)
        return -inner if isinstance(inner, int) else None
    if isinstance(node, nodes.Mul):
        size = _size(node)
        if size is not None and size[0] <= MAX_CONSTANT:
            return "x" * size[0]
        left, right = _value(node.left), _value(node.right)
        if isinstance(left, int) and isinstance(right, int) and abs(left * right) < 10**MAX_DIGITS:
            return left * right
    if isinstance(node, nodes.Pow):
        size = _size(node)
        base, exponent = _value(node.left), _value(node.right)
        small = size is None or size[0] <= MAX_DIGITS
        if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0 and small:
            return base**exponent
    if isinstance(node, nodes.Add | nodes.Concat):
        parts = [
            _value(n)
            for n in (node.nodes if isinstance(node, nodes.Concat) else (node.left, node.right))
        ]
        if all(isinstance(part, str) for part in parts):
            return "x" * min(sum(len(part) for part in parts), MAX_CONSTANT + 1)
    return None


def _unit(seq: object) -> str:
    return "characters" if isinstance(seq, str) else "items"


def _widest(text: str) -> int:
    return max((int(m.group(1) or m.group(2)) for m in _WIDTH.finditer(text)), default=0)


def _widest_argument(args: list[nodes.Expr], kwargs: list[Any]) -> int:
    values = [_value(arg) for arg in [*args, *(k.value for k in kwargs)]]
    return max((v for v in values if isinstance(v, int) and not isinstance(v, bool)), default=0)


def _needle(node: nodes.Node) -> str:
    for const in node.find_all(nodes.Const):
        if isinstance(const.value, str):
            return repr(const.value)[1:-1]
        return str(const.value)
    return ""


# -- At send time ----------------------------------------------------------------------------


class GuardedSandbox(SandboxedEnvironment):
    """Jinja's sandbox that also refuses huge repetition, powers, padding and %-widths."""

    intercepted_binops = INTERCEPTED_BINOPS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        guard_filters(self.filters)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return guarded_binop(operator, left, right, self.binop_table)

    def call(
        __self,
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        guarded_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def guarded_binop(
    operator: str, left: Any, right: Any, table: dict[str, Callable[..., Any]]
) -> Any:
    """``left <operator> right`` unless the result would be huge."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                _check(len(seq) * max(times, 0), "characters or items")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left) > 1:
            _check(len(str(abs(left))) * right, "digits", MAX_DIGITS)
    elif operator == "%" and isinstance(left, str):
        _check(_widest(left), "characters")
    return table[operator](left, right)


def guarded_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a padding method whose width is past the limit (``'x'.ljust(10**9)``)."""
    if getattr(obj, "__name__", "") in _PADDING and isinstance(getattr(obj, "__self__", None), str):
        widths = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
        _check(max(widths, default=0), "characters")


def guard_filters(filters: dict[str, Callable[..., Any]]) -> None:
    """Wrap the padding filters so their width is checked (at run and at compile time)."""
    for name in _PADDING & set(filters):
        filters[name] = _guarded_filter(filters[name])


def _guarded_filter(inner: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(value: Any, *args: Any, **kwargs: Any) -> Any:
        widths = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
        _check(max(widths, default=0), "characters")
        return inner(value, *args, **kwargs)

    guarded.__name__ = getattr(inner, "__name__", "filter")
    if hasattr(inner, "jinja_pass_arg"):
        guarded.jinja_pass_arg = inner.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


def _check(size: int, what: str, limit: int = MAX_CONSTANT) -> None:
    if size > limit:
        raise SecurityError(f"this would make {size:,} {what}; the limit is {limit:,}")
