"""Where a project's files are and how they are shown: the journey files to compile, a file's
name as its author knows it (``journeys/x.yaml``), and reading one YAML file into a report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kairos.language.problems import Problem, Report
from kairos.language.yaml_source import YamlDocument, escapes, load_yaml, read_source

CATALOGUE_FILE = "customer.yaml"


def display_path(path: Path, home: Path) -> str:
    """A file as its author knows it: relative to the project home when inside it."""
    # A link out of the project is shown by its own name, not by where it leads.
    resolved = path.absolute() if escapes(path, home) else path.resolve()
    for base in (home.resolve(), Path.cwd()):
        try:
            return resolved.relative_to(base).as_posix()
        except ValueError:
            continue
    return resolved.as_posix()


def journey_files(home: Path, paths: Sequence[Path] | None, report: Report) -> list[Path]:
    """The journey files to compile: every ``journeys/*.yaml`` but the catalogue by default."""
    if paths is None:
        paths = [home / "journeys"]
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(path.glob("*.yaml")))
        elif path.is_file():
            found.append(path)
        else:
            shown = display_path(path, home)
            report.add(Problem(shown, 1, 1, "", "no such file or directory"))
    return [p for p in dict.fromkeys(found) if p.name != CATALOGUE_FILE]


def load_document(path: Path, shown: str, report: Report, home: Path) -> YamlDocument | None:
    """Read and parse a YAML file, keeping its text for quoting even when it does not parse."""
    text, problems = read_source(path, shown, home=home)
    report.extend(problems)
    if text is None:
        return None
    report.add_source(shown, text)
    doc, problems = load_yaml(text, shown)
    report.extend(problems)
    return doc
