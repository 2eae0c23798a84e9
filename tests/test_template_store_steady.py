"""``TemplateStore.steady()``: one check of a project looks at each template walk's files once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kairos.language.plan import Channel
from kairos.messages import template_checks, template_files
from kairos.messages.rendering import TemplateStore

REPO = Path(__file__).resolve().parent.parent


def test_a_steady_store_checks_a_walk_once_and_sees_edits_again_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "templates"
    shutil.copytree(REPO / "templates", root)
    store = TemplateStore(root)
    looked: list[Path] = []
    real = template_files._version

    def counted(path: Path) -> tuple[int, int]:
        looked.append(path)
        return real(path)

    monkeypatch.setattr(template_checks, "_version", counted)
    with store.steady():
        assert store.problems("welcome/welcome", "en", Channel.email) == []
        first = len(looked)
        for _ in range(5):
            store.problems("welcome/welcome", "en", Channel.email)
            store.referenced_paths("welcome/welcome", "en", Channel.email)
        assert first > 0 and len(looked) == first  # no file looked at again

    subject = root / "welcome" / "welcome.en.subject.j2"
    subject.write_text("{{ oops\n", encoding="utf-8")
    problems = store.problems("welcome/welcome", "en", Channel.email)
    assert [p.file for p in problems] == [subject]  # outside steady(), an edit is seen
