"""Compile a project's journeys into frozen plans, reporting every problem at once.

``journeys/customer.yaml`` is loaded into a :class:`~kairos.catalogue.Catalogue`; every other
``journeys/*.yaml`` is loaded with positions (:mod:`kairos.yaml_source`), validated against the
authoring schema (:mod:`kairos.schema`), and then checked against the catalogue, the templates
and itself: events, variables, templates, actions, step ids, goto targets. Nested steps are
flattened into the plan graph of :mod:`kairos.plan` and each plan gets its content version.

Problems are collected in a :class:`~kairos.problems.Report`; nothing is raised half-way, so a
marketer sees every mistake in one run. Checks that depend on something broken (the catalogue
did not load) are skipped rather than reported twice.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, assert_never
from urllib.parse import urlparse

from jinja2.exceptions import TemplateError

from kairos import expressions
from kairos import schema as s
from kairos.actions_catalogue import ACTIONS, action_sample, load_action_modules
from kairos.catalogue import (
    BUILTIN_EVENT,
    BUILTIN_PROFILE,
    CONSENT_KEYS,
    Attribute,
    AttrType,
    Catalogue,
    ScoreRule,
    type_problem,
)
from kairos.durations import DurationError, parse_duration
from kairos.locales import LOCALES_FILE
from kairos.pinning import pin, template_tree
from kairos.plan import (
    ActionStep,
    ApiTrigger,
    BranchCase,
    BranchStep,
    Category,
    Channel,
    DateTrigger,
    EventMatch,
    EventTrigger,
    ExitStep,
    GotoStep,
    JourneyPlan,
    PlanStep,
    QuietHours,
    SegmentTrigger,
    SendStep,
    SetStep,
    SplitStep,
    SplitVariant,
    Stage,
    Trigger,
    WaitForOutcome,
    WaitForStep,
    WaitStep,
    Webhook,
)
from kairos.problems import (
    Problem,
    ProjectError,
    Report,
    Severity,
    did_you_mean,
    quote_list,
    suggestion,
)
from kairos.rendering import REQUIRED_PARTS, RenderError, TemplateStore, normalise_locale
from kairos.schema_errors import validate_document
from kairos.segments import SEGMENTS_DIR, Segment, load_segments, segment_files
from kairos.sms import analyse
from kairos.template_safety import NESTING_HINT, too_deep
from kairos.unsubscribe import unsubscribe_url
from kairos.yaml_source import (
    Position,
    YamlDocument,
    YamlPath,
    escapes,
    format_path,
    load_yaml,
    read_source,
)

CATALOGUE_FILE = "customer.yaml"
JOURNEY_NAMES = ("name", "version", "step", "variant", "started_at")
SMS_SEGMENT_LIMIT = 3
SUBJECT_LIMIT = 60  # characters; most phones show about 40-50, desktop inboxes about 60-70
PREHEADER_LIMIT = 100  # characters; inboxes show 40-100 after the subject
# Plain look-alikes of characters that would send an SMS as UCS-2.
_GSM_LOOKALIKES = {"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."}
_DATE_TYPES = (AttrType.datetime, AttrType.date)
_NUMERIC = (AttrType.number, AttrType.integer)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Project:
    """A project that compiled: its catalogue, plans by journey name, templates and warnings."""

    catalogue: Catalogue
    plans: dict[str, JourneyPlan]
    templates: TemplateStore
    warnings: Report
    # The template files each plan is pinned to: tree id -> name -> source (kairos.pinning).
    trees: dict[str, dict[str, str]] = field(default_factory=dict)
    # The audiences of segments/*.yaml, by name (kairos.segments).
    segments: dict[str, Segment] = field(default_factory=dict)


def load_project(home: Path, *, actions: Iterable[str] = ()) -> Project:
    """Load and compile every journey under ``home``; ``actions``: the modules KAIROS_ACTIONS
    names (``Settings.actions``), imported first so journeys may call the actions they add.

    Raises:
        ProjectError: Any error in the catalogue, a journey or a template; its report lists
            them all (warnings too).
        ActionModuleError: A module of ``actions`` cannot be imported.
    """
    load_action_modules(actions)
    project, report = check_project(home)
    if project is None:
        raise ProjectError(report)
    return project


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
    trees = {p.templates: template_tree(p, templates) for p in plans.values() if p.templates}
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
    """templates/locales.yaml: how each locale writes dates and money (kairos.locales)."""
    problems = templates.style_problems()
    if problems:
        path = templates.root / LOCALES_FILE
        with contextlib.suppress(OSError, UnicodeDecodeError):
            report.add_source(problems[0].file, path.read_text(encoding="utf-8"))
    report.extend(problems)


def display_path(path: Path, home: Path) -> str:
    """A file as its author knows it: relative to the project home when inside it."""
    # A link out of the project is shown by its own name, not by where it leads.
    resolved = path.absolute() if escapes(path, home) else path.resolve()
    for base in (home.resolve(), Path.cwd()):
        try:
            return resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return resolved.as_posix()


def journey_files(home: Path, paths: Sequence[Path] | None, report: Report) -> list[Path]:
    """The journey files to compile: every ``journeys/*.yaml`` but the catalogue by default."""
    if paths is None:
        paths = [home / "journeys"]
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.yaml")))
        elif path.is_file():
            found.append(path)
        else:
            shown = display_path(path, home)
            report.add(Problem(shown, 1, 1, "", "no such file or directory"))
    return [p for p in dict.fromkeys(found) if p.name != CATALOGUE_FILE]


# --- the catalogue --------------------------------------------------------------------------


def load_catalogue(home: Path, report: Report) -> Catalogue | None:
    """Load ``journeys/customer.yaml``; problems go to ``report``, None when it is unusable."""
    path = home / "journeys" / CATALOGUE_FILE
    shown = display_path(path, home)
    if not path.is_file():
        report.add(
            Problem(
                shown,
                1,
                1,
                "",
                "the customer catalogue is missing",
                "create journeys/customer.yaml with `profile:` and `events:`",
            )
        )
        return None
    doc = _load(path, shown, report, home)
    if doc is None:
        return None
    data = {} if doc.data is None else doc.data
    located = YamlDocument(doc.file, doc.text, data, doc.positions)
    catalogue, problems = validate_document(Catalogue, located)
    report.extend(problems)
    if catalogue is None:
        return None
    before = len(report.problems)
    _check_catalogue(catalogue, located, report)
    _check_scoring(catalogue, located, report)
    return catalogue if len(report.problems) == before else None


def _load(path: Path, shown: str, report: Report, home: Path) -> YamlDocument | None:
    """Read and parse a YAML file, keeping its text for quoting even when it does not parse."""
    text, problems = read_source(path, shown, home=home)
    report.extend(problems)
    if text is None:
        return None
    report.add_source(shown, text)
    doc, problems = load_yaml(text, shown)
    report.extend(problems)
    return doc


def _check_catalogue(catalogue: Catalogue, doc: YamlDocument, report: Report) -> None:
    for name in catalogue.profile:
        path: YamlPath = ("profile", name)
        if name in BUILTIN_PROFILE:
            report.add(doc.problem(path, f"`{name}` is built in", "remove it", key=True))
        elif not _IDENTIFIER.match(name):
            report.add(doc.problem(path, f"`{name}` is not a usable name", _NAME_HINT, key=True))
        attr = catalogue.profile[name]
        _check_consent(doc, report, path, attr)
        if attr.default is not None:
            report.add(
                doc.problem(
                    (*path, "default"),
                    "`default` is for event properties",
                    "give the event property `default: timestamp` and `profile: true` instead",
                )
            )
    for event, spec in catalogue.events.items():
        if not _IDENTIFIER.match(event):
            report.add(
                doc.problem(
                    ("events", event), f"`{event}` is not a usable name", _NAME_HINT, key=True
                )
            )
        for prop, attr in spec.properties.items():
            _check_property(catalogue, doc, report, ("events", event, "properties", prop), attr)


_NAME_HINT = "use letters, digits and _, starting with a letter, such as first_name"


def _check_scoring(catalogue: Catalogue, doc: YamlDocument, report: Report) -> None:
    """``scoring:``: each score is a number attribute, each rule a declared event with points
    and a condition over that event and the customer."""
    numbers = [n for n, a in catalogue.profile.items() if a.type in _NUMERIC]
    for name, score in catalogue.scoring.items():
        path: YamlPath = ("scoring", name)
        attr = catalogue.profile.get(name)
        if attr is None:
            hint = suggestion(name, numbers, kind="number attributes")
            if not hint.startswith("did you mean"):
                hint = f"declare `{name}: {{type: number}}` under `profile:`"
            report.add(doc.problem(path, f"no profile attribute `{name}` holds this score", hint))
        elif attr.type not in _NUMERIC:
            report.add(
                doc.problem(
                    path, f"`{name}` is a {attr.type.value}, a score is a number",
                    f"make `{name}` `type: number` under `profile:`",
                )
            )  # fmt: skip
        if score.expire_after is not None:
            try:
                lasting = parse_duration(score.expire_after)
            except DurationError as err:
                report.add(
                    doc.problem((*path, "expire_after"), str(err), "write `expire_after: 90d`")
                )
            else:
                if lasting <= 0:
                    report.add(doc.problem((*path, "expire_after"), "points must last", "90d"))
        for n, rule in enumerate(score.rules):
            _check_score_rule(catalogue, doc, report, (*path, "rules", n), rule, attr)


def _check_score_rule(
    catalogue: Catalogue,
    doc: YamlDocument,
    report: Report,
    path: YamlPath,
    rule: ScoreRule,
    attr: Attribute | None,
) -> None:
    spec = catalogue.events.get(rule.event)
    if spec is None:
        hint = suggestion(rule.event, catalogue.events, kind="declared events")
        report.add(doc.problem((*path, "event"), f"unknown event `{rule.event}`", hint))
    if rule.points == 0:
        report.add(
            doc.problem(
                (*path, "points"), "0 points change nothing", "give it points, or remove it"
            )
        )
    elif attr is not None and attr.type is AttrType.integer and not isinstance(rule.points, int):
        report.add(doc.problem((*path, "points"), "the score is an integer", "whole points"))
    if rule.when is None or spec is None:
        return
    where = (*path, "when")
    problem = expressions.check_syntax(rule.when) or next(
        (u.message for u in expressions.refused(rule.when)), None
    )
    if problem is None:
        for dotted in sorted(expressions.referenced_paths(rule.when)):
            problem = _score_name_problem(catalogue, rule.event, dotted)
            if problem is not None:
                break
    if problem is not None:
        report.add(
            doc.problem(
                where,
                f"`{rule.when}`: {problem}",
                f"a rule's condition reads `event.*` of {rule.event} and `customer.*`",
            )
        )


def _score_name_problem(catalogue: Catalogue, event: str, dotted: tuple[str, ...]) -> str | None:
    root, rest = dotted[0], dotted[1:]
    if root == "event" and rest:
        known = catalogue.events[event].properties
        return None if rest[0] in known or rest[0] in BUILTIN_EVENT else (
            f"{event} has no property `{rest[0]}`"
        )  # fmt: skip
    if root == "customer" and rest:
        known_attr = rest[0] in catalogue.profile or rest[0] in BUILTIN_PROFILE
        return None if known_attr else f"`customer.{rest[0]}` is not a profile attribute"
    return f"unknown variable `{'.'.join(dotted)}`"


def _check_property(
    catalogue: Catalogue, doc: YamlDocument, report: Report, path: YamlPath, attr: Attribute
) -> None:
    prop = str(path[-1])
    if not _IDENTIFIER.match(prop):
        report.add(doc.problem(path, f"`{prop}` is not a usable name", _NAME_HINT, key=True))
    _check_consent(doc, report, path, attr)
    if attr.default == "timestamp" and attr.type not in (AttrType.datetime, AttrType.date):
        report.add(
            doc.problem(
                (*path, "default"),
                f"`default: timestamp` fills in the event's time, but `{prop}` is a "
                f"{attr.type.value}",
                "make it `type: datetime`, or remove `default`",
            )
        )
    target = attr.profile_attribute(prop)
    if target is not None and target not in catalogue.profile:
        hint = suggestion(target, catalogue.profile, kind="profile attributes")
        if not hint.startswith("did you mean"):
            hint = f"declare `{target}` under `profile:`"
        report.add(doc.problem((*path, "profile"), f"no profile attribute `{target}`", hint))


def _check_consent(doc: YamlDocument, report: Report, path: YamlPath, attr: Attribute) -> None:
    if attr.consent is not None and attr.type is not AttrType.boolean:
        report.add(
            doc.problem(
                (*path, "consent"),
                f"`consent: {attr.consent}` needs a boolean (true grants, false withdraws), "
                f"not a {attr.type.value}",
                "make it `type: boolean`",
            )
        )


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
    doc = _load(path, shown, report, home)
    if doc is None:
        return None
    spec, problems = validate_document(s.JourneySpec, doc)
    report.extend(problems)
    if spec is None:
        return None
    errors_before = sum(1 for p in report.problems if p.severity == "error")
    journey = _Journey(doc, spec, catalogue, templates, report, home, path.stem, segments)
    plan = journey.compile()
    errors_after = sum(1 for p in report.problems if p.severity == "error")
    if errors_after != errors_before:
        return None
    # The template files are part of what a run is pinned to, and so of the version.
    pinned, _ = pin(plan, templates)
    return pinned.with_version()


@dataclass
class _Node:
    """One step as written, where it is, and what surrounds it."""

    spec: s.StepSpec
    path: YamlPath
    on_event: str | None  # inside a wait_for `on: <event>` path: that event is current
    parent: YamlPath | None
    previous: YamlPath | None
    id: str = ""


@dataclass(frozen=True)
class _EventRef:
    event: str
    when: str | None
    path: YamlPath  # where the event name is written


class _Journey:
    """The state of compiling one journey: its document, spec, nodes and findings."""

    def __init__(
        self,
        doc: YamlDocument,
        spec: s.JourneySpec,
        catalogue: Catalogue | None,
        templates: TemplateStore,
        report: Report,
        home: Path,
        stem: str,
        segments: Mapping[str, Segment] | None = None,
    ) -> None:
        self.doc = doc
        self.segments = segments
        self.spec = spec
        self.catalogue = catalogue
        self.templates = templates
        self.report = report
        self.home = home
        self.stem = stem
        self.nodes: list[_Node] = []
        self.by_path: dict[YamlPath, _Node] = {}
        self.steps: dict[str, PlanStep] = {}
        self.locales, self.default_locale = self._locales()
        self.saved: dict[str, str | None] = {}  # save_as name -> action name (None: webhook)
        self.saved_args: dict[str, dict[str, Any]] = {}  # save_as name -> its `with:`
        self._checked_templates: set[tuple[str, str, Channel]] = set()

    # Problems ------------------------------------------------------------------------------

    def error(self, path: YamlPath, message: str, hint: str = "", **where: Any) -> None:
        self.report.add(self.doc.problem(path, message, hint, **where))

    def warn(self, path: YamlPath, message: str, hint: str = "", **where: Any) -> None:
        self.report.add(self.doc.problem(path, message, hint, severity="warning", **where))

    # The whole journey ---------------------------------------------------------------------

    def compile(self) -> JourneyPlan:
        self._check_name()
        self._collect(self.spec.steps, ("steps",), None, None)
        self._assign_ids()
        self._collect_saved()
        start = self._flatten(self.spec.steps, ("steps",), None)
        trigger = self._trigger()
        exit_on = self._exit_on()
        for node in self.nodes:
            self._check_step(node)
        self._check_graph(start)
        # Document order reads best in the plan (and in `kairos graph`); the version ignores it.
        self.steps = {node.id: self.steps[node.id] for node in self.nodes if node.id in self.steps}
        return JourneyPlan(
            name=self.spec.journey,
            description=self.spec.description,
            stage=Stage(self.spec.stage) if self.spec.stage else None,
            category=self.spec.category,
            priority=self.spec.priority,
            quiet_hours=self._quiet_hours(),
            ignore_quiet_hours=self.spec.quiet_hours in ("off", False),
            default_locale=self.default_locale,
            locales=tuple(self.locales),
            trigger=trigger,
            entry=self.spec.entry,
            exit_on=exit_on,
            start=start,
            steps=self.steps,
            source=self.doc.file,
            named_steps=frozenset(n.id for n in self.nodes if n.spec.id is not None),
            goal_window=self._conversion_window(),
            step_lines={n.id: self.doc.positions.value(n.path).line for n in self.nodes},
        )

    def _conversion_window(self) -> int | None:
        window = self.spec.conversion_window
        if window is None:
            return None
        if not self.spec.exit_on:
            self.error(
                ("conversion_window",),
                "conversion_window without a goal: nothing can convert",
                "name the goal events in exit_on, or remove conversion_window",
            )
        return parse_duration(window)

    def _check_name(self) -> None:
        name = self.spec.journey
        if name != self.stem:
            self.error(
                ("journey",),
                f"journey `{name}` is in {self.stem}.yaml",
                f"the name must equal the file name: write `journey: {self.stem}`, or rename the "
                f"file to {name}.yaml",
            )

    def _locales(self) -> tuple[list[str], str]:
        spec = self.spec
        written = spec.locales or ([spec.default_locale] if spec.default_locale else ["en"])
        locales: list[str] = []
        for index, tag in enumerate(written):
            locale = normalise_locale(tag)
            if locale in locales and spec.locales is not None:
                self.error(("locales", index), f"`{tag}` is listed twice", "list each locale once")
            elif locale not in locales:
                locales.append(locale)
        default = normalise_locale(spec.default_locale) if spec.default_locale else locales[0]
        if default not in locales:
            self.error(
                ("default_locale",),
                f"`{spec.default_locale}` is not in locales",
                f"add it to locales, or use {quote_list(locales)}",
            )
        return locales, default

    def _quiet_hours(self) -> QuietHours | None:
        window = self.spec.quiet_hours
        if not isinstance(window, s.QuietHoursSpec):
            return None
        return QuietHours(start=_hhmm(window.start), end=_hhmm(window.end))

    # Settings that name events -------------------------------------------------------------

    def _trigger(self) -> Trigger:
        trigger = self.spec.trigger
        match trigger:
            case "api":
                return ApiTrigger()
            case s.EventTriggerSpec():
                self._check_event(("trigger", "event"), trigger.event)
                events = frozenset({trigger.event})
                self._check_condition(("trigger", "when"), trigger.when, events)
                return EventTrigger(event=trigger.event, when=trigger.when)
            case s.DateTriggerSpec():
                attribute = self._date_attribute(("trigger", "date"), trigger.date)
                self._check_condition(("trigger", "when"), trigger.when, frozenset())
                offset = parse_duration(trigger.offset) if trigger.offset else 0
                return DateTrigger(attribute=attribute, offset_seconds=offset, when=trigger.when)
            case s.SegmentTriggerSpec():
                self._check_segment(("trigger", "segment"), trigger.segment)
                return SegmentTrigger(segment=trigger.segment)
            case _:
                assert_never(trigger)

    def _exit_on(self) -> tuple[EventMatch, ...]:
        refs = _event_refs(self.spec.exit_on, ("exit_on",)) if self.spec.exit_on else []
        matches = []
        for ref in refs:
            self._check_event(ref.path, ref.event)
            self._check_condition((*ref.path[:-1], "when"), ref.when, frozenset({ref.event}))
            matches.append(EventMatch(event=ref.event, when=ref.when))
        return tuple(matches)

    def trigger_event(self) -> str | None:
        trigger = self.spec.trigger
        return trigger.event if isinstance(trigger, s.EventTriggerSpec) else None

    def _check_event(self, path: YamlPath, event: str) -> bool:
        if self.catalogue is None or event in self.catalogue.events:
            return True
        hint = suggestion(event, self.catalogue.events, kind="declared events")
        if not hint.startswith("did you mean"):
            hint = f"declare it under `events:` in journeys/customer.yaml; {hint}"
        self.error(path, f"unknown event `{event}`", hint)
        return False

    def _check_segment(self, path: YamlPath, name: str) -> None:
        """A segment trigger names a segment that compiled and that a customer can enter."""
        if self.segments is None:
            return
        segment = self.segments.get(name)
        if segment is None:
            if (self.home / SEGMENTS_DIR / f"{name}.yaml").is_file():
                return  # the segment's own problems are reported with its file
            names = [p.stem for p in segment_files(self.home)]
            hint = suggestion(name, names, kind="segments")
            if not hint.startswith("did you mean"):
                hint = f"create {SEGMENTS_DIR}/{name}.yaml; {hint}"
            self.error(path, f"no segment `{name}`", hint)
        elif segment.constant:
            self.error(
                path,
                f"segment `{name}` is `{segment.when}` for every customer: nobody ever enters it",
                "a trigger segment reads the customer: customer.lead_score >= 50, events(...)",
            )

    def _date_attribute(self, path: YamlPath, written: str) -> str:
        """The profile attribute named by ``customer.x``, checked to hold a date."""
        name = written.removeprefix("customer.")
        if self.catalogue is None:
            return name
        dates = [n for n, a in self.catalogue.profile.items() if a.type in _DATE_TYPES]
        attr = self.catalogue.profile.get(name)
        if attr is None:
            hint = suggestion(name, dates, kind="date attributes")
            self.error(path, f"`{written}` is not a profile attribute", (hint))
        elif attr.type not in _DATE_TYPES:
            self.error(
                path,
                f"`{written}` is a {attr.type.value}, not a date",
                (suggestion(name, dates, kind="date attributes")),
            )
        return name

    # Collecting and naming steps -----------------------------------------------------------

    def _collect(
        self,
        steps: Sequence[s.StepSpec],
        path: YamlPath,
        on_event: str | None,
        parent: YamlPath | None,
    ) -> None:
        previous: YamlPath | None = None
        for index, spec in enumerate(steps):
            node = _Node(spec, (*path, index), on_event, parent, previous)
            self.nodes.append(node)
            self.by_path[node.path] = node
            for child_steps, child_path, child_event in _children(spec, node.path, on_event):
                self._collect(child_steps, child_path, child_event, node.path)
            previous = node.path

    def _assign_ids(self) -> None:
        explicit: dict[str, YamlPath] = {}
        for node in self.nodes:
            if node.spec.id is None:
                continue
            if node.spec.id in explicit:
                first = self.doc.positions.value((*explicit[node.spec.id], "id")).line
                self.error(
                    (*node.path, "id"),
                    f"duplicate step id `{node.spec.id}`",
                    f"already used on line {first}; ids must be unique in a journey",
                )
            else:
                explicit[node.spec.id] = node.path
            node.id = node.spec.id
        counters: dict[str, int] = {}
        for node in self.nodes:
            if node.spec.id is None:
                node.id = _next_free(_base_id(node.spec), counters, explicit)

    def _collect_saved(self) -> None:
        for node in self.nodes:
            if isinstance(node.spec, s.ActionStep) and node.spec.save_as:
                action = node.spec.action if isinstance(node.spec.action, str) else None
                self.saved[node.spec.save_as] = action
                self.saved_args[node.spec.save_as] = dict(node.spec.with_)

    # Flattening ----------------------------------------------------------------------------

    def _flatten(
        self, steps: Sequence[s.StepSpec], path: YamlPath, after: str | None
    ) -> str | None:
        """Add ``steps`` to the plan, the last continuing at ``after``; return the first id."""
        ids = [self.by_path[(*path, i)].id for i in range(len(steps))]
        for index, spec in enumerate(steps):
            following = ids[index + 1] if index + 1 < len(ids) else after
            node_path = (*path, index)
            self.steps[ids[index]] = self._plan_step(spec, ids[index], node_path, following)
        return ids[0] if ids else after

    def _plan_step(
        self, spec: s.StepSpec, step_id: str, path: YamlPath, nxt: str | None
    ) -> PlanStep:
        match spec:
            case s.SendStep():
                give_up_after = spec.give_up_after or self.spec.give_up_after
                return SendStep(
                    id=step_id,
                    channel=spec.send,
                    template=spec.template,
                    fallback=spec.fallback,
                    give_up_after_seconds=parse_duration(give_up_after) if give_up_after else None,
                    next=nxt,
                )
            case s.WaitStep():
                return _wait_step(spec, step_id, nxt)
            case s.WaitForStep():
                return self._wait_for_step(spec, step_id, path, nxt)
            case s.BranchStep():
                return self._branch_step(spec, step_id, path, nxt)
            case s.SplitStep():
                return self._split_step(spec, step_id, path, nxt)
            case s.SetStep():
                return SetStep(
                    id=step_id,
                    attributes=dict(spec.set.attributes),
                    increment=dict(spec.set.increment),
                    stage=spec.set.stage,
                    next=nxt,
                )
            case s.ActionStep():
                return _action_step(spec, step_id, nxt)
            case s.GotoStep():
                return GotoStep(id=step_id, target=spec.goto)
            case s.ExitStep():
                return ExitStep(id=step_id, outcome=spec.exit)
            case _:
                assert_never(spec)

    def _wait_for_step(
        self, spec: s.WaitForStep, step_id: str, path: YamlPath, nxt: str | None
    ) -> WaitForStep:
        paths = spec.on or {}
        outcomes = []
        for ref in _event_refs(spec.wait_for, (*path, "wait_for")):
            steps = paths.get(ref.event)
            head = self._flatten(steps, (*path, "on", ref.event), nxt) if steps else nxt
            outcomes.append(WaitForOutcome(event=ref.event, when=ref.when, next=head))
        timeout_head = nxt
        if spec.on_timeout:
            timeout_head = self._flatten(spec.on_timeout, (*path, "on_timeout"), nxt)
        for event, steps in paths.items():
            if event not in {o.event for o in outcomes}:
                self._flatten(steps, (*path, "on", event), nxt)  # reported in the checks
        return WaitForStep(
            id=step_id,
            events=tuple(outcomes),
            timeout_seconds=parse_duration(spec.timeout),
            on_timeout=timeout_head,
        )

    def _branch_step(
        self, spec: s.BranchStep, step_id: str, path: YamlPath, nxt: str | None
    ) -> BranchStep:
        cases: list[BranchCase] = []
        otherwise = nxt
        for index, case in enumerate(spec.branch):
            case_path = (*path, "branch", index)
            match case:
                case s.IfCase() | s.ElifCase():
                    when = case.if_ if isinstance(case, s.IfCase) else case.elif_
                    head = self._flatten(case.steps, (*case_path, "steps"), nxt)
                    cases.append(BranchCase(when=when, next=head))
                case s.ElseCase():
                    otherwise = self._flatten(case.else_, (*case_path, "else"), nxt)
                case _:
                    assert_never(case)
        return BranchStep(id=step_id, cases=tuple(cases), otherwise=otherwise)

    def _split_step(
        self, spec: s.SplitStep, step_id: str, path: YamlPath, nxt: str | None
    ) -> SplitStep:
        variants = []
        for index, variant in enumerate(spec.split.variants):
            steps_path = (*path, "split", "variants", index, "steps")
            head = self._flatten(variant.steps, steps_path, nxt)
            variants.append(SplitVariant(name=variant.name, weight=variant.weight, next=head))
        return SplitStep(
            id=step_id,
            variants=tuple(variants),
            holdout_percent=spec.split.holdout,
            holdout_next=nxt,
        )

    # Checking steps ------------------------------------------------------------------------

    def events_at(self, node: _Node) -> frozenset[str]:
        """The events whose properties ``event.X`` may read at ``node`` (see the spec)."""
        if node.on_event is not None:
            return frozenset({node.on_event})
        names = {self.trigger_event()} if self.trigger_event() else set()
        for other in self.nodes:
            if isinstance(other.spec, s.WaitForStep):
                names.update(r.event for r in _event_refs(other.spec.wait_for, ()))
        return frozenset(n for n in names if n)

    def _check_step(self, node: _Node) -> None:
        spec = node.spec
        match spec:
            case s.SendStep():
                self._check_send(node, spec)
            case s.WaitStep():
                self._check_wait(node, spec)
            case s.WaitForStep():
                self._check_wait_for(node, spec)
            case s.BranchStep():
                self._check_branch(node, spec)
            case s.SplitStep():
                self._check_split(node, spec)
            case s.SetStep():
                self._check_set(node, spec)
            case s.ActionStep():
                self._check_action(node, spec)
            case s.GotoStep():
                self._check_goto(node, spec)
            case s.ExitStep():
                pass  # any outcome name is fine; the schema checked its form
            case _:
                assert_never(spec)

    def _check_wait(self, node: _Node, spec: s.WaitStep) -> None:
        wait = spec.wait
        if not isinstance(wait, s.WaitUntil):
            return
        path = (*node.path, "wait", "until")
        if wait.until.startswith("customer."):
            self._date_attribute(path, wait.until)
        elif wait.offset:
            self.error(
                (*node.path, "wait", "offset"),
                "`offset` only applies to a date",
                "remove it, or wait for a duration first: `- wait: 1d`",
            )

    def _check_wait_for(self, node: _Node, spec: s.WaitForStep) -> None:
        refs = _event_refs(spec.wait_for, (*node.path, "wait_for"))
        seen: set[str] = set()
        for ref in refs:
            if ref.event in seen:
                self.error(ref.path, f"`{ref.event}` is listed twice", "list each event once")
            seen.add(ref.event)
            self._check_event(ref.path, ref.event)
            when_path = (*ref.path[:-1], "when") if ref.path[-1] == "event" else ref.path
            self._check_condition(when_path, ref.when, frozenset({ref.event}))
        for event in spec.on or {}:
            if event not in seen:
                self.error(
                    (*node.path, "on", event),
                    f"this step does not wait for `{event}`",
                    (suggestion(event, seen, kind="it waits for")),
                    key=True,
                )
            elif event in self._goal_events():
                self.warn(
                    (*node.path, "on", event),
                    f"`{event}` is a goal (exit_on): the run ends before this path runs",
                    f"remove `{event}` from exit_on, or this `on:` path",
                    key=True,
                )

    def _goal_events(self) -> set[str]:
        return {r.event for r in _event_refs(self.spec.exit_on, ())} if self.spec.exit_on else set()

    def _check_branch(self, node: _Node, spec: s.BranchStep) -> None:
        last = len(spec.branch) - 1
        for index, case in enumerate(spec.branch):
            case_path = (*node.path, "branch", index)
            match case:
                case s.IfCase():
                    if index:
                        self.error(
                            (*case_path, "if"),
                            "only the first case is `if`",
                            "use `elif` here",
                            key=True,
                        )
                    self._check_condition((*case_path, "if"), case.if_, self.events_at(node))
                case s.ElifCase():
                    if not index:
                        self.error(
                            (*case_path, "elif"),
                            "a branch starts with `if`",
                            "write `if` for the first case",
                            key=True,
                        )
                    self._check_condition((*case_path, "elif"), case.elif_, self.events_at(node))
                case s.ElseCase():
                    if index != last or not index:
                        self.error(
                            (*case_path, "else"),
                            "`else` must be the last case, after `if`",
                            "move it to the end",
                            key=True,
                        )
                case _:
                    assert_never(case)

    def _check_split(self, node: _Node, spec: s.SplitStep) -> None:
        names: set[str] = set()
        for index, variant in enumerate(spec.split.variants):
            if variant.name in names:
                path = (*node.path, "split", "variants", index, "name")
                self.error(
                    path, f"variant `{variant.name}` is listed twice", "name each variant once"
                )
            names.add(variant.name)

    def _check_goto(self, node: _Node, spec: s.GotoStep) -> None:
        ids = [n.id for n in self.nodes]
        if spec.goto not in ids:
            hint = suggestion(spec.goto, ids, kind="step ids")
            self.error((*node.path, "goto"), f"no step with id `{spec.goto}`", hint)

    # Set and action ------------------------------------------------------------------------

    def _check_set(self, node: _Node, spec: s.SetStep) -> None:
        change = spec.set
        base = (*node.path, "set")
        if change.stage is None and not change.attributes and not change.increment:
            self.error(base, "`set` changes nothing", "add `stage:`, `attributes:` or `increment:`")
        for name, value in change.attributes.items():
            path = (*base, "attributes", name)
            attr = self._settable(path, name)
            if attr is None:
                continue
            if isinstance(value, str) and "{{" in value:
                self._check_text(path, value, node)
            elif value is not None and (problem := type_problem(attr.type, value)):
                declared = f"customer.yaml declares `{name}` as {attr.type.value}"
                self.error(path, f"`{name}` {problem}", declared)
        for name in change.increment:
            path = (*base, "increment", name)
            attr = self._settable(path, name)
            if attr is not None and attr.type not in _NUMERIC:
                self.error(
                    path,
                    f"`{name}` is a {attr.type.value}, not a number",
                    "increment only number or integer attributes",
                    key=True,
                )

    def _settable(self, path: YamlPath, name: str) -> Attribute | None:
        if self.catalogue is None:
            return None
        if name in BUILTIN_PROFILE:
            hint = "use `stage:` beside `attributes:`" if name == "stage" else "it is built in"
            self.error(path, f"`{name}` cannot be set here", hint, key=True)
            return None
        attr = self.catalogue.profile.get(name)
        if attr is None:
            hint = suggestion(name, self.catalogue.profile, kind="profile attributes")
            if not hint.startswith("did you mean"):
                hint = f"declare it under `profile:` in journeys/customer.yaml; {hint}"
            self.error(path, f"unknown profile attribute `{name}`", hint, key=True)
        return attr

    def _check_action(self, node: _Node, spec: s.ActionStep) -> None:
        if spec.save_as in JOURNEY_NAMES:
            self.error(
                (*node.path, "save_as"),
                f"`journey.{spec.save_as}` is built in",
                "choose another name, such as coupon",
            )
        if isinstance(spec.action, s.WebhookSpec):
            self._check_webhook(node, spec.action)
            if spec.with_:
                self.error(
                    (*node.path, "with"),
                    "a webhook takes no `with:`",
                    "put what it should send under `body:`",
                    key=True,
                )
            return
        action = ACTIONS.get(spec.action)
        if action is None:
            hint = suggestion(spec.action, ACTIONS, kind="registered actions")
            self.error((*node.path, "action"), f"unknown action `{spec.action}`", hint)
            return
        for name, value in spec.with_.items():
            path = (*node.path, "with", name)
            arg = action.args.get(name)
            if arg is None:
                hint = suggestion(name, action.args, kind=f"{action.name} takes")
                self.error(path, f"`{action.name}` has no argument `{name}`", hint, key=True)
            elif isinstance(value, str) and "{{" in value:
                self._check_text(path, value, node)
            elif problem := type_problem(arg.type, value):
                self.error(path, f"`{name}` {problem}")

    def _check_webhook(self, node: _Node, hook: s.WebhookSpec) -> None:
        path = (*node.path, "action", "webhook")
        url = urlparse(hook.webhook)
        if url.scheme not in ("http", "https") or not url.netloc:
            self.error(
                path,
                f"`{hook.webhook}` is not an http(s) URL",
                "write the full address, such as https://hooks.example.com/kairos",
            )
        elif "{{" in hook.webhook:
            self._check_text(path, hook.webhook, node)
        for name, value in hook.headers.items():
            if "{{" in value:
                self._check_text((*node.path, "action", "headers", name), value, node)
        for sub_path, text in _strings(hook.body, (*node.path, "action", "body")):
            if "{{" in text:
                self._check_text(sub_path, text, node)

    # Send: templates -----------------------------------------------------------------------

    def _check_send(self, node: _Node, spec: s.SendStep) -> None:
        if spec.fallback == spec.send:
            self.error(
                (*node.path, "fallback"),
                f"the fallback is {spec.send.value} again",
                "fall back to the other channel, or remove `fallback`",
            )
        channels = [spec.send] + ([spec.fallback] if spec.fallback not in (None, spec.send) else [])
        for channel in channels:
            if channel is not None and self._template_complete(node, spec.template, channel):
                self._check_template_files(node, spec.template, channel)

    def _template_complete(self, node: _Node, template: str, channel: Channel) -> bool:
        path = (*node.path, "template")
        try:
            available = self.templates.locales(template, channel)
        except RenderError as exc:
            self.error(path, str(exc))
            return False
        if not available:
            names = _template_names(self.templates.root)
            close = did_you_mean(template, names)
            hint = (
                f"did you mean `{close}`?"
                if close
                else "create " + self._wanted_files(template, self.default_locale, channel)
            )
            self.error(path, f"no {channel.value} template `{template}`", hint)
            return False
        missing = [locale for locale in self.locales if locale not in available]
        for locale in missing:
            self.error(
                path,
                f"`{template}` has no {locale} {channel.value}",
                "add " + self._wanted_files(template, locale, channel),
            )
        return not missing

    def _wanted_files(self, template: str, locale: str, channel: Channel) -> str:
        have = self.templates.files(template, locale, channel)
        wanted = [p for p in REQUIRED_PARTS[channel] if p not in have]
        return " and ".join(f"templates/{template}.{locale}.{part}.j2" for part in wanted)

    def _check_template_files(self, node: _Node, template: str, channel: Channel) -> None:
        note = self._used_by(node)
        for locale in self.locales:
            key = (template, locale, channel)
            first_time = key not in self._checked_templates
            self._checked_templates.add(key)
            if first_time:
                for problem in self.templates.problems(template, locale, channel):
                    self._template_problem(
                        problem.file, problem.line, problem.col, problem.message, problem.hint, note
                    )
            self._check_template_variables(node, template, locale, channel, note)
            if not first_time or self.catalogue is None:
                continue
            if channel == Channel.sms:
                self._check_sms_length(node, template, locale)
                self._check_sms_links(node, template, locale, note)
            else:
                self._check_email_lines(node, template, locale, note)

    def _template_problem(
        self,
        file: Path,
        line: int,
        col: int,
        message: str,
        hint: str,
        note: str,
        severity: Severity = "error",
    ) -> None:
        shown = display_path(file, self.home)
        # When the file cannot be read the problem says so; it just has no quoted line.
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if not escapes(file, self.home):
                self.report.add_source(shown, file.read_text(encoding="utf-8"))
        self.report.add(Problem(shown, max(line, 1), col, "", message, hint, severity, note))

    def _check_template_variables(
        self, node: _Node, template: str, locale: str, channel: Channel, note: str
    ) -> None:
        names = _Names(self, self.events_at(node), template=True)
        paths = self.templates.referenced_paths(template, locale, channel)
        files = list(self.templates.files(template, locale, channel).values())
        for dotted in sorted(paths):
            finding = names.check(dotted)
            if finding is None:
                continue
            file, line, col = _find_in_files(files, ".".join(dotted), self.templates.root)
            self._template_problem(file, line, col, finding[0], finding[1], note)

    def _check_sms_length(self, node: _Node, template: str, locale: str) -> None:
        context = _sample_context(self, node, locale)
        marketing = self.spec.category == Category.marketing
        path = (*node.path, "template")
        try:
            sms = self.templates.render_sms(
                template, locale=locale, default_locale=locale, context=context, marketing=marketing
            )
        except RenderError as exc:
            # Sample data can trip a template in ways real data would not; say so, don't fail.
            self.warn(
                path,
                f"cannot render a sample {locale} SMS: {exc}",
                "check the template with `kairos preview`",
            )
            return
        limits = self.spec.sms or s.SmsLimitsSpec()
        if limits.alphabet == "gsm-7" and sms.encoding != "GSM-7":
            self._sms_leaves_gsm7(node, template, locale, sms.body)
        limit = limits.max_segments or SMS_SEGMENT_LIMIT
        if sms.segments > limit:
            hint = f"keep it to {SMS_SEGMENT_LIMIT} or fewer: each segment is billed"
            if limits.max_segments:
                hint = f"shorten it to {limit}: the journey's `sms: max_segments` is {limit}"
            self.warn(
                path,
                f"the {locale} SMS `{template}` is {sms.segments} {sms.encoding} segments "
                "with sample data",
                hint,
            )

    def _sms_leaves_gsm7(self, node: _Node, template: str, locale: str, body: str) -> None:
        """Point at the character that makes the SMS UCS-2, in the template when it is there."""
        char = analyse(body).non_gsm[0]
        shown = f"`{char}` (U+{ord(char):04X})"
        plain = _GSM_LOOKALIKES.get(char)
        hint = (
            f"write {plain} instead" if plain else "write it without characters outside GSM-7"
        ) + ": the journey's `sms: alphabet` is gsm-7"
        message = (
            f"{shown} makes the {locale} SMS `{template}` UCS-2: 70 characters a segment, not 160"
        )
        files = list(self.templates.files(template, locale, Channel.sms).values())
        file, line, col = _find_in_files(files, char, self.templates.root)
        if (line, col) == (1, 1) and char not in _first_line(file):
            # The character came from the sample data, not the template: point at the step.
            self.warn((*node.path, "template"), message, hint)
            return
        note = self._used_by(node)
        self._template_problem(file, line, col, message, hint, note, "warning")

    def _check_sms_links(self, node: _Node, template: str, locale: str, note: str) -> None:
        """A link written into an SMS where the event carries this customer's own link."""
        assert self.catalogue is not None
        carried = [
            (event, prop)
            for event in sorted(self.events_at(node))
            if (spec := self.catalogue.events.get(event)) is not None
            for prop in spec.properties
            if prop == "url" or prop.endswith("_url")
        ]
        if not carried:
            return
        read = self.templates.referenced_paths(template, locale, Channel.sms)
        if any(("event", prop) in read for _, prop in carried):
            return
        event, prop = carried[0]
        for link in self.templates.constant_links(template, locale, Channel.sms):
            self._template_problem(
                link.file,
                link.line,
                link.col,
                f"the {locale} SMS links to the constant {link.url}, but `{event}` carries "
                f"`{prop}`",
                f"link to {{{{ event.{prop} | default('{link.url}', true) }}}} so each customer "
                "gets their own link",
                note,
                "warning",
            )

    def _check_email_lines(self, node: _Node, template: str, locale: str, note: str) -> None:
        """Subjects and preheaders short enough for an inbox, with sample data."""
        context = _sample_context(self, node, locale)
        for part, limit, why in (
            ("subject", SUBJECT_LIMIT, "about 50 show in full on a phone"),
            ("preheader", PREHEADER_LIMIT, "inboxes show 40 to 100 after the subject"),
        ):
            try:
                text = self.templates.render_line(template, locale, part, context)
            except RenderError:
                continue  # a sample-data problem; rendering checks report real ones
            if text is None or len(text) <= limit:
                continue
            file = self.templates.files(template, locale, Channel.email)[part]
            self._template_problem(
                file,
                1,
                1,
                f"the {locale} {part} is {len(text)} characters with sample data: `{text}`",
                f"keep it to {limit} or fewer; {why}",
                note,
                "warning",
            )

    def _used_by(self, node: _Node) -> str:
        used_at = self.doc.positions.value((*node.path, "template"))
        return f"used by {self.doc.file}:{used_at.line}:{used_at.col} ({format_path(node.path)})"

    # Conditions and templated text ---------------------------------------------------------

    def _check_condition(self, path: YamlPath, text: str | None, events: frozenset[str]) -> None:
        if text is None:
            return
        if not self._shallow(path, text, template=False):
            return
        syntax = expressions.check_syntax(text)
        if syntax is not None:
            self.error(
                path,
                f"`{text}` is not a valid condition: {syntax}",
                'write a Jinja expression without {{ }}, such as "event.total > 0"',
            )
            return
        try:
            paths = expressions.referenced_paths(text)
            compared = expressions.compared_paths(text)
        except TemplateError as exc:  # parses alone, but not inside {{ }} (a stray "}}")
            self.error(path, f"`{text}` is not a valid condition: {exc}", "remove the braces")
            return
        if self._safe(path, text, template=False) and self._deterministic(
            path, text, template=False
        ):
            self._check_variables(path, text, paths, events)
            self._check_optional_comparisons(path, text, compared, events)

    def _shallow(self, path: YamlPath, text: str, *, template: bool) -> bool:
        """Refuse expressions nested deeper than Jinja's recursive parser can take."""
        deep = too_deep(text if template else "{{ " + text + " }}")
        if deep is not None:
            self.error(path, deep[1], NESTING_HINT)
        return deep is None

    def _safe(self, path: YamlPath, text: str, *, template: bool) -> bool:
        """Refuse what the sandbox would stop at send time, and huge constants (errors)."""
        found = expressions.refused(text, template=template)
        for refused in found:
            at = _find_in_value(self.doc, path, refused.needle, text)
            self.error(path, refused.message, refused.hint, at=at)
        return not found

    def _deterministic(self, path: YamlPath, text: str, *, template: bool) -> bool:
        """Refuse what would give another answer on a replay of the run (an error)."""
        found = expressions.nondeterministic(text, template=template)
        if found:
            self.error(
                path,
                f"`{found[0]}` gives a different answer each time, and a run must take the same "
                "path every time it is replayed",
                "use a `split` step to send customers different ways at random",
            )
        return not found

    def _check_optional_comparisons(
        self, path: YamlPath, text: str, compared: set[tuple[str, ...]], events: frozenset[str]
    ) -> None:
        if self.catalogue is None:
            return
        for dotted in sorted(compared):
            if dotted[0] != "event" or len(dotted) != 2:
                continue
            optional = sorted(
                name
                for name in events
                if (spec := self.catalogue.events.get(name)) is not None
                and (prop := spec.properties.get(dotted[1])) is not None
                and not prop.required
                and prop.default is None
            )
            if optional:
                shown = ".".join(dotted)
                self.warn(
                    path,
                    f"`{shown}` is optional in `{optional[0]}`: when it is missing, "
                    f"`{text}` is false",
                    f"say what you mean with `{shown} is defined and ...` or "
                    f"`({shown} or 0)`, or make the property required",
                )

    def _check_text(self, path: YamlPath, text: str, node: _Node) -> None:
        if not self._shallow(path, text, template=True):
            return
        try:
            paths = expressions.referenced_paths(text, template=True)
        except TemplateError as exc:
            self.error(path, f"invalid {{{{ }}}} text: {exc}", "check the braces and quotes")
            return
        # Set and action values are rendered by the run itself: the same rule as conditions.
        if self._safe(path, text, template=True) and self._deterministic(path, text, template=True):
            self._check_variables(path, text, paths, self.events_at(node))

    def _check_variables(
        self, path: YamlPath, text: str, paths: set[tuple[str, ...]], events: frozenset[str]
    ) -> None:
        names = _Names(self, events, template=False)
        for dotted in sorted(paths):
            finding = names.check(dotted)
            if finding is not None:
                at = _find_in_value(self.doc, path, ".".join(dotted), text)
                self.error(path, finding[0], finding[1], at=at)

    # The graph -----------------------------------------------------------------------------

    def _check_graph(self, start: str | None) -> None:
        if any(p.severity == "error" and p.file == self.doc.file for p in self.report.problems):
            return  # a dangling goto or a duplicate id would make the graph misleading
        reachable = _reachable(self.steps, start)
        for node in self.nodes:
            if node.id in reachable or not self._first_unreachable(node, reachable):
                continue
            self.warn(
                node.path,
                f"step `{node.id}` can never run",
                "nothing leads here: it follows a goto or an exit; move it or remove it",
            )
        for node in self.nodes:
            spec = node.spec
            if (
                isinstance(spec, s.GotoStep)
                and node.id in reachable
                and _busy_loop(self.steps, node.id)
            ):
                self.warn(
                    (*node.path, "goto"),
                    f"`goto: {spec.goto}` loops without waiting",
                    "put a wait or wait_for inside the loop, or it repeats at once",
                )

    def _first_unreachable(self, node: _Node, reachable: set[str]) -> bool:
        """Report only where unreachable code begins, not every step after it."""
        for other in (node.previous, node.parent):
            if other is not None and self.by_path[other].id not in reachable:
                return False
        return True


# --- names in conditions and templates ------------------------------------------------------


class _Names:
    """What ``customer.X``, ``event.X`` and ``journey.X`` may be at one point of a journey."""

    def __init__(self, journey: _Journey, events: frozenset[str], *, template: bool) -> None:
        self.catalogue = journey.catalogue
        self.events = events
        self.saved = journey.saved
        self.template = template

    def check(self, dotted: tuple[str, ...]) -> tuple[str, str] | None:
        """(message, hint) when ``dotted`` is not declared; None when it is fine."""
        if self.catalogue is None:
            return None
        root, rest = dotted[0], dotted[1:]
        if not rest:
            if root in ("customer", "event", "journey"):
                return None
            roots = ["customer", "event", "journey"] + (
                ["unsubscribe_url"] if self.template else []
            )
            return f"unknown variable `{root}`", (suggestion(root, roots, kind="use"))
        match root:
            case "customer":
                return self._customer(rest)
            case "event":
                return self._event(rest[0])
            case "journey":
                return self._journey(rest)
            case _:
                roots = ["customer", "event", "journey"]
                return f"unknown variable `{root}`", (suggestion(root, roots, kind="use"))

    def _customer(self, rest: tuple[str, ...]) -> tuple[str, str] | None:
        assert self.catalogue is not None
        name = rest[0]
        if name == "consent" and len(rest) > 1 and rest[1] not in CONSENT_KEYS:
            return f"`customer.consent.{rest[1]}` is not a consent", "use " + quote_list(
                CONSENT_KEYS
            )
        if name in BUILTIN_PROFILE or name in self.catalogue.profile:
            return None
        options = [*self.catalogue.profile, *BUILTIN_PROFILE]
        hint = suggestion(name, options, kind="")
        if hint.startswith("did you mean"):
            hint = f"did you mean `customer.{did_you_mean(name, options)}`?"
        else:
            hint = "declare it under `profile:` in journeys/customer.yaml"
        return f"`customer.{name}` is not a profile attribute", hint

    def _event(self, name: str) -> tuple[str, str] | None:
        assert self.catalogue is not None
        if name in BUILTIN_EVENT:
            return None
        known = [e for e in sorted(self.events) if e in self.catalogue.events]
        if not known:
            return f"`event.{name}`: no event is current here", (
                "event.* is only set by an event trigger or inside a wait_for"
            )
        properties = {p for e in known for p in self.catalogue.events[e].properties}
        if name in properties:
            return None
        close = did_you_mean(name, [*properties, *BUILTIN_EVENT])
        hint = (
            f"did you mean `event.{close}`?"
            if close
            else (f"declare it under `events: {known[0]}: properties:` in journeys/customer.yaml")
        )
        return f"`event.{name}` is not a property of {quote_list(known)}", hint

    def _journey(self, rest: tuple[str, ...]) -> tuple[str, str] | None:
        name = rest[0]
        if name in JOURNEY_NAMES:
            return None
        if name not in self.saved:
            options = [*JOURNEY_NAMES, *self.saved]
            close = did_you_mean(name, options)
            hint = (
                f"did you mean `journey.{close}`?"
                if close
                else (f"journey has {quote_list(options)}; actions add theirs with `save_as`")
            )
            return f"`journey.{name}` is not known", hint
        action = ACTIONS.get(self.saved[name] or "")
        if action is None or len(rest) < 2 or rest[1] in action.result:
            return None
        close = did_you_mean(rest[1], action.result)
        hint = (
            f"did you mean `journey.{name}.{close}`?"
            if close
            else (f"it has {quote_list(action.result)}")
        )
        return f"`journey.{name}.{rest[1]}` is not in the {action.name} result", hint


# --- helpers ------------------------------------------------------------------------------


def _children(
    spec: s.StepSpec, path: YamlPath, on_event: str | None
) -> Iterator[tuple[Sequence[s.StepSpec], YamlPath, str | None]]:
    """Nested step lists of a step, with their paths and the event current in them."""
    match spec:
        case s.WaitForStep():
            for event, steps in (spec.on or {}).items():
                yield steps, (*path, "on", event), event
            if spec.on_timeout:
                yield spec.on_timeout, (*path, "on_timeout"), on_event
        case s.BranchStep():
            for index, case in enumerate(spec.branch):
                if isinstance(case, s.ElseCase):
                    yield case.else_, (*path, "branch", index, "else"), on_event
                else:
                    yield case.steps, (*path, "branch", index, "steps"), on_event
        case s.SplitStep():
            for index, variant in enumerate(spec.split.variants):
                yield variant.steps, (*path, "split", "variants", index, "steps"), on_event
        case _:
            return


def _event_refs(value: Any, path: YamlPath) -> list[_EventRef]:
    """The events of ``wait_for`` / ``exit_on`` in any of their written forms."""
    match value:
        case str():
            return [_EventRef(value, None, path)]
        case s.EventMatchSpec():
            return [_EventRef(value.event, value.when, (*path, "event"))]
        case list():
            refs: list[_EventRef] = []
            for index, item in enumerate(value):
                refs.extend(_event_refs(item, (*path, index)))
            return refs
        case _:
            return []


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:48].rstrip("_")


def _base_id(spec: s.StepSpec) -> str:
    """The derived id of a step without ``id:``: its kind and what it does."""
    match spec:
        case s.SendStep():
            return _slug(f"send_{spec.send.value}_{spec.template}")
        case s.WaitStep():
            wait = spec.wait
            if isinstance(wait, s.WaitUntil):
                until = wait.until.removeprefix("customer.").replace(":", "")
                return _slug(f"wait_until_{until}")
            return _slug("wait_" + _short_duration(wait))
        case s.WaitForStep():
            events = [r.event for r in _event_refs(spec.wait_for, ())]
            return _slug("wait_for_" + "_or_".join(events))
        case s.BranchStep():
            return "branch"
        case s.SplitStep():
            return _slug("split_" + "_".join(v.name for v in spec.split.variants))
        case s.SetStep():
            return _slug("set_" + "_".join(_set_words(spec.set)))
        case s.ActionStep():
            if isinstance(spec.action, s.WebhookSpec):
                return _slug("webhook_" + (urlparse(spec.action.webhook).hostname or ""))
            return _slug(f"action_{spec.action}")
        case s.GotoStep():
            return _slug(f"goto_{spec.goto}")
        case s.ExitStep():
            return _slug(f"exit_{spec.exit}")
        case _:
            assert_never(spec)


def _short_duration(text: str) -> str:
    """``14d`` stays ``14d``; ``1 hour 30 minutes`` becomes ``1h30m`` (units by first letter)."""
    parts = re.findall(r"(-?\d+)\s*([A-Za-z]+)", text)
    return "".join(f"{amount}{unit[0].lower()}" for amount, unit in parts)


def _set_words(change: s.SetSpec) -> list[str]:
    words = [f"stage_{change.stage.value}"] if change.stage else []
    return words + list(change.attributes) + list(change.increment)


def _next_free(base: str, counters: dict[str, int], taken: Mapping[str, Any]) -> str:
    """``base``, then ``base_2``, ``base_3``...; branches are always numbered (branch_1).

    Numbering goes by order of appearance among steps with the same base, so adding a step of
    another kind never renames this one. Ids taken explicitly are skipped.
    """
    while True:
        counters[base] = counters.get(base, 0) + 1
        count = counters[base]
        candidate = f"{base}_{count}" if (count > 1 or base == "branch") else base
        if candidate not in taken:
            return candidate


def _wait_step(spec: s.WaitStep, step_id: str, nxt: str | None) -> WaitStep:
    wait = spec.wait
    if not isinstance(wait, s.WaitUntil):
        return WaitStep(id=step_id, duration_seconds=parse_duration(wait), next=nxt)
    offset = parse_duration(wait.offset) if wait.offset else 0
    if wait.until.startswith("customer."):
        attribute = wait.until.removeprefix("customer.")
        return WaitStep(id=step_id, until_attribute=attribute, offset_seconds=offset, next=nxt)
    return WaitStep(id=step_id, time_of_day=_hhmm(wait.until), next=nxt)


def _action_step(spec: s.ActionStep, step_id: str, nxt: str | None) -> ActionStep:
    if isinstance(spec.action, s.WebhookSpec):
        hook = spec.action
        webhook = Webhook(
            url=hook.webhook, method=hook.method, headers=dict(hook.headers), body=hook.body
        )
        return ActionStep(id=step_id, webhook=webhook, save_as=spec.save_as, next=nxt)
    return ActionStep(
        id=step_id, action=spec.action, args=dict(spec.with_), save_as=spec.save_as, next=nxt
    )


def _hhmm(text: str) -> str:
    hours, minutes = text.split(":")
    return f"{int(hours):02d}:{minutes}"


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    """Every text value inside a JSON-like structure, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _successors(step: PlanStep) -> list[str]:
    match step:
        case SendStep() | WaitStep() | SetStep() | ActionStep():
            targets = [step.next]
        case WaitForStep():
            targets = [o.next for o in step.events] + [step.on_timeout]
        case BranchStep():
            targets = [c.next for c in step.cases] + [step.otherwise]
        case SplitStep():
            targets = [v.next for v in step.variants] + [step.holdout_next]
        case GotoStep():
            targets = [step.target]
        case ExitStep():
            targets = []
        case _:
            assert_never(step)
    return [t for t in targets if t is not None]


def _reachable(steps: Mapping[str, PlanStep], start: str | None) -> set[str]:
    seen: set[str] = set()
    queue = [start] if start else []
    while queue:
        current = queue.pop()
        if current in seen or current not in steps:
            continue
        seen.add(current)
        queue.extend(_successors(steps[current]))
    return seen


def _busy_loop(steps: Mapping[str, PlanStep], goto_id: str) -> bool:
    """Whether a goto comes back to itself without passing a wait or wait_for."""
    goto = steps[goto_id]
    assert isinstance(goto, GotoStep)
    seen: set[str] = set()
    queue = [goto.target]
    while queue:
        current = queue.pop()
        if current == goto_id:
            return True
        step = steps.get(current)
        if current in seen or step is None or isinstance(step, WaitStep | WaitForStep):
            continue
        seen.add(current)
        queue.extend(_successors(step))
    return False


def _template_names(root: Path) -> list[str]:
    """``folder/message`` for every template file, for did-you-mean."""
    names = set()
    for path in root.glob("*/*.j2"):
        if path.parent.name != "layouts":
            names.add(f"{path.parent.name}/{path.name.split('.')[0]}")
    return sorted(names)


