"""A segment's condition compiled to one SQL boolean over ``customers c`` (see
:mod:`kairos.language.segments` for the language): one case per construct, each with its error
(:class:`SegmentSyntaxError`) saying what is wrong and what would be right.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from jinja2 import nodes
from jinja2.exceptions import TemplateSyntaxError

from kairos.language.catalogue import CONSENT_KEYS, Attribute, AttrType, Catalogue, type_problem
from kairos.language.durations import DurationError, parse_duration
from kairos.language.expressions import _ENV, _dotted
from kairos.language.problems import suggestion

FUNCTIONS = ("events", "messages", "days_since")
_SUPPORTED = (
    "customer attributes compared with constants, `in [...]`, events(...), messages(...), "
    "days_since(...), and/or/not"
)

if TYPE_CHECKING:
    from psycopg import sql
else:

    class _Sql(ModuleType):
        """``psycopg.sql``, imported when a condition is first compiled: importing psycopg costs
        a third of ``kairos validate`` on a project without segments, which never needs it."""

        def __getattr__(self, name: str) -> Any:
            from psycopg import sql as real

            return getattr(real, name)

    sql = _Sql("psycopg.sql")


class SegmentSyntaxError(ValueError):
    """A part of a condition that cannot be compiled to SQL: what, and what would be right."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Kind(StrEnum):
    """What a value in a condition is, for choosing the SQL that compares it."""

    text = "text"
    number = "number"
    boolean = "boolean"
    datetime = "datetime"
    list = "list"
    history = "history"  # a history count: never missing, compared with a number only


@dataclass(frozen=True)
class _Value:
    expr: sql.Composable
    kind: Kind
    what: str  # how the author wrote it, for messages
    # For counts: the SQL that lists the customers whose count passes ``HAVING count(*) <op> n``.
    grouped: Callable[[sql.Composable], sql.Composable] | None = None
    # False for expressions that are never NULL (EXISTS): used as they are, so that PostgreSQL
    # can turn them into joins.
    nullable: bool = True


_TEXT_TYPES = (
    AttrType.string,
    AttrType.email,
    AttrType.phone,
    AttrType.locale,
    AttrType.timezone,
)
_ORDERING = {"lt": "<", "lteq": "<=", "gt": ">", "gteq": ">="}
_SQL_OPS = {"eq": "=", "ne": "<>", **_ORDERING}
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
}
_FLIPPED = {"lt": "gt", "lteq": "gteq", "gt": "lt", "gteq": "lteq", "eq": "eq", "ne": "ne"}
_WRITTEN = {"eq": "==", "ne": "!=", **{k: v for k, v in _ORDERING.items()}}


def to_sql(condition: str, catalogue: Catalogue, now: datetime) -> sql.Composable:
    """``condition`` as a SQL boolean (never NULL) over ``customers c``, at ``now``.

    Raises:
        SegmentSyntaxError: A part of the condition that SQL cannot answer, or that names
            something the catalogue does not declare.
    """
    return compile_condition(condition, catalogue, moment(now))


@cache
def now_marker() -> sql.Composable:
    """Where a condition compiled once reads the moment; :func:`at` puts the moment in its
    place (made on first use, so importing this module does not import psycopg)."""
    return sql.SQL("now()")


def moment(now: datetime) -> sql.Composable:
    return sql.SQL("{}::timestamptz").format(sql.Literal(now.isoformat()))


def at(part: sql.Composable, now: sql.Composable) -> sql.Composable:
    """A compiled condition with its placeholder for the moment (:func:`now_marker`) filled in."""
    if part is now_marker():
        return now
    if isinstance(part, sql.Composed):
        return sql.Composed([at(p, now) for p in part])
    return part


def compile_condition(condition: str, catalogue: Catalogue, now: sql.Composable) -> sql.Composable:
    """``condition`` compiled with ``now`` (a moment, or :func:`now_marker`) where it reads
    the time. Raises SegmentSyntaxError as :func:`to_sql` does."""
    try:
        tree = _ENV.parse("{{ " + condition + " }}")
    except TemplateSyntaxError as err:
        raise SegmentSyntaxError(f"the condition does not parse: {err.message}") from None
    output = tree.body[0]
    assert isinstance(output, nodes.Output) and len(output.nodes) == 1
    return _Compiler(catalogue, now).boolean(output.nodes[0])


