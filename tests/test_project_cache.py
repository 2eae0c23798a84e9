"""The cache of checked projects (kairos.language.project_cache): a runtime command takes the
project from it only while nothing the check depends on has changed, a cached project is the
checked one, and a cache that cannot be used is no cache, never an error."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kairos.language import compiler, project_cache
from kairos.language.plan import SendStep
from kairos.language.problems import ProjectError
from kairos.language.project import Project, load_project
from kairos.language.project_cache import MAX_ENTRIES, project_key, read_entry, write_entry
from kairos.messages.rendering import RenderError, render_preview
from kairos.runtime.config import load_settings
from tests.commands import KAIROS, ROOT, command_env
from tests.test_action_plugins import plugin  # noqa: F401 - the fixture

WARNED = """journey: warned
trigger: api
steps:
  - wait: 1h
  - exit: done
  - send: email
    template: welcome/welcome
"""
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _copy(home: Path, journeys: tuple[str, ...] | None) -> Path:
    """The repository's segments and templates in ``home``, its catalogue and ``journeys``
    (None: all of them), and one more journey, which has a warning."""
    for folder in ("segments", "templates"):
        shutil.copytree(ROOT / folder, home / folder)
    if journeys is None:
        shutil.copytree(ROOT / "journeys", home / "journeys")
    else:
        (home / "journeys").mkdir()
        for name in ("customer", *journeys):
            shutil.copy(ROOT / "journeys" / f"{name}.yaml", home / "journeys")
    (home / "journeys" / "warned.yaml").write_text(WARNED)
    return home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A project of the repository's catalogue, segments and templates with its welcome journey
    and one that has a warning: what the cache does does not depend on how many journeys there
    are, and each check of this one is a fraction of the whole project's."""
    return _copy(tmp_path / "home", ("welcome",))


