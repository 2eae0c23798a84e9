"""``kairos validate``, ``kairos schema`` and ``kairos graph`` as a marketer runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from tests.test_language_invalid import INVALID, make_project

runner = CliRunner()


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"KAIROS_HOME": str(home), "NO_COLOR": "1"})
    return result.exit_code, result.output


def test_validate_a_clean_project(tmp_path: Path) -> None:
    code, output = _run(make_project(tmp_path), "validate")
    assert code == 0
    assert output == "✓ 2 journeys valid\n"


def test_validate_reports_every_problem_and_fails(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "dangling_goto")
    (home / "journeys" / "other.yaml").write_text("journey: other\ntrigger: api\nsteps: []\n")
    code, output = _run(home, "validate")
    assert code == 1
    assert output.splitlines() == [
        "journeys/broken.yaml:9:11: steps[2].goto: no step with id `remider` "
        "(did you mean `reminder`?)",
        "    9 |   - goto: remider",
        "      |           ^",
        "journeys/other.yaml:3:1: steps: `steps` is empty (list at least 1 step)",
        "    3 | steps: []",
        "      | ^",
        "✗ 2 errors in journeys/",
    ]
    assert "Traceback" not in output


def test_warnings_alone_exit_zero(tmp_path: Path) -> None:
    code, output = _run(make_project(tmp_path, INVALID / "warning_loop_without_wait"), "validate")
    assert code == 0
    assert output.splitlines()[0].startswith("journeys/broken.yaml:7:11: warning: steps[1].goto:")
    assert output.splitlines()[-1] == "✓ 3 journeys valid (1 warning)"


def test_validate_only_the_named_files(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "dangling_goto")
    code, output = _run(home, "validate", str(home / "journeys" / "cart.yaml"))
    assert (code, output) == (0, "✓ 1 journey valid\n")
    code, output = _run(home, "validate", str(home / "journeys" / "missing.yaml"))
    assert code == 1 and output.startswith("journeys/missing.yaml:1:1: no such file or directory")


def test_schema_writes_both_schemas_where_the_modeline_finds_them(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    code, _ = _run(home, "schema")
    assert code == 0
    journey = json.loads((home / "schema" / "journey.schema.json").read_text())
    customer = json.loads((home / "schema" / "customer.schema.json").read_text())
    assert journey["title"] == "Kairos journey"
    assert "profile" in customer["properties"]
    modeline = (home / "journeys" / "cart.yaml").read_text().splitlines()[0]
    target = modeline.split("$schema=")[1]
    assert (home / "journeys" / target).resolve() == (home / "schema" / "journey.schema.json")
    code, _ = _run(home, "schema", "--out", str(tmp_path / "elsewhere" / "j.json"))
    assert code == 0 and (tmp_path / "elsewhere" / "customer.schema.json").is_file()


def test_the_checked_in_schema_is_current() -> None:
    root = Path(__file__).resolve().parent.parent
    from kairos.language.schema_export import customer_json_schema, journey_json_schema

    written = json.loads((root / "schema" / "journey.schema.json").read_text())
    assert written == journey_json_schema()
    written = json.loads((root / "schema" / "customer.schema.json").read_text())
    assert written == customer_json_schema()


def test_graph_prints_mermaid(tmp_path: Path) -> None:
    code, output = _run(make_project(tmp_path), "graph", "cart")
    assert code == 0
    assert output.startswith("flowchart TD\n    trigger[/")


def test_graph_of_an_unknown_or_broken_journey(tmp_path: Path) -> None:
    home = make_project(tmp_path, INVALID / "bad_duration")
    code, output = _run(home, "graph", "carts")
    assert code == 1 and "no journey `carts` (did you mean `cart`?)" in output
    code, output = _run(home, "graph", "broken")
    assert code == 1 and "steps[0].wait: `3 dayz` is not a duration" in output


def test_every_command_shows_an_example_in_its_help(tmp_path: Path) -> None:
    for command in ("validate", "schema", "graph"):
        code, output = _run(tmp_path, command, "--help")
        assert code == 0 and "Example" in output, output


def test_bad_configuration_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate"], env={"KAIROS_HOME": str(tmp_path), "KAIROS_QUIET_HOURS": "soon"}
    )
    assert result.exit_code == 2
    assert "KAIROS_QUIET_HOURS='soon'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.timeout(60)
def test_validate_survives_every_hostile_file_at_once_and_checks_the_rest(
    tmp_path: Path,
) -> None:
    home = make_project(tmp_path, INVALID / "dangling_goto")
    journeys = home / "journeys"
    for case in ("yaml_alias_bomb", "yaml_python_tag", "yaml_alias_inside_itself"):
        (journeys / f"{case}.yaml").write_text(
            (INVALID / case / "journeys" / "broken.yaml").read_text().replace("broken", case)
        )
    (journeys / "deep.yaml").write_text("journey: deep\nx: " + "[" * 10_000 + "]" * 10_000 + "\n")
    (tmp_path / "secret.txt").write_text("root:x:0:0:SECRET\n")
    (journeys / "link.yaml").symlink_to(tmp_path / "secret.txt")
    code, output = _run(home, "validate")
    assert code == 1
    assert "Traceback" not in output and "SECRET" not in output
    located = sorted({line.split(":")[0] for line in output.splitlines() if ".yaml:" in line})
    assert located == [
        "journeys/broken.yaml",  # the ordinary mistake is still found
        "journeys/deep.yaml",
        "journeys/link.yaml",
        "journeys/yaml_alias_bomb.yaml",
        "journeys/yaml_alias_inside_itself.yaml",
        "journeys/yaml_python_tag.yaml",
    ]
    assert output.splitlines()[-1] == "✗ 6 errors in journeys/"


def test_validate_imports_neither_the_temporal_sdk_nor_the_database_driver(
    tmp_path: Path,
) -> None:
    """Checking journeys talks to neither: importing them was a third of the command's time."""
    home = make_project(tmp_path)
    script = (
        "import sys\n"
        "from kairos.cli import load_commands\n"
        "code = load_commands(['validate'])(['validate'], standalone_mode=False)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'temporalio', 'psycopg'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "KAIROS_HOME": str(home), "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["✓ 2 journeys valid", "[]"]
