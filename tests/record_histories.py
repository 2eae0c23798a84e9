"""Record real histories of every journey path for the replay test.

    .venv/bin/python -m tests.record_histories

Run it when the interpreter gains behaviour worth pinning; never delete an old recording: the
replay test holds today's code to every history that runs in production may still have.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import load_project
from kairos.config import load_settings
from kairos.dev import temporal_binary
from kairos.runtime import JourneyResult, customer_workflow_id, journey_workflow_id
from kairos.temporal import register_search_attributes
from tests.conftest import ROOT, running_worker
from tests.helpers import finish, schedule, started
from tests.test_costs_runtime import paths

HISTORIES = Path(__file__).parent / "fixtures" / "histories"


async def record(tag: str) -> None:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    project = load_project(ROOT)
    for index in range(len(paths(datetime.now(UTC)))):
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(temporal_binary("temporal-test-server")),
            data_converter=pydantic_data_converter,
        )
        async with env:
            await register_search_attributes(env.client)
            path = paths(await env.get_current_time())[index]
            with tempfile.TemporaryDirectory() as outbox:
                settings = dataclasses.replace(
                    load_settings({"KAIROS_HOME": str(ROOT)}, dotenv=False),
                    outbox_dir=Path(outbox),
                    task_queue=f"record-{uuid.uuid4()}",
                )
                kairos = Kairos(env.client, settings, project)
                async with running_worker(env.client, settings, project):
                    await kairos.identify(path.customer, path.profile)
                    for name, properties in path.events:
                        await kairos.emit(path.customer, name, properties)
                    workflow_id = journey_workflow_id(path.journey, path.customer)
                    handle = await started(env.client, workflow_id, JourneyResult)
                    await schedule(env.client, settings.task_queue, path.customer, path.later)
                    await finish(env, handle)
                    for kind, wid in (
                        ("journey", workflow_id),
                        ("customer", customer_workflow_id(path.customer)),
                    ):
                        history = await env.client.get_workflow_handle(wid).fetch_history()
                        name = f"{tag}-{path.journey}-{path.customer}-{kind}.json"
                        (HISTORIES / name).write_text(history.to_json())
                        print("recorded", name)


if __name__ == "__main__":
    import sys

    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
