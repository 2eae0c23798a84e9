"""Load ``journeys/customer.yaml`` into a :class:`~kairos.language.catalogue.Catalogue` and check
what the schema alone cannot: usable names, consent flags on booleans, event properties copied to
the profile, and the ``scoring:`` rules (a number attribute, declared events, conditions that
read only that event and the customer).
"""

from __future__ import annotations

import re
from pathlib import Path

from kairos.language import expressions
from kairos.language.catalogue import (
    BUILTIN_EVENT,
    BUILTIN_PROFILE,
    Attribute,
    AttrType,
    Catalogue,
    ScoreRule,
)
from kairos.language.durations import DurationError, parse_duration
from kairos.language.problems import Problem, Report, suggestion
from kairos.language.project_files import CATALOGUE_FILE, display_path, load_document
from kairos.language.schema_errors import validate_document
from kairos.language.yaml_source import YamlDocument, YamlPath

_NUMERIC = (AttrType.number, AttrType.integer)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    doc = load_document(path, shown, report, home)
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