@pytest.fixture
def whole_home(tmp_path: Path) -> Path:
    """A copy of the repository's whole project, with one more journey that has a warning."""
    return _copy(tmp_path / "whole", None)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The homes really checked (kairos.language.compiler.check_project calls)."""
    done: list[Path] = []
    real = compiler.check_project

    def counted(home: Path, paths: Any = None) -> Any:
        done.append(home)
        return real(home, paths)

    monkeypatch.setattr(compiler, "check_project", counted)
    return done


def _renders(project: Project) -> list[str]:
    """Every send step of every journey as a preview renders it (or the error it gives)."""
    project.templates.clock = lambda: NOW
    shown = []
    for plan in project.plans.values():
        for step_id, step in plan.steps.items():
            if not isinstance(step, SendStep):
                continue
            customer = {"email": "ada@example.com", "first_name": "Ada", "locale": "fi"}
            try:
                result: Any = render_preview(
                    project.templates, plan, step_id, customer, {}, None, "https://u.example/x"
                )
            except RenderError as err:
                result = err
            shown.append(f"{plan.name}/{step_id}: {result!r}")
    return shown


def assert_same(cached: Project, fresh: Project) -> None:
    assert cached.plans == fresh.plans
    assert {n: p.version for n, p in cached.plans.items()} == {
        n: p.version for n, p in fresh.plans.items()
    }
    assert cached.catalogue == fresh.catalogue
    assert cached.warnings == fresh.warnings
    assert cached.trees == fresh.trees
    assert cached.segments == fresh.segments
    assert cached.templates.root == fresh.templates.root
    assert _renders(cached) == _renders(fresh)


def test_a_hit_after_a_miss_is_the_project_a_check_gives(
    whole_home: Path, cache: Path, checks: list[Path]
) -> None:
    missed = load_project(whole_home, cache=cache)
    hit = load_project(whole_home, cache=cache)

    assert len(checks) == 1
    assert hit is not missed
    fresh = load_project(whole_home)
    assert len(checks) == 2
    assert [p.message for p in hit.warnings.problems] == [
        "step `send_email_welcome_welcome` can never run"
    ]
    assert len(hit.plans) == 8 and len(hit.segments) == 2 and hit.trees
    assert_same(hit, fresh)
    assert len(_renders(hit)) >= 10


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


CHANGES: dict[str, Callable[[Path], object]] = {
    "a journey": lambda h: _edit(h / "journeys/welcome.yaml", "priority: 60", "priority: 61"),
    "a template body": lambda h: _edit(
        h / "templates/welcome/welcome.en.html.j2",
        "</",
        " </",
    ),
    "a subject file": lambda h: (h / "templates/welcome/welcome.en.subject.j2").write_text(
        "Hello again, {{ customer.first_name }}\n"
    ),
    "locales.yaml": lambda h: (h / "templates/locales.yaml").write_text(
        (h / "templates/locales.yaml").read_text() + "\n# a comment\n"
    ),
    "the catalogue": lambda h: (h / "journeys/customer.yaml").write_text(
        (h / "journeys/customer.yaml").read_text() + "\n# a comment\n"
    ),
    "a segment": lambda h: (h / "segments/sales_ready.yaml").write_text(
        (h / "segments/sales_ready.yaml").read_text() + "\n# a comment\n"
    ),
    "a layout": lambda h: next((h / "templates/layouts").glob("*.j2")).write_text("{# x #}"),
    "a new template file": lambda h: (h / "templates/welcome/extra.en.subject.j2").write_text(
        "Extra\n"
    ),
    "a new journey": lambda h: (h / "journeys/second.yaml").write_text(
        WARNED.replace("warned", "second")
    ),
    "a deleted template file": lambda h: (h / "templates/welcome/welcome.en.preheader.j2").unlink(),
    "a deleted journey": lambda h: (h / "journeys/warned.yaml").unlink(),
    "a renamed file": lambda h: (h / "segments/sales_ready.yaml").rename(
        h / "segments/sales_ready.yml"
    ),
    "a new folder": lambda h: (h / "templates/new").mkdir(),
}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_the_projects_files_is_another_key(home: Path, change: str) -> None:
    before = project_key(home)
    assert project_key(home) == before  # the same files, the same key

    CHANGES[change](home)

    assert project_key(home) != before


def test_a_file_touched_but_unchanged_keeps_its_key(home: Path) -> None:
    before = project_key(home)
    path = home / "templates/welcome/welcome.en.html.j2"
    path.write_text(path.read_text())

    assert project_key(home) == before


def test_another_home_or_other_actions_are_another_key(
    home: Path,
    tmp_path: Path,
    plugin: str,  # noqa: F811 - the fixture
) -> None:
    before = project_key(home)
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)

    assert project_key(copy) != before
    load_project(home, actions=[plugin])  # registers send_gift
    assert project_key(home, [plugin]) != before
    assert project_key(home) != before  # the registered actions changed


def test_a_changed_journey_is_checked_again_and_its_new_content_used(
    home: Path, cache: Path, checks: list[Path]
) -> None:
    first = load_project(home, cache=cache)
    _edit(home / "journeys/welcome.yaml", "priority: 60", "priority: 61")

    second = load_project(home, cache=cache)

    assert len(checks) == 2
    assert first.plans["welcome"].priority == 60
    assert second.plans["welcome"].priority == 61
    assert second.plans["welcome"].version != first.plans["welcome"].version
    assert load_project(home, cache=cache).plans["welcome"].priority == 61
    assert len(checks) == 2


def test_a_broken_template_after_a_cached_good_state_fails_as_without_a_cache(
    home: Path, cache: Path, checks: list[Path]
) -> None:
    load_project(home, cache=cache)
    (home / "templates/welcome/welcome.en.subject.j2").write_text("Hello {{ customer.first_name")

    with pytest.raises(ProjectError) as cached:
        load_project(home, cache=cache)
    with pytest.raises(ProjectError) as fresh:
        load_project(home)

    assert str(cached.value) == str(fresh.value)
    assert "welcome.en.subject.j2" in str(cached.value)
    assert len(checks) == 3
    assert len(list(cache.glob("*.pickle"))) == 1  # a project with errors is not kept


def test_another_installed_library_or_version_is_another_key(tmp_path: Path) -> None:
    # Babel's formatting reaches the warnings, YAML parsers the positions: an upgrade of any
    # library the check uses must not reuse what an older one produced.
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "babel-2.17.0.dist-info").mkdir()
    (site / "jinja2").mkdir()
    before = project_cache._installed.__wrapped__(site)
    (site / "babel-2.17.0.dist-info").rename(site / "babel-2.18.0.dist-info")
    upgraded = project_cache._installed.__wrapped__(site)
    (site / "css_inline-0.24.0.dist-info").mkdir()
    added = project_cache._installed.__wrapped__(site)
    (site / "a-module.py").write_text("")
    assert len({before, upgraded, added}) == 3
    assert project_cache._installed.__wrapped__(site) == added  # only distributions count
    assert project_cache._installed.__wrapped__(tmp_path / "missing") != added


def _folder_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


BAD_ENTRIES: dict[str, Callable[[Path], object]] = {
    "garbage": lambda p: p.write_bytes(b"not a pickle at all"),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "another object": lambda p: p.write_bytes(pickle.dumps({"plans": {}})),
    "an unknown class": lambda p: p.write_bytes(b"cno_such_module\nThing\n."),
    "a folder": lambda p: _folder_instead(p),
}


@pytest.mark.parametrize("bad", BAD_ENTRIES)
def test_an_entry_that_cannot_be_read_means_a_check(
    home: Path, cache: Path, checks: list[Path], bad: str
) -> None:
    good = load_project(home, cache=cache)
    (entry,) = cache.glob("*.pickle")
    BAD_ENTRIES[bad](entry)

    again = load_project(home, cache=cache)

    assert len(checks) == 2
    assert_same(again, good)
    if bad != "a folder":  # rewritten whole, and used from then on
        load_project(home, cache=cache)
        assert len(checks) == 2


def test_a_cache_that_cannot_be_written_means_a_check_each_time(
    home: Path, tmp_path: Path, checks: list[Path]
) -> None:
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"

    first = load_project(home, cache=cache)
    second = load_project(home, cache=cache)

    assert len(checks) == 2
    assert_same(second, first)


@pytest.mark.parametrize("mode", [0o777, 0o720, 0o702])
def test_an_entry_others_could_have_written_is_never_read(
    home: Path, cache: Path, checks: list[Path], mode: int
) -> None:
    load_project(home, cache=cache)
    (entry,) = cache.glob("*.pickle")

    entry.chmod(0o600 | (mode & 0o077))
    load_project(home, cache=cache)
    entry.chmod(0o600)
    cache.chmod(mode)
    load_project(home, cache=cache)
    cache.chmod(0o700)
    load_project(home, cache=cache)

    assert len(checks) == 3  # the last one: a hit again


def test_old_entries_are_pruned(home: Path, cache: Path) -> None:
    load_project(home, cache=cache)
    entry = read_entry(cache, project_key(home))
    assert entry is not None
    keys = [f"{n:064x}" for n in range(MAX_ENTRIES + 3)]
    for key in keys:
        write_entry(cache, dataclasses.replace(entry, key=key))

    assert len(list(cache.glob("*.pickle"))) == MAX_ENTRIES
    assert read_entry(cache, keys[-1]) == dataclasses.replace(entry, key=keys[-1])
    assert not list(cache.glob(".tmp-*"))


WRITER = """
import pickle, sys
from pathlib import Path
from kairos.language.project_cache import write_entry
entry = pickle.loads(Path(sys.argv[1]).read_bytes())
for _ in range(int(sys.argv[3])):
    write_entry(Path(sys.argv[2]), entry)
