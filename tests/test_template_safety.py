"""Sandbox escapes and huge constants in templates, conditions and set values.

``kairos validate`` refuses them with file:line (the broken-project table has one fixture per
kind); these tests hold the parts the table cannot show: that nothing huge is allocated while
checking (counted in bytes by tracemalloc, not timed), and that the send-time sandbox refuses
the same things when they come from data.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kairos.language.compiler import check_project
from kairos.language.expressions import ExpressionError, evaluate, refused
from kairos.language.template_safety import MAX_CONSTANT
from kairos.language.yaml_source import MAX_BYTES
from kairos.messages.rendering import RenderError, TemplateStore
from tests.test_language_invalid import INVALID, make_project

SECRET = "THE-CONTENT-OF-ANOTHER-FILE"


def peak_bytes(work: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["template_huge_constant", "set_value_huge_constant"])
def test_validating_a_huge_constant_allocates_no_more_than_a_normal_project(
    case: str, tmp_path: Path
) -> None:
    home = make_project(tmp_path, INVALID / case)
    report = None

    def check() -> None:
        nonlocal report
        report = check_project(home)[1]

    assert peak_bytes(check) < 50_000_000  # the constant alone would be 200 MB
    assert report is not None and len(report.errors) == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "condition",
    [
        "customer.__class__",
        "customer['__init__']",
        "customer|attr('__class__')",
        "'{0.__class__}'.format(customer)",
        "'{x.__class__}'.format_map(customer)",
        "customer.mro()",
        "self._TemplateReference__context",
        "lipsum.__globals__",
        "cycler.__init__.__globals__.os",
        "namespace().gi_frame",
    ],
)
def test_known_sandbox_escapes_are_refused_before_they_run(condition: str) -> None:
    assert len(refused(condition)) == 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "condition",
    [
        "'x' * 200000000",
        "200000000 * 'x'",
        "('x' * 1000) * 1000",
        "[0] * 200000000",
        "9 ** 999999",
        "'%0200000000d' % 1",
        "'x' | center(200000000)",
        "'x' | indent(width=200000000)",
        "'x'.ljust(200000000)",
        "(('x' * 60000) ~ ('y' * 60000)) * 2",
    ],
)
def test_huge_constant_expressions_are_refused(condition: str) -> None:
    [problem] = refused(condition)
    assert problem.message.startswith("this expression makes ")


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "condition",
    [
        "customer.first_name * 3",
        "'-' * 40",
        "2 ** 10",
        "'%5d' % event.total",
        "customer.format",  # a profile attribute may be called `format`
        "customer.first_name | center(20)",
    ],
)
def test_ordinary_expressions_are_not_refused(condition: str) -> None:
    assert refused(condition) == []


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("expression", "customer"),
    [
        ("customer.name * customer.times", {"name": "x", "times": 200_000_000}),
        ("customer.times * [0]", {"times": 200_000_000}),
        ("customer.base ** customer.times", {"base": 9, "times": 999_999}),
        ("customer.name | center(customer.times)", {"name": "x", "times": 200_000_000}),
        ("customer.pattern % 1", {"pattern": "%0200000000d"}),
    ],
)
def test_at_run_time_data_cannot_make_a_huge_value_either(
    expression: str, customer: dict[str, Any]
) -> None:
    made: list[Any] = []

    def run() -> None:
        with pytest.raises(ExpressionError, match="the limit is"):
            made.append(evaluate(expression, {"customer": customer}))

    assert peak_bytes(run) < 10_000_000 and made == []


@pytest.mark.timeout(20)
def test_a_repetition_within_the_limit_still_renders() -> None:
    assert evaluate("customer.name * times", {"customer": {"name": "ab"}, "times": 3}) == "ababab"
    assert len(evaluate(f"'x' * {MAX_CONSTANT}", {})) == MAX_CONSTANT


@pytest.mark.timeout(30)
def test_sending_a_template_with_a_huge_constant_fails_without_allocating_it(
    tmp_path: Path,
) -> None:
    home = make_project(tmp_path, INVALID / "template_huge_constant")
    store = TemplateStore(home / "templates")

    def send() -> None:
        with pytest.raises(RenderError, match="the limit is"):
            store.render_email(
                "promo/sale",
                locale="en",
                default_locale="en",
                context={"customer": {"first_name": "Ada"}},
                marketing=False,
            )

    assert peak_bytes(send) < 50_000_000


@pytest.mark.timeout(30)
def test_a_template_linked_outside_the_project_is_refused_unread(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "template_syntax_error")
    secret = tmp_path / "secret.j2"
    secret.write_text("{{ " + SECRET + " }\n")  # a syntax error would quote this line
    link = home / "templates" / "promo" / "sale.en.html.j2"
    link.unlink()
    link.symlink_to(secret)
    _, report = check_project(home)
    assert SECRET not in report.format()
    assert report.headlines() == [
        "templates/promo/sale.en.html.j2:1:1: a symbolic link to a file outside the project "
        "(copy the file into the project instead of linking to it)"
    ]


@pytest.mark.timeout(30)
def test_a_template_over_the_size_limit_is_refused_unparsed(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "template_syntax_error")
    big = home / "templates" / "promo" / "sale.en.html.j2"
    big.write_text("<p>Hi</p>\n" * (MAX_BYTES // 10 + 1))
    _, report = check_project(home)
    size = big.stat().st_size
    assert report.headlines() == [
        f"templates/promo/sale.en.html.j2:1:1: the file is {size:,} bytes; the limit is "
        f"{MAX_BYTES:,} (split it with {{% include %}})"
    ]


@pytest.mark.timeout(20)
def test_a_set_value_nested_too_deep_is_one_error_not_a_recursion_error(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    (home / "journeys" / "deep.yaml").write_text(
        "journey: deep\ntrigger: {event: signed_up}\nsteps:\n  - set:\n      attributes:\n"
        '        plan: "{{ ' + "(" * 2000 + "1" + ")" * 2000 + ' }}"\n'
    )
    _, report = check_project(home)
    assert [p.headline()[:60] for p in report.errors] == [
        "journeys/deep.yaml:6:15: steps[0].set.attributes.plan: brack"
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "expression",
    [
        "customer.first_name" + " | e" * 3000,
        " ~ ".join(["customer.first_name"] * 3) + " + 1" * 3000,
        "customer" + ".a" * 3000,
        "not " * 3000 + "customer.first_name",
    ],
    ids=["filters", "operators", "dots", "nots"],
)
def test_a_template_chain_too_long_to_compile_is_one_error_not_a_recursion_error(
    expression: str, tmp_path: Path
) -> None:
    home = make_project(tmp_path, INVALID / "template_syntax_error")
    page = home / "templates" / "promo" / "sale.en.html.j2"
    page.write_text("<p>Hi</p>\n<p>{{ " + expression + " }}</p>\n")
    _, report = check_project(home)
    assert report.headlines() == [
        "templates/promo/sale.en.html.j2:2:4: more than 100 operators, filters and `.` in one "
        "expression (split it into smaller expressions; nobody can read one this deep)"
    ]


@pytest.mark.timeout(30)
def test_a_chain_of_one_hundred_still_compiles_and_renders() -> None:
    assert evaluate(" + ".join(["1"] * 101), {}) == 101
    nested: dict[str, Any] = {"a": "deep"}
    for _ in range(99):
        nested = {"a": nested}
    assert evaluate("customer" + ".a" * 100, {"customer": nested}) == "deep"
