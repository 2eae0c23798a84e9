"""Enroll an imported list of customers into a journey: validated, idempotent and resumable.

``kairos enroll <journey> --csv customers.csv`` (or ``--jsonl``) reads every row first and
rejects the ones that cannot be enrolled, each with the reason: no customer id, an id used twice,
a profile attribute the catalogue does not declare or of the wrong type. The valid rows are
then started through :meth:`kairos.runtime.client.Kairos.start` (the profile recorded first), no
faster than a rate limit.

Nobody is enrolled twice:

* progress is kept in ``.kairos/enroll/<journey>-<hash of the file>.json``, so running the same
  file again (after Ctrl-C, a crash, or by mistake) skips every row already handled;
* the journey's entry rule decides in the customer store, in the same transaction that would
  enter the customer: ``once`` refuses anyone who entered before, ``after_exit`` anyone whose
  run is still going. A refused row is "already enrolled" when the customer's run is still
  going and "already entered" when it has ended (the store says which);
* an import never restarts anyone: for an ``entry: restart`` journey, whose rule would end a
  running customer's run and start a new one, a customer with a run still going is "already
  enrolled" and left as they are.

The state file holds customer ids and statuses only, never profile data.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError

from kairos.language.catalogue import Attribute, AttrType, Catalogue
from kairos.language.plan import Entry, JourneyPlan
from kairos.runtime.client import JourneyAlreadyRunning, Kairos, KairosError
from kairos.store.database import StoreError
from kairos.store.runs import RunRecord

T = TypeVar("T")
ID_COLUMNS = ("id", "customer_id")
STATE_DIR = Path(".kairos") / "enroll"
DEFAULT_RATE = 20.0
DEFAULT_CONCURRENCY = 8
_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
# Save progress at least this often (seconds), and always on the way out.
_SAVE_EVERY = 1.0


class EnrollError(Exception):
    """The enrollment cannot start at all: unreadable file, no id column, unknown journey."""


class Status(StrEnum):
    """What became of one row."""

    enrolled = "enrolled"
    already_enrolled = "already_enrolled"
    already_entered = "already_entered"
    rejected = "rejected"
    failed = "failed"


# A row with one of these statuses is never tried again; failed rows are retried on resume.
FINAL = frozenset({Status.enrolled, Status.already_enrolled, Status.already_entered})


@dataclass(frozen=True)
class Row:
    """A valid row: who to enroll, with the profile attributes the file gives."""

    line: int
    customer_id: str
    profile: Mapping[str, Any]


@dataclass(frozen=True)
class RowResult:
    """What became of the row at ``line``, and why."""

    line: int
    customer_id: str
    status: Status
    reason: str = ""


# --- reading and validating the file -----------------------------------------------------------


def read_rows(
    path: Path, catalogue: Catalogue, *, jsonl: bool = False
) -> tuple[list[Row], list[RowResult]]:
    """The valid rows of a CSV (or, with ``jsonl``, JSON Lines) file, and the rejected ones.

    CSV needs an ``id`` (or ``customer_id``) column; every other column must be a profile
    attribute from the catalogue and is converted to its type (empty cells are left out).
    JSON Lines holds one object per line: ``id`` (or ``customer_id``) and profile attributes,
    flat or under ``profile``.

    Raises:
        EnrollError: The file cannot be read, or a CSV header is unusable.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise EnrollError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise EnrollError(f"{path}: not UTF-8 text (save the file as UTF-8)") from None
    parsed = _jsonl_rows(text) if jsonl else _csv_rows(text, catalogue, path)
    return _validate(parsed, catalogue)


_Parsed = list[tuple[int, str, dict[str, Any] | str]]


def _csv_rows(text: str, catalogue: Catalogue, path: Path) -> _Parsed:
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    id_column = next((c for c in ID_COLUMNS if c in header), None)
    if id_column is None:
        raise EnrollError(f"{path}: the first line must name the columns, one of them `id`")
    unknown = [c for c in header if c not in catalogue.profile and c not in ID_COLUMNS]
    if unknown:
        declared = ", ".join(sorted(catalogue.profile))
        raise EnrollError(
            f"{path}: columns {', '.join(unknown)} are not profile attributes in "
            f"journeys/customer.yaml (declared: {declared})"
        )
    rows: _Parsed = []
    for raw in reader:
        cells = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        customer_id = cells.pop(id_column, "")
        cells.pop("customer_id" if id_column == "id" else "id", None)
        profile = {k: coerce(v, catalogue.profile[k]) for k, v in cells.items() if v}
        rows.append((reader.line_num, customer_id, profile))
    return rows