class _Compiler:
    def __init__(self, catalogue: Catalogue, now: sql.Composable) -> None:
        self.catalogue = catalogue
        self.now = now

    def boolean(self, node: nodes.Node) -> sql.Composable:
        match node:
            case nodes.And():
                return sql.SQL("({} AND {})").format(
                    self.boolean(node.left), self.boolean(node.right)
                )
            case nodes.Or():
                return sql.SQL("({} OR {})").format(
                    self.boolean(node.left), self.boolean(node.right)
                )
            case nodes.Not():
                return sql.SQL("(NOT {})").format(self.boolean(node.node))
            case nodes.Compare():
                return self.compare(node)
            case nodes.Const() if isinstance(node.value, bool):
                return sql.SQL("true" if node.value else "false")
            case _:
                return self.truth(self.value(node))

    def truth(self, value: _Value) -> sql.Composable:
        """A value used alone (``customer.phone``): Jinja's truth, never NULL."""
        match value.kind:
            case Kind.boolean if not value.nullable:
                return value.expr
            case Kind.boolean:
                return sql.SQL("coalesce({}, false)").format(value.expr)
            case Kind.text:
                return sql.SQL("coalesce({} <> '', false)").format(value.expr)
            case Kind.datetime:  # recorded only as ISO dates: present is true
                return sql.SQL("({} IS NOT NULL)").format(value.expr)
            case Kind.number:
                return sql.SQL("coalesce({} <> 0, false)").format(value.expr)
            case Kind.list:
                return sql.SQL("coalesce(jsonb_array_length({}) > 0, false)").format(value.expr)
            case Kind.history:
                return self.count_compare(value, "gt", 0)

    def compare(self, node: nodes.Compare) -> sql.Composable:
        parts: list[sql.Composable] = []
        left = node.expr
        for operand in node.ops:  # a < b < c is a < b and b < c, as in Jinja
            parts.append(self.compare_one(left, operand.op, operand.expr))
            left = operand.expr
        if len(parts) == 1:
            return parts[0]
        return sql.SQL("({})").format(sql.SQL(" AND ").join(parts))

    def compare_one(self, left: nodes.Node, op: str, right: nodes.Node) -> sql.Composable:
        if op in ("in", "notin"):
            found = self.membership(left, right)
            return sql.SQL("(NOT {})").format(found) if op == "notin" else found
        if isinstance(left, nodes.Const | nodes.List | nodes.Tuple | nodes.Neg):
            left, right, op = right, left, _FLIPPED[op]
        if not _constant(right):
            raise SegmentSyntaxError(
                f"`{_source(left)} {_WRITTEN[op]} {_source(right)}` compares two values that "
                "are not constants",
                "compare an attribute, events(...), messages(...) or days_since(...) with a "
                'constant such as 2 or "retention"',
            )
        value, constant = self.value(left), _constant_value(right)
        if constant is None:
            raise SegmentSyntaxError(
                f"`{_source(left)} {_WRITTEN[op]} none`: a missing attribute is not equal to none",
                f"write `not {_source(left)}` for a customer without it",
            )
        if value.kind is Kind.history:
            if not isinstance(constant, int | float) or isinstance(constant, bool):
                raise SegmentSyntaxError(
                    f"{value.what} is a count, compared with {constant!r}",
                    "compare it with a number",
                )
            return self.count_compare(value, op, constant)
        literal = self.literal(value, constant, op)
        symbol = sql.SQL(_SQL_OPS[op])
        # != is true for a missing attribute (as in journeys); every other comparison false.
        # Written without coalesce, so that an index on the attribute (stage) can serve it.
        if op == "ne":
            return sql.SQL("({0} IS NULL OR {0} {1} {2})").format(value.expr, symbol, literal)
        return sql.SQL("({0} IS NOT NULL AND {0} {1} {2})").format(value.expr, symbol, literal)

    def literal(self, value: _Value, constant: Any, op: str) -> sql.Composable:
        """``constant`` as SQL of ``value``'s kind, or why they cannot be compared."""
        wrong = SegmentSyntaxError(
            f"{value.what} is {_KINDS[value.kind][0]}, compared with {constant!r}",
            f"compare it with {_KINDS[value.kind][1]}",
        )
        match value.kind:
            case Kind.number:
                if isinstance(constant, bool) or not isinstance(constant, int | float):
                    raise wrong
                return sql.Literal(constant)
            case Kind.text:
                if not isinstance(constant, str):
                    raise wrong
                return sql.Literal(constant)
            case Kind.boolean:
                if not isinstance(constant, bool) or op not in ("eq", "ne"):
                    raise wrong
                return sql.Literal(constant)
            case Kind.datetime:
                if not isinstance(constant, str) or type_problem(AttrType.datetime, constant):
                    raise wrong
                return sql.SQL("{}::timestamptz").format(sql.Literal(constant))
            case _:
                raise SegmentSyntaxError(
                    f"{value.what} is a list and cannot be compared with `{_WRITTEN[op]}`",
                    f'test membership instead: `"value" in {value.what}`',
                )

    def membership(self, left: nodes.Node, right: nodes.Node) -> sql.Composable:
        if isinstance(right, nodes.List | nodes.Tuple) and _constant(right):
            value = self.value(left)
            items = _constant_value(right)
            if value.kind not in (Kind.text, Kind.number) or not items:
                raise SegmentSyntaxError(
                    f"`{_source(left)} in [...]` needs a text or number attribute and a list "
                    "of constants",
                    'such as customer.stage in ["retention", "advocacy"]',
                )
            literals = [self.literal(value, item, "eq") for item in items]
            return sql.SQL("({0} IS NOT NULL AND {0} IN ({1}))").format(
                value.expr, sql.SQL(", ").join(literals)
            )
        if _constant(left) and not isinstance(left, nodes.List | nodes.Tuple):
            value = self.value(right)
            item = _constant_value(left)
            if value.kind is Kind.list:
                return sql.SQL("coalesce({} @> jsonb_build_array({}), false)").format(
                    value.expr, sql.Literal(item)
                )
            if value.kind is Kind.text and isinstance(item, str):
                return sql.SQL("coalesce(strpos({}, {}) > 0, false)").format(
                    value.expr, sql.Literal(item)
                )
        raise SegmentSyntaxError(
            f"`{_source(left)} in {_source(right)}` cannot be answered by the store",
            'write customer.attribute in ["a", "b"], or "value" in customer.list_attribute',
        )

    # --- values ---------------------------------------------------------------------------

    def value(self, node: nodes.Node) -> _Value:
        if isinstance(node, nodes.Call):
            return self.call(node)
        path = _dotted(node)
        if path is None:
            raise SegmentSyntaxError(
                f"`{_source(node)}` cannot be answered by the customer store",
                f"segments use {_SUPPORTED}",
            )
        if path[0] != "customer":
            raise SegmentSyntaxError(
                f"`{'.'.join(path)}`: a segment reads `customer` only",
                "events and journeys are counted with events(...) and messages(...)",
            )
        return self.customer(path)

    def customer(self, path: tuple[str, ...]) -> _Value:
        shown = ".".join(path)
        if len(path) == 1:
            raise SegmentSyntaxError(
                "`customer` alone is no condition", "name an attribute: customer.stage"
            )
        name = path[1]
        if name in ("id", "stage") and len(path) == 2:
            return _Value(sql.SQL("c.{}").format(sql.Identifier(name)), Kind.text, shown)
        if name == "consent" and len(path) == 3 and path[2] in CONSENT_KEYS:
            return _Value(_consent(path[2]), Kind.boolean, shown, nullable=False)
        if name == "consent":
            topics = ", ".join(f"customer.consent.{k}" for k in CONSENT_KEYS)
            raise SegmentSyntaxError(f"`{shown}` is no consent topic", f"use one of {topics}")
        attr = self.catalogue.profile.get(name)
        if attr is None:
            known = [*self.catalogue.profile, "id", "stage", "consent"]
            raise SegmentSyntaxError(
                f"`{shown}`: customer.yaml declares no profile attribute `{name}`",
                suggestion(name, known, kind="attributes"),
            )
        if len(path) > 2:
            raise SegmentSyntaxError(
                f"`{shown}`: segments read whole attributes only", f"use customer.{name}"
            )
        return _attribute(name, attr, shown)

    def call(self, node: nodes.Call) -> _Value:
        name = node.node.name if isinstance(node.node, nodes.Name) else _source(node.node)
        if name not in FUNCTIONS:
            raise SegmentSyntaxError(
                f"`{name}(...)` is not a segment function", f"use {', '.join(FUNCTIONS)}"
            )
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise SegmentSyntaxError(f"`{name}(...)`: write its arguments out")
        kwargs = {kw.key: kw.value for kw in node.kwargs}
        if name == "days_since":
            return self.days_since(node.args, kwargs)
        return self.history(name, node.args, kwargs)

    def days_since(self, args: list[nodes.Expr], kwargs: dict[str, nodes.Expr]) -> _Value:
        if len(args) != 1 or kwargs:
            raise SegmentSyntaxError(
                "days_since(...) takes one date attribute", "days_since(customer.last_order_at)"
            )
        value = self.value(args[0])
        if value.kind is not Kind.datetime:
            raise SegmentSyntaxError(
                f"days_since({value.what}): {value.what} is no date attribute",
                "use a profile attribute of type datetime or date",
            )
        days = sql.SQL("(extract(epoch FROM {} - {}) / 86400)").format(self.now, value.expr)
        return _Value(days, Kind.number, f"days_since({value.what})")

    def history(self, name: str, args: list[nodes.Expr], kwargs: dict[str, nodes.Expr]) -> _Value:
        allowed = {"events": ("within",), "messages": ("within", "channel", "journey")}[name]
        unknown = [k for k in kwargs if k not in allowed]
        if unknown or not all(_constant(v) for v in (*args, *kwargs.values())):
            raise SegmentSyntaxError(
                f"{name}(...) takes constants: {', '.join(allowed)}",
                'such as events("order_placed", within="90d")',
            )
        options = {k: _constant_value(v) for k, v in kwargs.items()}
        filters: list[sql.Composable] = []
        if name == "events":
            if len(args) != 1 or not isinstance(event := _constant_value(args[0]), str):
                raise SegmentSyntaxError(
                    "events(...) takes the event's name", 'such as events("order_placed")'
                )
            if event not in self.catalogue.events:
                raise SegmentSyntaxError(
                    f'events("{event}"): customer.yaml declares no event `{event}`',
                    suggestion(event, list(self.catalogue.events), kind="events"),
                )
            table, at = sql.SQL("events"), sql.SQL("occurred_at")
            filters.append(sql.SQL("name = {}").format(sql.Literal(event)))
            what = f'events("{event}")'
        else:
            if args:
                raise SegmentSyntaxError(
                    "messages(...) takes only channel=, journey= and within=",
                    'such as messages(channel="sms", within="7d")',
                )
            table, at = sql.SQL("messages"), sql.SQL("sent_at")
            filters.append(sql.SQL("status = 'sent'"))
            channel = options.get("channel")
            if channel is not None:
                if channel not in ("email", "sms"):
                    raise SegmentSyntaxError(f"messages(channel={channel!r})", "email or sms")
                filters.append(sql.SQL("channel = {}").format(sql.Literal(channel)))
            if options.get("journey") is not None:
                filters.append(sql.SQL("journey = {}").format(sql.Literal(str(options["journey"]))))
            what = "messages(...)"
        within = options.get("within")
        if within is not None:
            try:
                seconds = parse_duration(within)
            except DurationError as err:
                raise SegmentSyntaxError(f"{what}: within={within!r}: {err}") from None
            if seconds <= 0:
                raise SegmentSyntaxError(
                    f"{what}: within={within!r} is no time window", "such as 90d"
                )
            filters.append(
                sql.SQL("{} >= {} - {} * interval '1 second'").format(
                    at, self.now, sql.Literal(seconds)
                )
            )
        where = sql.SQL(" AND ").join(filters)

        def grouped(having: sql.Composable) -> sql.Composable:
            return sql.SQL(
                "SELECT customer_id FROM {} WHERE {} GROUP BY customer_id HAVING {}"
            ).format(table, where, having)

        count = sql.SQL("(SELECT count(*) FROM {} WHERE customer_id = c.id AND {})").format(
            table, where
        )
        return _Value(count, Kind.history, what, grouped)

    def count_compare(self, value: _Value, op: str, number: float) -> sql.Composable:
        """A history count compared with a number, as a set of customers: those with events
        that pass, or everyone but those with events that fail (a count of 0 has no rows)."""
        assert value.grouped is not None
        having = sql.SQL("count(*) {} {}").format(sql.SQL(_SQL_OPS[op]), sql.Literal(number))
        if _PY_OPS[op](0, number):
            # NOT EXISTS over the grouped rows, not NOT IN: PostgreSQL turns it into an anti
            # join; NOT IN is run per customer when the rows do not fit in work_mem.
            failing = value.grouped(sql.SQL("NOT ({})").format(having))
            return sql.SQL(
                "(NOT EXISTS (SELECT 1 FROM ({}) failing WHERE failing.customer_id = c.id))"
            ).format(failing)
        return sql.SQL("(c.id IN ({}))").format(value.grouped(having))


