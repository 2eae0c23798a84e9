"""Liveness and readiness, the JSON answers for unknown paths and methods, every door while
PostgreSQL is down, and `kairos serve` (its settings, its store, its shutdown)."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.language.project import Project
from kairos.messages.unsubscribe import unsubscribe_url
from kairos.runtime.config import Settings
from kairos.store.database import Database
from kairos.store.facade import Store
from kairos.web.sendgrid import PATH as SENDGRID
from kairos.web.server import build_app, running
from kairos.web.twilio import PATH as TWILIO
from tests.browser.harness import (
    API_KEY,
    SendGridKey,
    inbound_sms,
    offline_kairos,
    serve,
    twilio_signature,
    unreachable,
    web_config,
    web_settings,
)
from tests.conftest import ROOT, make_kairos
from tests.helpers import eventually

OFFLINE_TEMPORAL = {"target_host": "127.0.0.1:1", "namespace": "default"}


async def test_while_temporal_is_down_the_door_stays_ready_and_says_it_is_degraded(
    settings: Settings, store: Store
) -> None:
    async with serve(await offline_kairos(settings, store), settings) as http:
        health = await http.get("/health")
        ready = await http.get("/ready")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    # Events need only PostgreSQL: the door stays in rotation and tells monitoring why.
    assert ready.status_code == 200
    assert ready.json() == {"status": "degraded", "postgres": "ok", "temporal": "unreachable"}


async def test_ready_when_postgresql_and_temporal_answer(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    async with serve(make_kairos(ts_env.client, settings, store), settings) as http:
        ready = await http.get("/ready")
    assert (ready.status_code, ready.json()) == (
        200, {"status": "ready", "postgres": "ok", "temporal": "ok"}
    )  # fmt: skip


async def test_unknown_paths_and_methods_get_json_errors(settings: Settings, store: Store) -> None:
    async with serve(await offline_kairos(settings, store), settings) as http:
        missing = await http.get("/v1/page")
        wrong_method = await http.get("/v1/track")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


async def test_every_door_answers_503_not_500_while_postgresql_is_unreachable(
    settings: Settings, project: Project, postgres: str, database_url: str
) -> None:
    key = SendGridKey()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    sms = inbound_sms("STOP")
    signed_sms = {"X-Twilio-Signature": twilio_signature(f"{settings.public_url}{TWILIO}", sms)}
    batch = json.dumps([{"event": "bounce", "sg_event_id": "b-1", "customer_id": "c-1",
                         "email": "ada@example.com"}]).encode()  # fmt: skip
    link = unsubscribe_url("", "c-1", secret=settings.secret, now=int(time.time()))
    # A short pool timeout, so a request gives up on PostgreSQL in a second.
    store = Store(await Database.open(database_url, timeout=1), project, settings)
    await store.register_plans(project.plans.values())
    kairos = await offline_kairos(settings, store)
    try:
        async with (
            serve(kairos, web_settings(settings), sendgrid=key) as http,
            unreachable(postgres, database_url),
        ):
            answers = {
                "track": await http.post(
                    "/v1/track",
                    json={"userId": "c-1", "event": "pricing_viewed", "properties": {}},
                    headers=auth,
                ),
                "identify": await http.post("/v1/identify", json={"userId": "c-1"}, headers=auth),
                "twilio": await http.post(TWILIO, data=sms, headers=signed_sms),
                "sendgrid": await http.post(SENDGRID, content=batch, headers=key.headers(batch)),
                "unsubscribe": await http.post(link, data={"List-Unsubscribe": "One-Click"}),
                "ready": await http.get("/ready"),
            }
            page = await http.get(link, headers={"Accept-Language": "fi"})
            health = await http.get("/health")
    finally:
        await store.close()

    assert {door: r.status_code for door, r in answers.items()} == dict.fromkeys(answers, 503)
    assert all(int(r.headers["Retry-After"]) > 0 for r in answers.values())
    for door in ("track", "identify", "twilio", "sendgrid"):
        assert answers[door].json()["error"] == "store_unavailable", door
    assert "Please try again in a minute" in answers["unsubscribe"].text
    assert answers["ready"].json()["postgres"] == "unreachable"
    # The page only changes nothing: it still opens, in the browser's language.
    assert page.status_code == 200 and "Lopeta viestit" in page.text
    assert health.status_code == 200


async def test_the_app_closes_its_store_when_it_stops(
    settings: Settings, database_url: str, postgres: str
) -> None:
    offline = dataclasses.replace(settings, temporal=OFFLINE_TEMPORAL)
    app = await build_app(offline, web_config())
    async with running(app) as url, httpx.AsyncClient(base_url=url) as http:
        tracked = await http.post(
            "/v1/track",
            json={"userId": "c-1", "event": "pricing_viewed", "properties": {}},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        during = _connections(postgres, database_url)
    assert tracked.status_code == 202 and during > 0

    # A closed connection's server process leaves pg_stat_activity a moment after it closed.
    async def closed() -> bool:
        return _connections(postgres, database_url) == 0

    await eventually(closed)


def _connections(postgres: str, database_url: str) -> int:
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(postgres, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_serve_refuses_bad_web_settings_with_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    from kairos.cli import app as cli

    monkeypatch.setenv("KAIROS_API_KEYS", "short")
    monkeypatch.setenv("KAIROS_WEB_PORT", "http")
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "KAIROS_API_KEYS" in result.output and "KAIROS_WEB_PORT" in result.output


@pytest.mark.slow
def test_serve_says_in_one_line_when_postgresql_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kairos.cli import app as cli

    # The project's home, whatever the shell running the suite has set.
    monkeypatch.setenv("KAIROS_HOME", str(ROOT))
    monkeypatch.setenv("KAIROS_DATABASE_URL", "postgresql://kairos@127.0.0.1:1/kairos")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("KAIROS_SECRET", "a-secret-that-is-not-the-development-default")
    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())  # the console wraps long lines at its width
    assert said.startswith("error: cannot reach PostgreSQL at postgresql://kairos@127.0.0.1:1/")
    assert "KAIROS_DATABASE_URL" in said


@pytest.mark.parametrize(
    ("args", "port_from", "how"),
    [(["--port"], "option", "pass a free --port"),
     ([], "KAIROS_WEB_PORT", "set KAIROS_WEB_PORT to a free port")],
)  # fmt: skip
def test_serve_says_in_one_line_that_its_port_is_taken(
    monkeypatch: pytest.MonkeyPatch, args: list[str], port_from: str, how: str
) -> None:
    from kairos.cli import app as cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        monkeypatch.setenv("KAIROS_WEB_PORT", port if port_from != "option" else "8000")
        result = CliRunner().invoke(cli, ["serve", *args, *([port] if args else [])])
    assert result.exit_code == 1
    said = " ".join(result.output.split())  # the console wraps long lines at its width
    assert said == (
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (is another "
        f"`kairos serve` or `make dev` running? Stop it, or {how})"
    )
