"""The broken-journey table: every fixture under tests/fixtures/invalid/ must produce exactly
the problems listed in its expected.txt, each as ``file:line:col: path: message (hint)``.

A case is a folder of files laid over the small valid project in tests/fixtures/language/
(a ``_delete`` file lists project files to remove first), so each case shows only what is
broken about it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kairos.language.compiler import check_project
from kairos.language.problems import ProjectError
from kairos.language.project import load_project

FIXTURES = Path(__file__).parent / "fixtures"
VALID = FIXTURES / "language"
INVALID = FIXTURES / "invalid"
CASES = sorted(path for path in INVALID.iterdir() if (path / "expected.txt").is_file())


def make_project(tmp_path: Path, overlay: Path | None = None) -> Path:
    """A copy of the valid fixture project, with ``overlay``'s files laid over it."""
    home = tmp_path / "project"
    shutil.copytree(VALID, home)
    if overlay is None:
        return home
    delete = overlay / "_delete"
    if delete.is_file():
        for name in delete.read_text().split():
            (home / name).unlink()
    for source in overlay.rglob("*"):
        if source.is_file() and source.name not in ("_delete", "expected.txt"):
            target = home / source.relative_to(overlay)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return home


def test_the_table_covers_at_least_forty_broken_projects() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_broken_project_reports_exactly_its_problems(case: Path, tmp_path: Path) -> None:
    home = make_project(tmp_path, case)
    project, report = check_project(home)
    expected = (case / "expected.txt").read_text(encoding="utf-8").splitlines()
    assert report.headlines() == expected
    has_error = any(": warning: " not in line for line in expected)
    assert (project is None) == has_error


def test_every_problem_quotes_its_line_with_a_caret(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "bad_duration")
    _, report = check_project(home)
    assert report.format() == (
        "journeys/broken.yaml:5:11: steps[0].wait: `3 dayz` is not a duration "
        "(did you mean `3 days`? a duration such as 30m, 1h, 2d, 1w or 1d 12h)\n"
        "    5 |   - wait: 3 dayz\n"
        "      |           ^"
    )


def test_a_template_problem_points_back_at_the_step_that_uses_it(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "undeclared_template_variable")
    _, report = check_project(home)
    [problem] = report.problems
    assert problem.note == "used by journeys/broken.yaml:6:15 (steps[0])"
    assert "    2 | <p>Your colour: {{ customer.favourite_colour }}</p>" in report.format()


def test_load_project_raises_with_every_problem(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "dangling_goto")
    with pytest.raises(ProjectError) as raised:
        load_project(home)
    assert str(raised.value).startswith("journeys/broken.yaml:9:11: steps[2].goto: no step")
    assert raised.value.report.has_errors


def test_problems_in_several_files_are_all_reported_at_once(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "bad_duration")
    for case in ("unknown_action", "tab_indentation"):
        (home / "journeys" / f"{case}.yaml").write_text(
            (INVALID / case / "journeys" / "broken.yaml").read_text().replace("broken", case)
        )
    _, report = check_project(home)
    assert [p.file for p in report.sorted()] == [
        "journeys/broken.yaml",
        "journeys/tab_indentation.yaml",
        "journeys/unknown_action.yaml",
    ]