def _consent(topic: str) -> sql.Composable:
    """Consent as journeys see it: email until withdrawn, sms and marketing once granted."""
    if topic == "transactional":
        return sql.SQL("true")
    match = sql.SQL(
        "SELECT 1 FROM consent k WHERE k.customer_id = c.id AND k.topic = {} AND {}k.granted"
    )
    if topic == "email":
        return sql.SQL("(NOT EXISTS ({}))").format(
            match.format(sql.Literal(topic), sql.SQL("NOT "))
        )
    return sql.SQL("(EXISTS ({}))").format(match.format(sql.Literal(topic), sql.SQL("")))


def _attribute(name: str, attr: Attribute, shown: str) -> _Value:
    key = sql.Literal(name)
    if attr.type in _TEXT_TYPES:
        return _Value(sql.SQL("(c.profile ->> {})").format(key), Kind.text, shown)
    if attr.type in (AttrType.number, AttrType.integer):
        typed = sql.SQL(
            "(CASE WHEN jsonb_typeof(c.profile -> {0}) = 'number'"
            " THEN (c.profile ->> {0})::numeric END)"
        ).format(key)
        return _Value(typed, Kind.number, shown)
    if attr.type is AttrType.boolean:
        typed = sql.SQL(
            "(CASE WHEN jsonb_typeof(c.profile -> {0}) = 'boolean'"
            " THEN (c.profile ->> {0})::boolean END)"
        ).format(key)
        return _Value(typed, Kind.boolean, shown)
    if attr.type in (AttrType.datetime, AttrType.date):
        # Profile values are checked to be ISO dates when they are recorded.
        return _Value(sql.SQL("(c.profile ->> {})::timestamptz").format(key), Kind.datetime, shown)
    if attr.type is AttrType.list:
        typed = sql.SQL(
            "(CASE WHEN jsonb_typeof(c.profile -> {0}) = 'array' THEN c.profile -> {0} END)"
        ).format(key)
        return _Value(typed, Kind.list, shown)
    raise SegmentSyntaxError(
        f"`{shown}` is an object; segments compare plain values", "use a plain attribute"
    )


