"""Liveness and readiness, the JSON answers for unknown paths and methods, and `kairos serve`."""

from __future__ import annotations

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.cli import app as cli
from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from tests.browser.harness import offline_client, serve


async def test_health_answers_while_temporal_is_down_and_ready_does_not(
    settings: Settings, project: Project
) -> None:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, settings) as http:
        health = await http.get("/health")
        ready = await http.get("/ready")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
    assert ready.json() == {"status": "unavailable", "temporal": "unreachable"}


async def test_ready_when_temporal_answers(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    async with serve(Kairos(ts_env.client, settings, project), settings) as http:
        ready = await http.get("/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "temporal": "ok"})


async def test_unknown_paths_and_methods_get_json_errors(
    settings: Settings, project: Project
) -> None:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, settings) as http:
        missing = await http.get("/v1/page")
        wrong_method = await http.get("/v1/track")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


def test_serve_refuses_bad_web_settings_with_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIROS_API_KEYS", "short")
    monkeypatch.setenv("KAIROS_WEB_PORT", "http")
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "KAIROS_API_KEYS" in result.output and "KAIROS_WEB_PORT" in result.output
