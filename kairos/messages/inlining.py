"""CSS inlining done once per message shape, not once per customer.

Inlining an email's ``<style>`` into ``style=""`` attributes (``css_inline``, html5ever)
depends on the document's elements, never on the text of a customer's name or the value of a
link. So the HTML part is rendered with every personal value replaced by a marker, and that
*skeleton* is inlined once; the styled skeleton is kept, and each later email of the same shape
only puts its values back, written as the inliner would have written them.

It is an optimisation that must not change a byte. It is refused, and the email inlined as a
whole, wherever a value could change what the inliner does:

- a template in the message's files that captures or post-processes rendered output (block
  ``set``, ``filter`` blocks, macros, call blocks, ``super()``/``self``/``caller``) or names
  a file by an expression (checked once per compiled file, see :func:`faithful_tree`);
- a value that is markup already (``| safe``), written without autoescaping, or holds
  characters the HTML parser rewrites (``\\r``, NUL, surrogates, a leading newline);
- a marker that lands anywhere but text or a quoted attribute other than ``class``, ``id``,
  ``style`` or one a selector tests (so never in ``<style>``, a comment or a tag's name).

A value that is empty or only whitespace is kept in the skeleton as it is (the HTML parser
treats such text differently from other text, in a table for one), and each new shape is
checked against the inliner twice before it is kept: with the customer's own values and
with a probe of quotes, ampersands, spaces and other awkward characters (:func:`_prove`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import css_inline
from jinja2 import nodes, pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape

__all__ = [
    "INLINER",
    "Recording",
    "ShapeCache",
    "Styled",
    "faithful_tree",
    "finalize",
    "recording",
]

# Inline every rule but keep @media and friends in <style>: clients that honour them (most
# mobile ones) need them there, and they cannot be inlined anyway. Rendering never fetches.
INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)

# Private-use characters: no template or value the skeleton path accepts contains them.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_HTML_SPACE = " \t\n\f\r"
# What html5ever would rewrite in a value, so that a marker could not stand for it.
_REWRITTEN = re.compile("[\x00\r\ud800-\udfff]|^\n")
# Template constructs whose rendered output is processed again inside the template.
_CAPTURING = (nodes.FilterBlock, nodes.AssignBlock, nodes.CallBlock, nodes.Macro)
_CAPTURING_NAMES = frozenset({"super", "self", "caller", "varargs", "kwargs"})
_REFERENCES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
# Elements whose content the serializer writes raw, tags a marker must never be inside.
_RAW = "style|script|xmp|iframe|noembed|noframes|noscript|plaintext|textarea|title|pre|listing"
_TOKENS = re.compile(
    rf"<!--.*?-->|<(?P<raw>{_RAW})\b[^>]*>.*?</(?P=raw)\s*>|<[^>]*>", re.DOTALL | re.IGNORECASE
)
_JOINS = re.compile(f"(<[!/?]?|&[#\\w]*){_OPEN}")
_ATTRIBUTE_VALUE = re.compile(r"""\s(?P<name>[^\s"'>/=]+)="[^"]*$""")
_STYLE_BLOCKS = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.DOTALL | re.IGNORECASE)
# Awkward values every new shape is also checked with: quotes, ampersands, brackets, the
# characters of an escaped entity, spaces around text, controls, a non-breaking space.
_PROBE = " a\"b'c&amp;d<e>f=g\xa0h\x01\x7f\x85\u2028 "
# Enough shapes for every message of a project in every locale with and without optional
# parts (a shape is two copies of an email's HTML); past it, an email of a new shape is
# inlined whole (the same bytes, as fast as before shapes).
MAX_SHAPES = 512


@dataclass
class Recording:
    """The personal values of one render, in the order the markers number them."""

    texts: list[str] = field(default_factory=list)
    faithful: bool = True

    def mark(self, text: str) -> Markup:
        """A marker for ``text``, which the HTML would contain escaped."""
        self.texts.append(text)
        number = len(self.texts) - 1
        return _MARKERS[number] if number < len(_MARKERS) else _marker(number)

    def real(self, skeleton: str) -> str:
        """The HTML exactly as an ordinary render writes it."""
        return _MARK.sub(lambda match: escape(self.texts[int(match[1])]), skeleton)


def _marker(number: int) -> Markup:
    return Markup(f"{_OPEN}{number}{_CLOSE}")


_MARKERS = [_marker(number) for number in range(512)]  # made once: Markup() is slow

recording: ContextVar[Recording | None] = ContextVar("kairos_html_recording", default=None)


@pass_eval_context
def finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Jinja's ``finalize``: every ``{{ ... }}`` passes here before it is written."""
    current = recording.get()
    if current is None:
        return value
    if type(value) is str:  # most values, and never markup (a subclass)
        text = value
    elif not hasattr(value, "__html__"):
        text = str(value)  # StrictUndefined raises here, where Jinja's own str() would
    else:
        current.faithful = False
        return value
    if not eval_ctx.autoescape:
        current.faithful = False
        return value
    if not text.strip(_HTML_SPACE):
        return escape(text)
    if _REWRITTEN.search(text):
        current.faithful = False
        return escape(text)
    return current.mark(text)


def faithful_tree(tree: nodes.Template) -> tuple[bool, tuple[str, ...]]:
    """Whether markers in this file's output stay output, and the files it names.

    False when the file captures rendered output, names a file by an expression or writes a
    marker character itself.
    """
    for data in tree.find_all(nodes.TemplateData):
        if _OPEN in data.data or _CLOSE in data.data:
            return False, ()
    if next(tree.find_all(_CAPTURING), None) is not None:
        return False, ()
    if any(name.name in _CAPTURING_NAMES for name in tree.find_all(nodes.Name)):
        return False, ()
    targets: list[str] = []
    for node in tree.find_all(_REFERENCES):
        assert isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport)
        names = _literal_names(node.template)
        if names is None:
            return False, ()
        targets.extend(names)
    return True, tuple(targets)


