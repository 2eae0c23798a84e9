"""Every import points one way: language ← runtime contract ← workflows/activities ← worker ←
tools and front doors (docs/architecture.md). Read from the source with ``ast``, so a lazy
import inside a function counts as much as one at the top of a module."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.commands import ROOT

LANGUAGE, CONTRACT, ENGINE, WORKER, TOOLS = range(5)
NAMES = {
    LANGUAGE: "the language",
    CONTRACT: "the runtime contract",
    ENGINE: "workflows/activities",
    WORKER: "the worker",
    TOOLS: "tools and front doors",
}
# The journey language: parsing, checking and compiling journeys and their messages. Every
# other module of the library (kairos.*) is the runtime contract unless named below.
_LANGUAGE = {
    "kairos", "kairos.language.actions_catalogue", "kairos.language.catalogue", "kairos.language.compiler", "kairos.language.durations",
    "kairos.language.compiler_catalogue", "kairos.language.compiler_conditions", "kairos.language.compiler_plan",
    "kairos.language.compiler_sends", "kairos.language.compiler_state", "kairos.language.compiler_steps",
    "kairos.language.project_files", "kairos.language.reachability",
    "kairos.messages.compliance_footers", "kairos.messages.message_text", "kairos.messages.preview",
    "kairos.messages.template_checks", "kairos.messages.template_environment", "kairos.messages.template_files",
    "kairos.language.expressions", "kairos.messages.formatting", "kairos.language.graph", "kairos.messages.inlining", "kairos.messages.locales",
    "kairos.messages.models",
    "kairos.language.pinning", "kairos.language.plan", "kairos.language.problems", "kairos.messages.rendering", "kairos.language.schema",
    "kairos.language.schema_errors", "kairos.language.schema_export", "kairos.language.segments", "kairos.language.segment_sql",
    "kairos.messages.sms",
    "kairos.language.template_safety", "kairos.messages.unsubscribe", "kairos.language.yaml_source",
}  # fmt: skip
# What people and other programs run: each may start a worker in its own process.
_TOOLS = ("kairos.cli", "kairos.web", "kairos.tools.dev", "kairos.simulation", "kairos.reporting.report",
          "kairos.reporting.charts", "kairos.reporting.model", "kairos.reporting.queries",
          "kairos.reporting.here_now", "kairos.tools.enroll", "kairos.tools.broadcast", "benchmarks")  # fmt: skip
# The web front door answers HTTP in a process that runs no activity: it reaches journeys
# through the client and the store, never through a provider's or a workflow's code.
_FRONT_DOOR = "kairos.web"
# The worker is built in the library; the top-level worker.py is only the process's entry point,
# which nothing imports.
_WORKER = ("kairos.worker", "worker")
_ENTRY_POINT = "worker"
SOURCES = ("kairos", "activities", "workflows", "worker.py", "benchmarks")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer(module: str) -> int | None:
    """The layer of a project module; None for anything else (the standard library, a wheel)."""
    if module in _LANGUAGE:
        return LANGUAGE
    if any(_within(module, tool) for tool in _TOOLS):
        return TOOLS
    if module in _WORKER:
        return WORKER
    if _within(module, "kairos"):
        return CONTRACT
    if _within(module, "workflows") or _within(module, "activities"):
        return ENGINE
    return None


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str) -> Iterator[str]:
    """Every project module ``source`` imports, at any depth of the code."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: the project imports absolutely"
            base = node.module or ""
            yield base
            # `from kairos.runtime import client` imports the module kairos.runtime.client.
            yield from (f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}"))


def violations(edges: Iterable[tuple[str, str]]) -> list[str]:
    """The imports among ``edges`` (importer, imported) that point the wrong way."""
    wrong: list[str] = []
    for importer, imported in edges:
        source, target = layer(importer), layer(imported)
        if source is None or target is None:
            continue
        if target > source:
            wrong.append(f"{importer} ({NAMES[source]}) imports {imported} ({NAMES[target]})")
        elif _within(importer, _FRONT_DOOR) and target in (ENGINE, WORKER):
            wrong.append(f"{importer} (a front door) imports {imported} ({NAMES[target]})")
        elif imported == _ENTRY_POINT:
            wrong.append(f"{importer} imports the entry point worker.py (use kairos.worker)")
    return wrong


def project_edges() -> Iterator[tuple[str, str]]:
    for root in SOURCES:
        paths = [ROOT / root] if root.endswith(".py") else sorted((ROOT / root).rglob("*.py"))
        for path in paths:
            module = module_name(path)
            for imported in imports(path.read_text(encoding="utf-8"), module):
                yield module, imported


def test_every_import_points_down_the_layers() -> None:
    assert violations(project_edges()) == []


def workflow_definitions(source: str) -> int:
    """How many ``@workflow.defn`` classes ``source`` defines."""
    return sum(
        1
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
        for decorator in node.decorator_list
        if "workflow.defn" in ast.unparse(decorator)
    )


def test_workflows_are_defined_only_in_workflows() -> None:
    # PhoneWorkflow once lived in the web package, where no worker looked for it.
    elsewhere = {
        module_name(path): found
        for root in ("kairos", "activities")
        for path in sorted((ROOT / root).rglob("*.py"))
        if (found := workflow_definitions(path.read_text(encoding="utf-8")))
    }
    assert elsewhere == {}
    assert workflow_definitions((ROOT / "workflows" / "journey.py").read_text()) == 1


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        # The knots issue 19 found: each is refused.
        ("kairos.web.sendgrid", "from activities.providers.sendgrid import KEY_ARG"),
        ("kairos.web.twilio", "from activities.providers import TWILIO_STATUS_PATH"),
        ("activities.routing", "from kairos.web.phonebook import PhoneWorkflow"),
        ("kairos.runtime.client", "from activities.providers.outbox import erase_customer"),
        ("kairos.store.facade", "import worker"),
        ("kairos.language.compiler", "from kairos.store.facade import Store"),
        ("workflows.journey", "def f():\n    from worker import build_worker\n"),
        ("worker", "from kairos.cli import app"),
        ("kairos.worker", "from kairos.simulation.engine import simulate"),
        # The library builds workers through kairos.worker, never the entry point.
        ("kairos.tools.dev", "def f():\n    import worker as worker_module\n"),
        ("kairos.simulation.engine", "from worker import build_worker"),
        ("kairos.cli.runtime", "from worker import main"),
        ("kairos.web.server", "from kairos.worker import build_worker"),
    ],
)
def test_an_import_up_the_layers_is_refused(importer: str, source: str) -> None:
    edges = [(importer, imported) for imported in imports(source, importer)]
    assert len(violations(edges)) >= 1, edges