def _find_in_value(doc: YamlDocument, path: YamlPath, needle: str, text: str) -> Position:
    """Where ``needle`` is written inside the value at ``path`` (the value itself if unsure)."""
    start = doc.positions.value(path)
    lines = doc.lines()
    for offset in range(text.count("\n") + 3):
        number = start.line + offset
        if number > len(lines):
            break
        column = lines[number - 1].find(needle, start.col - 1 if offset == 0 else 0)
        if column >= 0:
            return Position(number, column + 1)
    return start


def _find_in_files(files: list[Path], needle: str, root: Path) -> tuple[Path, int, int]:
    """The first file, line and column where ``needle`` appears (layouts searched last)."""
    candidates = [*files, *sorted((root / "layouts").glob("*.j2"))]
    for file in candidates:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(lines, start=1):
            column = line.find(needle)
            if column >= 0:
                return file, number, column + 1
    return (files[0] if files else root), 1, 1


# --- sample data for SMS length -------------------------------------------------------------

_SAMPLE_BY_TYPE: Mapping[AttrType, Any] = {
    AttrType.string: "Sample text",
    AttrType.number: 123.45,
    AttrType.integer: 3,
    AttrType.boolean: True,
    AttrType.datetime: "2026-01-31T09:00:00+00:00",
    AttrType.date: "2026-01-31",
    AttrType.email: "alexandra.virtanen@example.com",
    AttrType.phone: "+358401234567",
    AttrType.locale: "en",
    AttrType.timezone: "Europe/Helsinki",
    AttrType.list: ["Sample item"],
    AttrType.object: {},
}