def _literal_names(node: nodes.Expr) -> list[str] | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, nodes.Tuple | nodes.List):
        found: list[str] = []
        for item in node.items:
            names = _literal_names(item)
            if names is None:
                return None
            found.extend(names)
        return found
    return None


def _in_text(text: str) -> str:
    """A value as html5ever serializes it in text."""
    escaped = text.replace("&", "&amp;").replace("\xa0", "&nbsp;")
    return escaped.replace("<", "&lt;").replace(">", "&gt;")


def _in_attribute(text: str) -> str:
    """A value as html5ever serializes it in a double-quoted attribute."""
    return text.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


@dataclass(frozen=True)
class Styled:
    """An inlined skeleton cut at its markers: each value goes back where its marker was."""

    statics: tuple[str, ...]
    slots: tuple[tuple[int, bool], ...]  # (value number, inside an attribute)

    def fill(self, texts: list[str]) -> str:
        out = [self.statics[0]]
        for (index, attribute), static in zip(self.slots, self.statics[1:], strict=True):
            out.append(_in_attribute(texts[index]) if attribute else _in_text(texts[index]))
            out.append(static)
        return "".join(out)


def _cut(inlined: str, skeleton: str) -> Styled | None:
    """The styled skeleton cut at its markers; None where a marker is not plain text or a
    quoted attribute the stylesheet does not look at, or could join the text before it into
    a tag or a character reference (``<{{ x }}``, ``&{{ x }}``)."""
    if _JOINS.search(skeleton):
        return None
    css = "\n".join(_STYLE_BLOCKS.findall(skeleton))
    contexts: dict[int, bool] = {}
    for match in _MARK.finditer(inlined):
        attribute = _context(inlined, match.start(), css)
        if attribute is None or int(match[1]) in contexts:
            return None
        contexts[int(match[1])] = attribute
    if set(contexts) != {int(number) for number in _MARK.findall(skeleton)}:
        return None
    pieces = _MARK.split(inlined)
    statics = tuple(pieces[0::2])
    slots = tuple((int(number), contexts[int(number)]) for number in pieces[1::2])
    return Styled(statics, slots)


def _context(html: str, at: int, css: str) -> bool | None:
    """False for text, True for a safe attribute value, None for anywhere else."""
    for token in _tokens(html, at):
        if not token.start() < at < token.end():
            continue
        if token.group("raw") or token.group(0).startswith(("<!", "<?", "</")):
            return None
        found = _ATTRIBUTE_VALUE.search(html, token.start(), at)
        if found is None:
            return None
        name = found["name"].lower()
        if name in ("class", "id", "style") or re.search(rf"\[\s*{re.escape(name)}\b", css):
            return None
        if re.search(r"<link\b", token.group(0), re.IGNORECASE) or f":{name}(" in css:
            return None
        return True
    return False


def _tokens(html: str, at: int) -> Iterator[re.Match[str]]:
    for token in _TOKENS.finditer(html):
        if token.start() > at:
            return
        yield token


class ShapeCache:
    """Styled skeletons by skeleton, for one template store."""

    def __init__(self) -> None:
        self._shapes: dict[str, Styled | None] = {}
        self.reused = 0  # renders answered from a kept shape

    def __len__(self) -> int:
        return len(self._shapes)

    def styled(self, skeleton: str, values: Recording, inline: Callable[[str], str]) -> str:
        """The inlined HTML of this render: from its shape when known and proven, else by
        ``inline`` on the whole email (proving the shape for next time)."""
        shape = self._shapes.get(skeleton, False)
        if isinstance(shape, Styled):
            self.reused += 1
            return shape.fill(values.texts)
        real = inline(values.real(skeleton))
        if shape is False and len(self._shapes) < MAX_SHAPES:
            self._shapes[skeleton] = _prove(skeleton, values, real, inline)
        return real


def _prove(
    skeleton: str, values: Recording, real: str, inline: Callable[[str], str]
) -> Styled | None:
    """The shape, if it gives what inlining the whole email gives, for these values and for
    the probe in every place."""
    shape = _cut(inline(skeleton), skeleton)
    if shape is None or shape.fill(values.texts) != real:
        return None
    probe = Recording()
    for _ in values.texts:
        probe.mark(_PROBE)
    if shape.fill(probe.texts) != inline(probe.real(skeleton)):
        return None
    return shape