def _jsonl_rows(text: str) -> _Parsed:
    rows: _Parsed = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            rows.append((number, "", f"not valid JSON: {err.msg} at column {err.colno}"))
            continue
        if not isinstance(value, dict):
            rows.append((number, "", 'expected a JSON object such as {"id": "c-42"}'))
            continue
        ids = [value.pop(column, None) for column in ID_COLUMNS]
        customer_id = str(next((i for i in ids if i not in (None, "")), ""))
        nested = value.pop("profile", None)
        profile = {**value, **nested} if isinstance(nested, dict) else value
        rows.append((number, customer_id, profile))
    return rows


def coerce(value: str, attr: Attribute) -> Any:
    """A CSV cell as the attribute's type; left as text when it does not convert.

    Text that does not convert is then rejected by the catalogue's validation, which says what
    was expected.
    """
    try:
        match attr.type:
            case AttrType.number:
                return float(value)
            case AttrType.integer:
                return int(value)
            case AttrType.boolean:
                lowered = value.lower()
                return True if lowered in _TRUE else False if lowered in _FALSE else value
            case AttrType.list | AttrType.object:
                return json.loads(value)
            case _:
                return value
    except ValueError:
        return value


def _validate(parsed: _Parsed, catalogue: Catalogue) -> tuple[list[Row], list[RowResult]]:
    rows: list[Row] = []
    rejected: list[RowResult] = []
    first_line: dict[str, int] = {}
    for line, customer_id, profile in parsed:
        if isinstance(profile, str):
            rejected.append(RowResult(line, customer_id, Status.rejected, profile))
            continue
        reason = _row_problem(customer_id, profile, first_line, catalogue)
        if reason:
            rejected.append(RowResult(line, customer_id, Status.rejected, reason))
            continue
        first_line[customer_id] = line
        rows.append(Row(line, customer_id, profile))
    return rows, rejected


def _row_problem(
    customer_id: str, profile: dict[str, Any], first_line: dict[str, int], catalogue: Catalogue
) -> str:
    if problem := id_problem(customer_id):
        return problem
    if customer_id in first_line:
        return f"customer {customer_id} is also on line {first_line[customer_id]}"
    problems = catalogue.validate_profile(profile)
    return "; ".join(p.removeprefix("profile: ") for p in problems)


def id_problem(customer_id: str) -> str:
    """Why ``customer_id`` cannot be a Kairos customer id, or "" when it can."""
    if not customer_id.strip():
        return "no customer id"
    if len(customer_id) > 200 or any(c in customer_id for c in "\n\r\t"):
        return "customer ids are at most 200 characters with no line breaks or tabs"
    return ""


# --- progress ----------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: the same file resumes, an edited one starts afresh."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class EnrollState:
    """Rows already handled for one journey and one file, kept on disk between runs."""

    path: Path
    journey: str
    source: str
    digest: str
    done: dict[int, RowResult] = field(default_factory=dict)
    _saved_at: float = 0.0

    @classmethod
    def open(cls, home: Path, journey: str, source: Path, *, fresh: bool = False) -> EnrollState:
        """The state of enrolling ``source`` into ``journey`` (empty when new or ``fresh``)."""
        digest = file_digest(source)
        path = home / STATE_DIR / f"{journey}-{digest[:16]}.json"
        state = cls(path=path, journey=journey, source=str(source), digest=digest)
        if path.is_file() and not fresh:
            state.done = _load_done(path)
        return state

    def record(self, result: RowResult) -> None:
        """Remember a row once it reached a final status; save now and then."""
        if result.status in FINAL:
            self.done[result.line] = result
        if time.monotonic() - self._saved_at >= _SAVE_EVERY:
            self.save()

    def save(self) -> None:
        """Write the state atomically (a crash leaves the old file or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "journey": self.journey,
            "file": self.source,
            "sha256": self.digest,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": {
                str(line): {"customer_id": r.customer_id, "status": r.status.value}
                for line, r in sorted(self.done.items())
            },
        }
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(body, indent=1), encoding="utf-8")
        os.replace(partial, self.path)
        self._saved_at = time.monotonic()


def _load_done(path: Path) -> dict[int, RowResult]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("rows", {})
        return {
            int(line): RowResult(int(line), str(r["customer_id"]), Status(r["status"]))
            for line, r in rows.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise EnrollError(
            f"{path}: the progress file is damaged ({err}); delete it, or pass --fresh "
            "(customers already in the journey are still skipped)"
        ) from None


# --- enrolling ---------------------------------------------------------------------------------


class Pacer:
    """At most ``rate`` starts per second, however many run concurrently."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0

    @classmethod
    def checked(cls, rate: float, concurrency: int, error: type[Exception]) -> Pacer:
        """The pacer of a run of starts, once ``--rate`` and ``--concurrency`` are usable."""
        if rate <= 0 or concurrency < 1:
            raise error("--rate must be above 0 and --concurrency at least 1")
        return cls(rate)

    async def wait(self, count: int = 1) -> None:
        """Wait for the turn of the next ``count`` starts."""
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.interval * count
        if slot > now:
            await asyncio.sleep(slot - now)


