"""Conditions and templated text in a journey: syntax, the sandbox's refusals, replay safety,
and every ``customer.X``, ``event.X`` and ``journey.X`` they read checked against the
catalogue, the current events and what actions saved (:class:`_Names`, also used for the
variables of message templates).
"""

from __future__ import annotations

from jinja2.exceptions import TemplateError

from kairos.language import expressions
from kairos.language.actions_catalogue import ACTIONS
from kairos.language.catalogue import BUILTIN_EVENT, BUILTIN_PROFILE, CONSENT_KEYS
from kairos.language.compiler_state import JourneyState, _Node
from kairos.language.problems import did_you_mean, quote_list, suggestion
from kairos.language.template_safety import NESTING_HINT, too_deep
from kairos.language.yaml_source import Position, YamlDocument, YamlPath

JOURNEY_NAMES = ("name", "version", "step", "variant", "started_at")


class ConditionChecks(JourneyState):
    """Checks of the conditions and ``{{ }}`` text a journey writes."""

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


class _Names:
    """What ``customer.X``, ``event.X`` and ``journey.X`` may be at one point of a journey."""

    def __init__(self, journey: JourneyState, events: frozenset[str], *, template: bool) -> None:
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
