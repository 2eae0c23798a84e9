"""Templates pinned with the plan: a run renders the template files its plan was compiled with.

When a journey compiles, every file its messages can read (each send's parts in every locale
they are complete in, with the layouts, includes and imports they reach) forms the plan's
template *tree*, named by a content hash that is part of the plan, and so of its version. The
store keeps each file once by hash. A worker renders a run's message from the tree its plan
names, materialised once per process into a private directory, so editing or deleting a file
under templates/ changes new runs only, and every worker of a rollout renders the same text.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path

from kairos.language.plan import JourneyPlan, SendStep
from kairos.messages.rendering import TemplateStore


def file_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def tree_id(files: Mapping[str, str]) -> str:
    """The content hash of a tree of files (name -> source)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\\0{file_hash(files[name])}\\n".encode())
    return digest.hexdigest()[:16]


def template_tree(plan: JourneyPlan, templates: TemplateStore) -> dict[str, str]:
    """Every template file a run of ``plan`` can render: relative name -> source."""
    files: dict[str, str] = {}
    for step in plan.steps.values():
        if isinstance(step, SendStep):
            for channel in (step.channel, *((step.fallback,) if step.fallback else ())):
                files.update(templates.closure(step.template, channel))
    return files


def pin(plan: JourneyPlan, templates: TemplateStore) -> tuple[JourneyPlan, dict[str, str]]:
    """``plan`` naming its template tree (not yet versioned), and the tree's files."""
    files = template_tree(plan, templates)
    tree = tree_id(files) if files else ""
    return plan.model_copy(update={"templates": tree}), files


class PinnedTemplates:
    """Template stores for pinned trees, each written once to a private directory."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._stores: dict[str, TemplateStore] = {}

    def get(self, tree: str) -> TemplateStore | None:
        return self._stores.get(tree)

    def add(self, tree: str, files: Mapping[str, str]) -> TemplateStore:
        """Materialise ``files`` (name -> source) as ``tree`` and return its store."""
        if tree in self._stores:
            return self._stores[tree]
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="kairos-templates-"))
        directory = self._root / tree
        for name, source in files.items():
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source, encoding="utf-8")
        store = TemplateStore(directory, display_root="templates")
        self._stores[tree] = store
        return store