async def in_parallel(
    items: Iterable[T], concurrency: int, handle: Callable[[T], Awaitable[None]]
) -> None:
    """``handle`` every item, ``concurrency`` at a time. Cancelling (Ctrl-C) stops them all
    where they are; an error in one stops the rest and is raised."""
    queue: asyncio.Queue[T] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def drain() -> None:
        while not queue.empty():
            await handle(queue.get_nowait())

    workers = [asyncio.create_task(drain()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*workers, return_exceptions=True)


OnResult = Callable[[RowResult], None]


class Enrollment:
    """Start one journey for many customers, recording each row's fate in ``state``."""

    def __init__(
        self,
        kairos: Kairos,
        plan: JourneyPlan,
        state: EnrollState,
        *,
        rate: float = DEFAULT_RATE,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_result: OnResult | None = None,
    ) -> None:
        """Prepare an enrollment; ``on_result`` hears of every row as it finishes."""
        self.kairos = kairos
        self.plan = plan
        self.state = state
        self.pacer = Pacer.checked(rate, concurrency, EnrollError)
        self.concurrency = concurrency
        self.on_result = on_result or (lambda result: None)

    def pending(self, rows: list[Row]) -> list[Row]:
        """The rows not handled in an earlier run of the same file."""
        return [row for row in rows if row.line not in self.state.done]

    async def ensure_worker(self) -> None:
        """Refuse to start when no worker polls the task queue (see :func:`ensure_worker`)."""
        await ensure_worker(self.kairos)

    async def run(self, rows: list[Row]) -> None:
        """Enroll ``rows`` (call :meth:`pending` first to skip finished ones).

        Progress is saved as rows finish and once more on the way out, also when cancelled
        (Ctrl-C), so the same command resumes where this one stopped.
        """
        try:
            await in_parallel(rows, self.concurrency, self._handle)
        finally:
            self.state.save()

    async def _handle(self, row: Row) -> None:
        await self.pacer.wait()
        result = await self.enroll(row)
        self.state.record(result)
        self.on_result(result)

    async def enroll(self, row: Row) -> RowResult:
        """Enroll one customer, unless the journey's entry rule refuses them (or, for a
        restart journey, their run is still going)."""
        try:
            return await self._enroll(row)
        except (KairosError, StoreError) as err:
            return RowResult(row.line, row.customer_id, Status.failed, str(err))

    async def _enroll(self, row: Row) -> RowResult:
        if self.plan.entry is Entry.restart:
            running = await self._latest_run(row.customer_id, running=True)
            if running is not None:
                return RowResult(row.line, row.customer_id, *_running(running))
        try:
            await self.kairos.start(self.plan.name, row.customer_id, dict(row.profile) or None)
        except JourneyAlreadyRunning as refused:
            latest = await self._latest_run(row.customer_id)
            if latest is not None and latest.ended_at is None:
                return RowResult(row.line, row.customer_id, *_running(latest))
            return RowResult(row.line, row.customer_id, Status.already_entered, str(refused))
        return RowResult(row.line, row.customer_id, Status.enrolled)

    async def _latest_run(self, customer_id: str, *, running: bool = False) -> RunRecord | None:
        """The customer's newest run of the journey, from the store (None when none)."""
        runs = await self.kairos.runs(customer_id, self.plan.name, running=running, limit=1)
        return runs[0] if runs else None


async def ensure_worker(kairos: Kairos) -> None:
    """Refuse to start journeys when no worker polls the task queue: the customers would be
    entered in the store, but no run would make a step (most likely the wrong queue).

    Raises:
        EnrollError: No worker is polling, or Temporal cannot be asked.
    """
    client = kairos.client
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=kairos.task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    try:
        described = await client.workflow_service.describe_task_queue(request)
    except (RPCError, RuntimeError) as err:
        target = kairos.settings.temporal.get("target_host", "localhost:7233")
        raise EnrollError(f"cannot reach Temporal at {target} ({err})") from None
    if not described.pollers:
        raise EnrollError(
            f"no worker is polling task queue {kairos.task_queue!r}: start one "
            "(`kairos worker`, or `make dev` locally) and run the same command again"
        )


def _running(run: RunRecord) -> tuple[Status, str]:
    since = run.started_at.astimezone(UTC)
    return Status.already_enrolled, f"running since {since:%Y-%m-%d %H:%M UTC}"


def summarise(results: Iterable[RowResult]) -> dict[str, int]:
    """How many rows ended with each status, every status listed."""
    counts = {status.value: 0 for status in Status}
    for result in results:
        counts[result.status.value] += 1
    return counts
