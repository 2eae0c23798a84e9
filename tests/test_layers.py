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
# Each package's layer: a module is in the layer of the innermost package it lives in, so a new
# module is layered by where it is put. Packages of one layer may import each other (the
# compiler checks messages, and messages read the plan; the client goes through the store).
PACKAGES = {
    "kairos.language": LANGUAGE,
    "kairos.messages": LANGUAGE,
    "kairos.runtime": CONTRACT,
    "kairos.store": CONTRACT,
    "workflows": ENGINE,
    "activities": ENGINE,
    "kairos.worker": WORKER,
    "worker": WORKER,
    "kairos.cli": TOOLS,
    "kairos.web": TOOLS,
    "kairos.simulation": TOOLS,
    "kairos.reporting": TOOLS,
    "kairos.tools": TOOLS,
    "benchmarks": TOOLS,
}
# The package itself holds only its version; a module directly in kairos/ (other than the
# worker) is in no layer, and refused: it belongs in the subpackage of its role.
ROOT_PACKAGE = "kairos"
# The web front door answers HTTP in a process that runs no activity: it reaches journeys
# through the client and the store, never through a provider's or a workflow's code.
_FRONT_DOOR = "kairos.web"
# The worker is built in the library; the top-level worker.py is only the process's entry point,
# which nothing imports.
_ENTRY_POINT = "worker"
SOURCES = ("kairos", "activities", "workflows", "worker.py", "benchmarks")
_PROJECT = ("kairos", "activities", "workflows", "worker", "benchmarks")


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_project(module: str) -> bool:
    """Whether ``module`` is the project's (not the standard library's or a wheel's)."""
    return any(_within(module, top) for top in _PROJECT)


def layer(module: str) -> int | None:
    """The layer of a project module: its innermost package's; None when it is in none."""
    if module == ROOT_PACKAGE:
        return LANGUAGE
    homes = [package for package in PACKAGES if _within(module, package)]
    return PACKAGES[max(homes, key=len)] if homes else None


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
        if not (is_project(importer) and is_project(imported)):
            continue
        source, target = layer(importer), layer(imported)
        if source is None or target is None:
            wrong.append(f"{importer if source is None else imported} is in no layer's package")
        elif target > source:
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


def kairos_modules() -> list[str]:
    return [module_name(path) for path in sorted((ROOT / "kairos").rglob("*.py"))]


def test_every_kairos_module_lives_in_a_layer() -> None:
    assert [module for module in kairos_modules() if layer(module) is None] == []


def test_a_module_takes_the_layer_of_the_package_it_is_put_in() -> None:
    # A module added later (a part split off the compiler, say) needs no list to be layered.
    assert layer("kairos.language.compiler_steps") == LANGUAGE
    assert layer("kairos.messages.footers") == LANGUAGE
    assert layer("kairos.runtime.anything_new") == CONTRACT
    assert layer("kairos.store.anything_new") == CONTRACT
    assert layer("activities.anything_new") == ENGINE
    assert layer("kairos.reporting.rollup") == TOOLS
    # ...and a module left flat in kairos/ is in none, which the tests above refuse.
    assert layer("kairos.flat_module") is None
    assert violations([("kairos.flat_module", "kairos.language.plan")]) != []
    assert violations([("kairos.language.compiler", "kairos.flat_module")]) != []


def re_exports(source: str, package: str) -> list[str]:
    """The modules of ``package`` its ``__init__`` imports when it is imported (a function
    that imports one when called, as the command line's does, re-exports nothing)."""
    top = ast.Module(body=ast.parse(source).body, type_ignores=[])
    return [
        name
        for node in top.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in imports(ast.unparse(node), package)
        if name != package and _within(name, package)
    ]


def test_packages_re_export_nothing() -> None:
    # An __init__ that imports its own modules makes importing one module import them all, the
    # way import cycles start; importers name the module that defines what they use.
    found = {
        module_name(path): names
        for path in sorted((ROOT / "kairos").rglob("__init__.py"))
        if (names := re_exports(path.read_text(encoding="utf-8"), module_name(path)))
    }
    assert found == {}


def test_a_re_export_is_seen() -> None:
    assert re_exports("from kairos.store.facade import Store\n", "kairos.store") == [
        "kairos.store.facade"
    ]
    assert re_exports("from kairos.store import facade\n", "kairos.store") == [
        "kairos.store.facade"
    ]
    assert re_exports("def f():\n    from kairos.cli.base import app\n", "kairos.cli") == []


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
        # The same knots through a package's name or a module nobody has listed yet.
        ("kairos.language", "from kairos.store import facade"),
        ("kairos.messages.footers", "from kairos.runtime import config"),
        ("kairos.runtime.new_part", "from kairos.reporting.report import build_report"),
        ("kairos.store.new_part", "from workflows.journey import JourneyWorkflow"),
        ("activities.new_part", "from kairos import worker"),
        ("kairos.worker", "from kairos import tools"),
        ("kairos.new_flat_module", "from kairos.language import plan"),
    ],
)
def test_an_import_up_the_layers_is_refused(importer: str, source: str) -> None:
    edges = [(importer, imported) for imported in imports(source, importer)]
    assert len(violations(edges)) >= 1, edges


@pytest.mark.parametrize(
    ("importer", "source"),
    [
        ("kairos.messages.rendering", "from kairos.language.plan import SendStep"),
        ("kairos.language.compiler", "from kairos.messages.rendering import TemplateStore"),
        ("kairos.runtime.client", "from kairos.store.facade import Store"),
        ("activities.messaging", "from kairos.store.sends import Reservation"),
        ("kairos.worker", "from workflows.journey import JourneyWorkflow"),
        ("kairos.cli.runtime", "def f():\n    from kairos import worker\n"),
        ("benchmarks.engine", "from kairos.reporting.costs import billable_actions"),
    ],
)
def test_an_import_down_or_across_a_layer_is_allowed(importer: str, source: str) -> None:
    edges = [(importer, imported) for imported in imports(source, importer)]
    assert violations(edges) == [], edges