"""


def test_concurrent_writers_never_leave_a_half_entry(
    home: Path, cache: Path, tmp_path: Path
) -> None:
    load_project(home, cache=cache)
    (entry,) = cache.glob("*.pickle")
    source = tmp_path / "entry.pickle"
    shutil.copyfile(entry, source)
    expected = pickle.loads(source.read_bytes())
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(cache), "60"], cwd=ROOT)
        for _ in range(2)
    ]
    reads = 0
    while any(w.poll() is None for w in writers) or reads == 0:
        with entry.open("rb") as handle:  # never absent: each write replaces it whole
            assert pickle.load(handle) == expected
        reads += 1

    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    assert reads > 0
    assert not list(cache.glob(".tmp-*"))


def _emit(cache: str, data: str) -> subprocess.CompletedProcess[str]:
    env = command_env(KAIROS_CACHE_DIR=cache)
    return subprocess.run(
        [str(KAIROS), "emit", "c-1", "signed_up", "--data", data],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.slow  # five `kairos` processes
def test_a_command_works_with_a_corrupt_or_unwritable_cache_and_keeps_no_personal_data(
    tmp_path: Path,
) -> None:
    data = '{"email": "zq7-not-an-email@person.example", "first_name": 3}'
    cache = tmp_path / "cache"
    runs = [_emit(str(cache), data), _emit(str(cache), data)]
    (entry,) = cache.glob("*.pickle")
    entry.write_bytes(b"\x80\x05garbage")
    runs.append(_emit(str(cache), data))
    (tmp_path / "a-file").write_text("")
    runs.append(_emit(str(tmp_path / "a-file"), data))
    runs.append(_emit("off", data))

    assert {(r.returncode, r.stdout, r.stderr) for r in runs} == {
        (runs[-1].returncode, runs[-1].stdout, runs[-1].stderr)
    }
    assert runs[-1].returncode == 1 and "Traceback" not in runs[-1].stderr
    assert "signed_up" in runs[-1].stderr
    assert b"zq7" not in b"".join(p.read_bytes() for p in cache.iterdir())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KAIROS_CACHE_DIR": "/somewhere/else"}, Path("/somewhere/else")),
        ({"KAIROS_CACHE_DIR": "cache"}, Path("/home/project/cache")),
        ({"KAIROS_CACHE_DIR": "OFF", "HOME": "/home/ada"}, None),
        ({"XDG_CACHE_HOME": "/xdg", "HOME": "/home/ada"}, Path("/xdg/kairos")),
        ({"HOME": "/home/ada"}, Path("/home/ada/.cache/kairos")),
        ({}, None),
    ],
)
def test_where_the_cache_is(env: dict[str, str], expected: Path | None) -> None:
    settings = load_settings({**env, "KAIROS_HOME": "/home/project"}, dotenv=False, temporal=False)

    assert settings.project_cache == expected