def _constant(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Neg):
        return isinstance(node.node, nodes.Const) and isinstance(node.node.value, int | float)
    if isinstance(node, nodes.List | nodes.Tuple):
        return all(isinstance(item, nodes.Const) for item in node.items)
    return isinstance(node, nodes.Const)


def _constant_value(node: nodes.Node) -> Any:
    if isinstance(node, nodes.Neg):
        return -node.node.value  # type: ignore[attr-defined]
    if isinstance(node, nodes.List | nodes.Tuple):
        return [item.value for item in node.items]  # type: ignore[attr-defined]
    return node.value  # type: ignore[attr-defined]


def _source(node: nodes.Node) -> str:
    """A short rendering of ``node`` for messages."""
    path = _dotted(node)
    if path is not None:
        return ".".join(path)
    if isinstance(node, nodes.Const):
        return repr(node.value)
    if isinstance(node, nodes.Call):
        return f"{_source(node.node)}(...)"
    if isinstance(node, nodes.Filter) and node.node is not None:
        return f"{_source(node.node)} | {node.name}"
    if isinstance(node, nodes.Test):
        return f"{_source(node.node)} is {node.name}"
    if isinstance(node, nodes.Name):
        return node.name
    return type(node).__name__.lower()


# Each kind of value: what it is, and what it may be compared with.
_KINDS = {
    Kind.number: ("a number", "a number such as 50"),
    Kind.text: ("text", 'text such as "retention"'),
    Kind.boolean: ("true or false", "true or false, with == or !="),
    Kind.datetime: ("a date", 'an ISO date such as "2026-01-31", or use days_since(...)'),
    Kind.list: ("a list", "nothing: test membership with `in`"),
    Kind.history: ("a count", "a number"),
}