def _sample_value(name: str, attr: Attribute) -> Any:
    """A plausible value of realistic length, so segment counts mean something."""
    if attr.type == AttrType.string:
        if name.endswith("url"):
            return "https://shop.example.com/c/8d2f0a61b7c94e3a"
        if name.endswith(("first_name", "last_name")) or name == "name":
            return "Alexandra"
        if "name" in name:
            return "Ethiopia Yirgacheffe"  # a product, as long as real ones are
        if "currency" in name:
            return "EUR"
        if "code" in name:
            return "SAVE20-7KQ2X"
    return _SAMPLE_BY_TYPE[attr.type]


_SAMPLE_NOW = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)


def _first_line(file: Path) -> str:
    try:
        with file.open(encoding="utf-8") as handle:
            return handle.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def _saved(journey: _Journey) -> list[tuple[str, str]]:
    return [(name, action or "") for name, action in journey.saved.items()]


def _sample_context(journey: _Journey, node: _Node, locale: str) -> dict[str, Any]:
    catalogue = journey.catalogue or Catalogue()
    customer: dict[str, Any] = {n: _sample_value(n, a) for n, a in catalogue.profile.items()}
    customer |= {
        "id": "sample-customer",
        "stage": journey.spec.stage or "consideration",
        "consent": dict.fromkeys(CONSENT_KEYS, True),
    }
    locale_attr = catalogue.attribute_of_type(AttrType.locale)
    if locale_attr:
        customer[locale_attr] = locale
    event: dict[str, Any] = {"id": "sample-event", "timestamp": "2026-01-31T09:00:00+00:00"}
    for name in sorted(journey.events_at(node)):
        spec = catalogue.events.get(name)
        if spec is not None:
            event |= {p: _sample_value(p, a) for p, a in spec.properties.items()}
            event["name"] = name
    saved = {
        name: action_sample(action, journey.saved_args.get(name, {}), _SAMPLE_NOW)
        for name, action in _saved(journey)
    }
    return {
        "customer": customer,
        "event": event,
        "journey": {
            "name": journey.spec.journey,
            "version": "sample",
            "step": node.id,
            "variant": "a",
            "started_at": "2026-01-31T09:00:00+00:00",
            **saved,
        },
        "unsubscribe_url": unsubscribe_url(
            "https://kairos.example.com", "sample-customer", secret="sample", now=1769850000
        ),
    }
