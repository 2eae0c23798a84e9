"""A project as the runtime uses it: :class:`Project` and :func:`load_project`, which every
runtime command calls (the worker, the client, ``kairos emit``, ``serve``, ...).

``load_project`` checks the project (:func:`kairos.language.compiler.check_project`) unless the
cache of checked projects (:mod:`kairos.language.project_cache`) already holds this very check:
then it takes the result from there, and neither the check nor its modules (the authoring
schema, the compiler's passes) are loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kairos.language.actions_catalogue import load_action_modules
from kairos.language.catalogue import Catalogue
from kairos.language.plan import JourneyPlan
from kairos.language.problems import ProjectError, Report
from kairos.language.project_cache import CheckedProject, project_key, read_entry, write_entry
from kairos.language.segments import Segment
from kairos.messages.rendering import TemplateStore


@dataclass(frozen=True)
class Project:
    """A project that compiled: its catalogue, plans by journey name, templates and warnings."""

    catalogue: Catalogue
    plans: dict[str, JourneyPlan]
    templates: TemplateStore
    warnings: Report
    # The template files each plan is pinned to: tree id -> name -> source
    # (kairos.language.pinning).
    trees: dict[str, dict[str, str]] = field(default_factory=dict)
    # The audiences of segments/*.yaml, by name (kairos.language.segments).
    segments: dict[str, Segment] = field(default_factory=dict)


def load_project(home: Path, *, actions: Iterable[str] = (), cache: Path | None = None) -> Project:
    """Load and compile every journey under ``home``; ``actions``: the modules KAIROS_ACTIONS
    names (``Settings.actions``), imported first so journeys may call the actions they add.

    ``cache``: the directory of checked projects (``Settings.project_cache``; None: always
    check). A project with no errors is kept there, and taken from there while nothing it
    depends on changes (:mod:`kairos.language.project_cache`).

    Raises:
        ProjectError: Any error in the catalogue, a journey or a template; its report lists
            them all (warnings too).
        ActionModuleError: A module of ``actions`` cannot be imported.
    """
    actions = tuple(actions)
    load_action_modules(actions)
    home = Path(home).resolve()
    if cache is None:
        return _checked(home)
    key = project_key(home, actions)
    entry = read_entry(cache, key)
    if entry is not None:
        templates = TemplateStore(home / "templates")
        return Project(
            entry.catalogue, entry.plans, templates, entry.warnings, entry.trees, entry.segments
        )
    project = _checked(home)
    # A file changed while it was checked: the result is not this key's.
    if project_key(home, actions) == key:
        write_entry(
            cache,
            CheckedProject(
                key,
                project.catalogue,
                project.plans,
                project.warnings,
                project.trees,
                project.segments,
            ),
        )
    return project


def _checked(home: Path) -> Project:
    from kairos.language.compiler import check_project  # only when the cache cannot answer

    project, report = check_project(home)
    if project is None:
        raise ProjectError(report)
    return project
