"""Compile a project's journeys into frozen plans, reporting every problem at once.

``journeys/customer.yaml`` is loaded into a :class:`~kairos.language.catalogue.Catalogue`; every
other ``journeys/*.yaml`` is loaded with positions (:mod:`kairos.language.yaml_source`), validated
against the authoring schema (:mod:`kairos.language.schema`), and then checked against the
catalogue, the templates and itself: events, variables, templates, actions, step ids, goto targets.
Nested steps are flattened into the plan graph of :mod:`kairos.language.plan` and each plan gets its
content version.

Problems are collected in a :class:`~kairos.language.problems.Report`; nothing is raised half-way,
so a marketer sees every mistake in one run. Checks that depend on something broken (the catalogue
did not load) are skipped rather than reported twice.

This module is the entry points; the catalogue is checked in
:mod:`kairos.language.compiler_catalogue` and one journey by
:class:`~kairos.language.compiler_plan.JourneyCompiler`, whose checks are layered over
:mod:`kairos.language.compiler_state`, ``compiler_conditions``, ``compiler_sends`` and
``compiler_steps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from kairos.language import schema as s
from kairos.language.catalogue import Catalogue
from kairos.language.compiler_catalogue import load_catalogue
from kairos.language.compiler_plan import JourneyCompiler
from kairos.language.pinning import pin, template_tree
from kairos.language.plan import JourneyPlan
from kairos.language.problems import Problem, Report
from kairos.language.project import Project
from kairos.language.project_files import display_path, journey_files, load_document
from kairos.language.schema_errors import validate_document
from kairos.language.segments import SEGMENTS_DIR, Segment, load_segments, segment_files
from kairos.messages.locales import LOCALES_FILE
from kairos.messages.rendering import TemplateStore


def check_project(home: Path, paths: Sequence[Path] | None = None) -> tuple[Project | None, Report]:
    """Compile the project's journeys (or only ``paths``: files or directories).

    Returns the project (None when there are errors) and the report of every problem.
    """
    home = Path(home).resolve()
    report = Report()
    templates = TemplateStore(home / "templates")
    with templates.steady():
        return _check_project(home, paths, report, templates)


def _check_project(
    home: Path, paths: Sequence[Path] | None, report: Report, templates: TemplateStore
) -> tuple[Project | None, Report]:
    catalogue = load_catalogue(home, report)
    _check_locale_styles(home, templates, report)
    plans: dict[str, JourneyPlan] = {}
    journeys, segment_paths = _split_segments(home, paths)
    segments = load_segments(home, catalogue, report, segment_paths)
    for file in journey_files(home, journeys, report):
        plan = compile_journey(
            file,
            home=home,
            catalogue=catalogue,
            templates=templates,
            report=report,
            segments=segments,
        )
        if plan is None:
            continue
        if plan.name in plans:
            report.add(
                Problem(
                    plan.source,
                    1,
                    1,
                    "journey",
                    f"journey `{plan.name}` twice",
                    f"also in {plans[plan.name].source}",
                )
            )
        plans[plan.name] = plan
    if report.has_errors or catalogue is None:
        return None, report
    # Plans that send the same messages share a tree: its files are gathered once.
    trees: dict[str, dict[str, str]] = {}
    for plan in plans.values():
        if plan.templates and plan.templates not in trees:
            trees[plan.templates] = template_tree(plan, templates)
    project = Project(catalogue, plans, templates, report.only("warning"), trees, segments)
    return project, report


def _split_segments(
    home: Path, paths: Sequence[Path] | None
) -> tuple[Sequence[Path] | None, list[Path] | None]:
    """``paths`` as journey paths and segment files (None: all of each kind)."""
    if paths is None:
        return None, None
    folder = (home / SEGMENTS_DIR).resolve()
    journeys: list[Path] = []
    segments: list[Path] = []
    for path in paths:
        resolved = path.resolve()
        if resolved == folder:
            segments.extend(segment_files(home))
        elif resolved.parent == folder and path.suffix in (".yaml", ".yml"):
            segments.append(path)
        else:
            journeys.append(path)
    return journeys, segments


def _check_locale_styles(home: Path, templates: TemplateStore, report: Report) -> None:
    """templates/locales.yaml: how each locale writes dates and money (kairos.messages.locales)."""
    problems = templates.style_problems()
    if problems:
        path = templates.root / LOCALES_FILE
        with contextlib.suppress(OSError, UnicodeDecodeError):
            report.add_source(problems[0].file, path.read_text(encoding="utf-8"))
    report.extend(problems)


# --- one journey ----------------------------------------------------------------------------


def compile_journey(
    path: Path,
    *,
    home: Path,
    catalogue: Catalogue | None,
    templates: TemplateStore,
    report: Report,
    segments: Mapping[str, Segment] | None = None,
) -> JourneyPlan | None:
    """Compile one journey file. Problems go to ``report``; None when it has errors.

    Args:
        path: The journey file.
        home: The project home, for showing file names as ``journeys/x.yaml``.
        catalogue: The loaded catalogue, or None when it is broken (checks that need it are
            skipped so that one mistake is not reported many times).
        templates: The project's templates.
        report: Where problems go.
        segments: The project's segments that compiled, for segment triggers (None: not
            checked).
    """
    shown = display_path(path, home)
    doc = load_document(path, shown, report, home)
    if doc is None:
        return None
    spec, problems = validate_document(s.JourneySpec, doc)
    report.extend(problems)
    if spec is None:
        return None
    errors_before = sum(1 for p in report.problems if p.severity == "error")
    journey = JourneyCompiler(doc, spec, catalogue, templates, report, home, path.stem, segments)
    plan = journey.compile()
    errors_after = sum(1 for p in report.problems if p.severity == "error")
    if errors_after != errors_before:
        return None
    # The template files are part of what a run is pinned to, and so of the version.
    pinned, _ = pin(plan, templates)
    return pinned.with_version()
