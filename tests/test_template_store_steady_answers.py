"""What ``TemplateStore.steady()`` remembers while a project is checked: a subject or preheader
rendered with sample data is rendered again whenever a value it (or a file it reaches) reads
differs, and never when only values it does not read differ."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kairos.messages.rendering import TemplateStore

NOW = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)


def _store(tmp_path: Path, subject: str, **others: str) -> tuple[TemplateStore, list[str]]:
    root = tmp_path / "templates"
    (root / "m").mkdir(parents=True)
    (root / "m" / "a.en.subject.j2").write_text(subject, encoding="utf-8")
    (root / "m" / "a.en.html.j2").write_text("<p>hi</p>", encoding="utf-8")
    for name, text in others.items():
        (root / "m" / f"{name}.j2").write_text(text, encoding="utf-8")
    clock = [NOW]
    store = TemplateStore(root, clock=lambda: clock[0])
    store.clock_moves = clock  # type: ignore[attr-defined]
    rendered: list[str] = []
    real = store._render

    def counted(name: str, ctx: Any) -> str:
        rendered.append(name)
        return real(name, ctx)

    store._render = counted  # type: ignore[method-assign]
    return store, rendered


def _context(name: str = "j1", percent: int = 20, **customer: Any) -> dict[str, Any]:
    return {
        "customer": {"first_name": "Ada", "timezone": "UTC", **customer},
        "event": {"kind": "cart", "cart": "3 items", "total": 12},
        "journey": {"name": name, "step": "s1", "coupon": {"percent": percent}},
    }


def _line(store: TemplateStore, context: dict[str, Any]) -> str | None:
    return store.render_line("m/a", "en", "subject", context)


def test_a_subject_renders_once_for_values_it_does_not_read_and_again_for_one_it_does(
    tmp_path: Path,
) -> None:
    store, rendered = _store(tmp_path, "{{ customer.first_name }}: {{ journey.coupon.percent }}%")
    with store.steady():
        assert _line(store, _context("j1")) == "Ada: 20%"
        assert _line(store, _context("j2")) == "Ada: 20%"  # the journey's name is not read
        assert len(rendered) == 1
        assert _line(store, _context("j2", percent=30)) == "Ada: 30%"
        assert _line(store, _context("j2", first_name="Bo")) == "Bo: 20%"
        assert len(rendered) == 3
    assert _line(store, _context("j3")) == "Ada: 20%"  # outside steady() nothing is kept
    assert _line(store, _context("j3")) == "Ada: 20%"
    assert len(rendered) == 5


@pytest.mark.parametrize(
    ("subject", "change", "before", "after"),
    [
        # A step made by an expression reads the value before it whole.
        ("{{ event[event.kind] }}", {"event": {"kind": "cart", "cart": "4"}}, "3 items", "4"),
        # A key the mapping lacks reads the mapping whole (a method, or undefined).
        (
            "{{ journey.coupon.code | default('none') }}",
            {"journey": {"coupon": {"percent": 20, "code": "X1"}}},
            "none",
            "X1",
        ),
        # A whole mapping iterated.
        (
            "{% for k in event %}{{ k }} {% endfor %}",
            {"event": {"kind": "cart", "cart": "3 items", "total": 12, "extra": 1}},
            "kind cart total",
            "kind cart total extra",
        ),
        # 12 and 12.0 are equal, and print apart.
        ("{{ event.total }}", {"event": {"total": 12.0}}, "12", "12.0"),
        # The customer's timezone is read by the render's own scope, for dates.
        (
            "{{ '2026-01-31T23:30:00+00:00' | date('yyyy-MM-dd') }}",
            {"customer": {"timezone": "Europe/Helsinki"}},
            "2026-01-31",
            "2026-02-01",
        ),
        # What an included or imported file reads counts too.
        (
            '{% include "m/part.j2" %}',
            {"customer": {"first_name": "Ada", "timezone": "UTC", "last_name": "Lee"}},
            "Ada",
            "Ada Lee",
        ),
        (
            '{% from "m/macros.j2" import who with context %}{{ who() }}',
            {"customer": {"first_name": "Ada", "timezone": "UTC", "last_name": "Lee"}},
            "Ada",
            "Ada Lee",
        ),
    ],
)
def test_a_changed_value_the_subject_reads_renders_it_again(
    tmp_path: Path, subject: str, change: dict[str, Any], before: str, after: str
) -> None:
    reads_last_name = (
        "{{ customer.first_name }}"
        "{{ (' ' ~ customer.last_name) if customer.last_name is defined else '' }}"
    )
    store, rendered = _store(
        tmp_path,
        subject,
        part=reads_last_name,
        macros="{% macro who() %}" + reads_last_name + "{% endmacro %}",
    )
    with store.steady():
        assert _line(store, _context()) == before
        assert _line(store, {**_context(), **change}) == after
        assert len(rendered) == 2


def test_a_subject_reading_the_clock_or_chance_is_rendered_every_time(tmp_path: Path) -> None:
    store, rendered = _store(tmp_path, "sale ends {{ '2026-02-01T09:00:00+00:00' | timeago }}")
    with store.steady():
        assert _line(store, _context()) == "sale ends in 1 day"
        store.clock_moves[0] = NOW + timedelta(days=3)  # type: ignore[attr-defined]
        assert _line(store, _context()) == "sale ends 2 days ago"
        assert len(rendered) == 2
    chance, rendered = _store(tmp_path / "b", "{{ [1, 2, 3] | random }}")
    with chance.steady():
        for _ in range(3):
            _line(chance, _context())
        assert len(rendered) == 3


def test_a_value_that_is_not_plain_data_is_never_taken_for_another(tmp_path: Path) -> None:
    class Shown:
        def __init__(self, text: str) -> None:
            self.text = text

        def __str__(self) -> str:
            return self.text

    store, rendered = _store(tmp_path, "{{ event.thing }}")
    with store.steady():
        for text in ("one", "two", "two"):
            context = _context()
            context["event"] = {"thing": Shown(text)}
            assert _line(store, context) == text
        assert len(rendered) == 3


def test_a_project_check_gathers_each_template_tree_once_and_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.project import make_home
    from kairos.language import compiler
    from kairos.language.pinning import template_tree

    home = make_home(tmp_path, copies=2)
    gathered: list[str] = []

    def counted(plan: Any, templates: TemplateStore) -> dict[str, str]:
        gathered.append(plan.templates)
        return template_tree(plan, templates)

    monkeypatch.setattr(compiler, "template_tree", counted)
    project, report = compiler.check_project(home)
    assert project is not None, report
    assert sorted(gathered) == sorted(project.trees) and len(set(gathered)) == len(gathered)
    assert len(project.trees) < len(project.plans)  # copies share trees
    fresh = TemplateStore(home / "templates")  # no steady() answers: every file read again
    for plan in project.plans.values():
        if plan.templates:
            assert project.trees[plan.templates] == template_tree(plan, fresh)


def test_an_sms_is_rendered_again_for_a_changed_value_it_reads_and_not_for_others(
    tmp_path: Path,
) -> None:
    store, rendered = _store(tmp_path, "unused")
    (store.root / "m" / "s.en.sms.j2").write_text(
        "{{ customer.first_name }}, {{ journey.coupon.percent }}% off", encoding="utf-8"
    )

    def sms(context: dict[str, Any], marketing: bool = False) -> str:
        content = store.render_sms(
            "m/s", locale="en", default_locale="en", context=context, marketing=marketing
        )
        return content.body

    with store.steady():
        assert sms(_context("j1")) == sms(_context("j2")) == "Ada, 20% off"
        assert len(rendered) == 1
        assert sms(_context("j2", percent=5)) == "Ada, 5% off"
        assert sms(_context("j2"), marketing=True) != "Ada, 20% off"  # the opt-out is added
        assert len(rendered) == 3
