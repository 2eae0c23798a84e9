"""Segments: named audiences (``segments/*.yaml``), conditions compiled to SQL over the store.

A segment is written in the journeys' expression language, over the customer only::

    segment: sms_subscribers_retention
    description: Retention customers who ordered twice and take texts.
    when: >-
      customer.stage == "retention" and customer.consent.sms
      and events("order_placed") >= 2

The condition is a subset of the language that PostgreSQL can answer for every customer at
once, so that no customer is loaded into Python to decide membership:

* ``customer.<attribute>`` (customer.yaml's profile), ``customer.id``, ``customer.stage`` and
  ``customer.consent.email|sms|marketing|transactional``;
* one of them compared with a constant (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``), tested
  with ``in`` / ``not in`` a list of constants, or used alone as a truth value;
* history: ``events("order_placed", within="90d")`` counts the customer's events of that name
  (in the last 90 days), ``messages(channel="sms", within="30d")`` the messages sent to them,
  ``days_since(customer.last_order_at)`` the days since a date attribute; each compared with a
  number;
* ``and``, ``or``, ``not`` and parentheses.

The meaning is the journeys': a missing attribute is falsy and every ordering comparison with
it is false (``customer.lead_score > 50`` is false without a score, ``not (...)`` true), and
``!=`` is true for it. Each part compiles to a SQL boolean that is never NULL, so ``not``
keeps that meaning.

The loading and the queries are here; the condition's compiler is
:mod:`kairos.language.segment_sql`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import nodes
from pydantic import BaseModel, ConfigDict, Field

from kairos.language.catalogue import Catalogue
from kairos.language.expressions import _ENV, check_syntax, refused
from kairos.language.problems import Problem, Report, suggestion
from kairos.language.segment_sql import (
    SegmentSyntaxError,
    at,
    compile_condition,
    moment,
    now_marker,
    to_sql,
)

if TYPE_CHECKING:
    from psycopg import sql

    from kairos.language.yaml_source import YamlDocument
else:
    from kairos.language.segment_sql import sql

SEGMENTS_DIR = "segments"
_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class SegmentSpec(BaseModel):
    """``segments/<name>.yaml`` as written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segment: str = Field(pattern=_NAME_PATTERN)
    description: str = ""
    when: str = Field(min_length=1)


@dataclass(frozen=True)
class Segment:
    """A segment that compiled: its condition, SQL over ``customers c`` at a moment."""

    name: str
    description: str
    when: str
    source: str
    catalogue: Catalogue

    def condition(self, now: datetime) -> sql.Composable:
        """The condition as a SQL boolean at ``now`` (history windows and ``days_since``
        count back from it, so tests choose the moment). It holds no placeholders."""
        return at(self._compiled, moment(now))

    @cached_property
    def _compiled(self) -> sql.Composable:
        # Compiled once: every event of a customer in a trigger segment evaluates it, and
        # parsing the condition again each time cost more than the statement.
        return compile_condition(self.when, self.catalogue, now_marker())

    @property
    def constant(self) -> bool:
        """Whether the condition reads nothing of the customer (``true``, ``1 > 2``): the
        same for everyone, so nobody can enter or leave the segment."""
        tree = _ENV.parse("{{ " + self.when + " }}")
        return not any(True for _ in tree.find_all((nodes.Name, nodes.Call)))


# --- loading ----------------------------------------------------------------------------------


def segment_files(home: Path) -> list[Path]:
    """Every ``segments/*.yaml`` of the project (none when the folder is absent)."""
    folder = home / SEGMENTS_DIR
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def load_segments(
    home: Path, catalogue: Catalogue | None, report: Report, files: list[Path] | None = None
) -> dict[str, Segment]:
    """Compile the project's segments (or ``files``); problems go to ``report``."""
    # Reading and validating YAML is the check's: a project taken from the cache of checked
    # projects (kairos.language.project_cache) holds its segments without loading these.
    from kairos.language.project_files import display_path, load_document
    from kairos.language.schema_errors import validate_document

    found: dict[str, Segment] = {}
    for path in segment_files(home) if files is None else files:
        doc = load_document(path, display_path(path, home), report, home)
        if doc is None:
            continue
        spec, problems = validate_document(SegmentSpec, doc)
        report.extend(problems)
        if spec is None or catalogue is None:
            continue
        segment = _compile(spec, doc, path, catalogue, report)
        if segment is None:
            continue
        if segment.name in found:
            other = found[segment.name].source
            report.add(
                doc.problem(("segment",), f"segment `{segment.name}` twice", f"also in {other}")
            )
            continue
        found[segment.name] = segment
    return found


def _compile(
    spec: SegmentSpec, doc: YamlDocument, path: Path, catalogue: Catalogue, report: Report
) -> Segment | None:
    if spec.segment != path.stem:
        report.add(
            doc.problem(
                ("segment",),
                f"the segment is named `{spec.segment}` in {path.name}",
                f"name the file {spec.segment}.yaml, or the segment `{path.stem}`",
            )
        )
        return None
    problem = _condition_problem(spec.when)
    if problem is not None:
        report.add(doc.problem(("when",), *problem))
        return None
    try:
        to_sql(spec.when, catalogue, datetime.now(UTC))
    except SegmentSyntaxError as err:
        report.add(doc.problem(("when",), err.message, err.hint))
        return None
    return Segment(spec.segment, spec.description, spec.when, doc.file, catalogue)


def _condition_problem(text: str) -> tuple[str, str] | None:
    syntax = check_syntax(text)
    if syntax is not None:
        return f"the condition does not parse: {syntax}", "see docs/authoring.md, Segments"
    unsafe = refused(text)
    if unsafe:
        return unsafe[0].message, "conditions read customer data only"
    return None


def segment_problem(home: Path, catalogue: Catalogue, name: str) -> tuple[Segment | None, Report]:
    """The segment called ``name``, or None and the report of why it is not usable."""
    report = Report()
    path = home / SEGMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        names = [p.stem for p in segment_files(home)]
        report.add(
            Problem(
                f"{SEGMENTS_DIR}/{name}.yaml",
                1,
                1,
                "",
                f"no segment `{name}`",
                suggestion(name, names, kind="segments"),
            )
        )
        return None, report
    segments = load_segments(home, catalogue, report, [path])
    return segments.get(name), report


# --- asking the store -------------------------------------------------------------------------


# Run these without parameters: literals in them may hold a `%`.


def count_query(segment: Segment, now: datetime) -> sql.Composed:
    """How many customers are in the segment at ``now``."""
    return sql.SQL("SELECT count(*) AS members FROM customers c WHERE {}").format(
        segment.condition(now)
    )


def sample_query(segment: Segment, now: datetime, limit: int) -> sql.Composed:
    """The first ``limit`` members by id at ``now``, with their stage."""
    return sql.SQL("SELECT c.id, c.stage FROM customers c WHERE {} ORDER BY c.id LIMIT {}").format(
        segment.condition(now), sql.Literal(limit)
    )
