"""Problems found in a project, and how they are shown to the person who has to fix them.

Every problem names a place (``file:line:col``), the path inside the document
(``steps[2].wait_for``), what is wrong and, in parentheses, what would be right::

    journeys/cart.yaml:7:11: steps[1].wait: `3 dayz` is not a duration (did you mean `3 days`?)
        7 |   - wait: 3 dayz
          |           ^

A :class:`Report` collects problems from every file so that all of them are reported at once;
:class:`ProjectError` carries a report that contains errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) at one place.

    Attributes:
        file: The file as the author knows it, relative to the project home
            (``journeys/welcome.yaml``).
        line: 1-based line.
        col: 1-based column.
        path: Where inside the document, such as ``steps[2].timeout``; empty for the whole file.
        message: What is wrong, in the author's words.
        hint: What would be right; shown in parentheses after the message.
        severity: ``error`` stops the project from loading; ``warning`` does not.
        note: An extra line, such as the journey step that uses a broken template.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    hint: str = ""
    severity: Severity = "error"
    note: str = ""

    @property
    def location(self) -> str:
        """``file:line:col``."""
        return f"{self.file}:{self.line}:{self.col}"

    def headline(self) -> str:
        """The one-line form: ``file:line:col: path: message (hint)``.

        Warnings say so after the location, as compilers do; errors do not.
        """
        parts = [self.location]
        if self.severity == "warning":
            parts.append("warning")
        if self.path:
            parts.append(self.path)
        text = self.message + (f" ({self.hint})" if self.hint else "")
        return ": ".join([*parts, text])

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.col, self.path, self.message)


@dataclass
class Report:
    """Problems collected from a whole project, with the source text needed to show them."""

    problems: list[Problem] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        """Record ``problem`` unless the very same one is already recorded."""
        if problem not in self.problems:
            self.problems.append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.add(problem)

    def add_source(self, file: str, text: str) -> None:
        """Remember the text of ``file`` so problems in it can quote the offending line."""
        self.sources[file] = text

    def merge(self, other: Report) -> None:
        self.sources.update(other.sources)
        self.extend(other.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.sorted() if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.sorted() if p.severity == "warning"]

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def only(self, severity: Severity) -> Report:
        """A report with just the problems of one severity (and the same sources)."""
        kept = [p for p in self.problems if p.severity == severity]
        return Report(problems=kept, sources=dict(self.sources))

    def sorted(self) -> list[Problem]:
        """Problems in reading order: by file, then line and column."""
        return sorted(self.problems, key=Problem.sort_key)

    def headlines(self) -> list[str]:
        return [p.headline() for p in self.sorted()]

    def snippet(self, problem: Problem) -> str:
        """The offending source line with a caret under the column, or "" if unknown."""
        text = self.sources.get(problem.file)
        if text is None:
            return ""
        lines = text.splitlines()
        if not 1 <= problem.line <= len(lines):
            return ""
        # Tabs become spaces so that the caret lines up whatever the terminal's tab width.
        source = lines[problem.line - 1].replace("\t", " ")
        number = str(problem.line)
        gutter = " " * len(number)
        caret = " " * max(problem.col - 1, 0) + "^"
        return f"    {number} | {source}\n    {gutter} | {caret}"

    def format(self, *, snippets: bool = True) -> str:
        """Every problem, each as its headline, the quoted line and a caret."""
        blocks: list[str] = []
        for problem in self.sorted():
            block = [problem.headline()]
            quoted = self.snippet(problem) if snippets else ""
            if quoted:
                block.append(quoted)
            if problem.note:
                block.append(f"    note: {problem.note}")
            blocks.append("\n".join(block))
        return "\n".join(blocks)

    def summary(self) -> str:
        """``2 errors, 1 warning`` (or ``no problems``)."""
        errors = sum(1 for p in self.problems if p.severity == "error")
        warnings = len(self.problems) - errors
        if not errors and not warnings:
            return "no problems"
        parts = []
        if errors:
            parts.append(plural(errors, "error"))
        if warnings:
            parts.append(plural(warnings, "warning"))
        return ", ".join(parts)


class ProjectError(Exception):
    """The project does not compile. ``report`` holds every problem; str() formats them."""

    def __init__(self, report: Report) -> None:
        self.report = report
        super().__init__(report.format())

    def __str__(self) -> str:
        return self.report.format()


def plural(count: int, noun: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def did_you_mean(word: str, options: Iterable[str]) -> str | None:
    """The option closest to ``word`` when one is close enough to be a likely typo."""
    candidates = sorted(set(options))
    lowered = {o.lower(): o for o in candidates}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return lowered[word.lower()]
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None


def quote_list(options: Iterable[str], *, limit: int = 12, conj: str = "or") -> str:
    """``a, b or c`` with each name in backticks; long lists end with ``...``."""
    names = [f"`{o}`" for o in options]
    if not names:
        return "none"
    if len(names) > limit:
        return ", ".join(names[:limit]) + ", ..."
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + f" {conj} " + names[-1]


def suggestion(word: str, options: Iterable[str], *, kind: str = "") -> str:
    """A hint for an unknown name: ``did you mean `x`?`` or the list of what is allowed.

    ``kind`` names the list, as in ``declared events: `a` or `b```.
    """
    choices = sorted(set(options))
    close = did_you_mean(word, choices)
    if close is not None:
        return f"did you mean `{close}`?"
    if not choices:
        return f"there are no {kind}" if kind else ""
    label = f"{kind}: " if kind else "expected "
    return label + quote_list(choices)
