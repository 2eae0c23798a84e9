"""Making the Temporal calls that customer transactions decided: start a run, signal a run.

A dispatch row is made once, in order per customer, then deleted. Whoever accepted the event
makes its calls right after the commit; a worker sweeps up what is left (the process died, or
Temporal was unreachable) every few seconds. Per customer, one process at a time holds an
advisory lock while it works through the customer's rows oldest first, so a start always comes
before the signals to that run.

Every call is idempotent, because a process can die after the call and before the delete:

* a start uses the run's own workflow id (``journey:<name>:<customer>:<run_no>``) with
  reuse policy REJECT_DUPLICATE, so a repeat finds the run it started, even when it has ended;
* a signal carries the event, and a run ignores an event id it has seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kairos.language.plan import JourneyPlan
from kairos.runtime.contract import (
    SIGNAL_EVENT,
    Event,
    ProfileSnapshot,
    RunSignal,
    journey_workflow_id,
)
from kairos.runtime.temporal import RunStart, reached, start_journey
from kairos.store.database import Connection, Database, StoreUnavailable
from kairos.store.keys import DatabaseKeys
from kairos.store.runs import end_run
from kairos.store.views import load_customer, load_customers

log = logging.getLogger(__name__)

# Rows younger than this belong to the process that decided them; the sweeper leaves them be.
SWEEP_AFTER = timedelta(seconds=3)
SWEEP_EVERY_SECONDS = 2.0
# How long the process that accepted an event waits for another one making that customer's calls.
LOCK_WAIT_SECONDS = 15.0
_LOCK_SQL = "hashtextextended('kairos.dispatch:' || %s, 0)"
# The same lock of each customer ``c`` of an ``unnest(...) AS c``.
_LOCK_EACH = "hashtextextended('kairos.dispatch:' || c, 0)"
# Temporal errors that mean "try again later" rather than "this call can never succeed".
_TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.CANCELLED,
    }
)
RPC_TIMEOUT = timedelta(seconds=10)
# A call made: its row goes, and its event is routed once none of its calls is left, in one
# statement. The subquery sees the table as it was before the DELETE, hence ``d.id <> %s``.
DONE_SQL = """
WITH gone AS (DELETE FROM dispatches WHERE id = %s RETURNING customer_id, event_id)
UPDATE events e SET routed_at = now() FROM gone
WHERE e.customer_id = gone.customer_id AND e.id = gone.event_id AND e.routed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM dispatches d WHERE d.customer_id = gone.customer_id
                  AND d.event_id = gone.event_id AND d.id <> %s)
"""


# The same for many calls made: the events none of whose calls is left are routed.
DONE_MANY_SQL = """
WITH gone AS (DELETE FROM dispatches WHERE id = ANY(%s) RETURNING customer_id, event_id)
UPDATE events e SET routed_at = now() FROM (SELECT DISTINCT customer_id, event_id FROM gone) g
WHERE e.customer_id = g.customer_id AND e.id = g.event_id AND e.routed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM dispatches d WHERE d.customer_id = g.customer_id
                  AND d.event_id = g.event_id AND d.id <> ALL(%s))
"""


class TemporalUnreachable(Exception):
    """Temporal did not take a call; the dispatch stays for a later attempt."""


class JourneyStarter(Protocol):
    """What starts one run: :func:`kairos.runtime.temporal.start_journey` (the benchmark passes one
    that starts its hand-written twin of the journey instead)."""

    def __call__(
        self,
        client: Client,
        task_queue: str,
        run: RunStart,
        *,
        rpc_timeout: timedelta | None = None,
    ) -> Awaitable[object]: ...


@dataclass(frozen=True)
class _Pinned:
    plan: JourneyPlan
    reads: tuple[str, ...]


class Dispatcher:
    """Makes pending dispatches on one Temporal namespace and task queue."""

    def __init__(
        self,
        database: Database,
        client: Client,
        task_queue: str,
        timezone_attribute: str | None,
        *,
        start: JourneyStarter = start_journey,
        keys: DatabaseKeys | None = None,
    ) -> None:
        self.database = database
        # Read ahead for a batch of starts (kairos.runtime.codec reads them one by one otherwise).
        self.keys = keys
        self.client = client
        self.task_queue = task_queue
        self.timezone_attribute = timezone_attribute
        self.start = start
        self._plans: dict[tuple[str, str], _Pinned] = {}

    async def run(self, customer_ids: Iterable[str], *, wait: bool = True) -> int:
        """Make the pending dispatches of these customers; returns how many were made.

        With ``wait`` (after accepting an event) a customer whose dispatches another process
        is making is waited for; without it (the sweeper) such a customer is skipped.

        Raises:
            TemporalUnreachable: Temporal did not answer; the rest stays pending.
        """
        made = 0
        for customer_id in dict.fromkeys(customer_ids):
            made += await self._run_customer(customer_id, wait=wait)
        return made

    async def run_starts(self, customer_ids: list[str], concurrency: int) -> int:
        """Make the pending dispatches of many customers at once (a broadcast's batch); returns
        how many were made.

        The same calls as :meth:`run`, with fewer round trips: the customers' locks, rows,
        data keys and profiles are read with one statement each, the starts are made
        ``concurrency`` at a time, and the rows made are deleted together. A customer whose
        rows include anything but starts, or whose lock another process holds, goes through
        :meth:`run` afterwards (their calls must be made in order, one at a time).

        Raises:
            TemporalUnreachable: Temporal did not take some start; those stay pending.
        """
        customer_ids = list(dict.fromkeys(customer_ids))
        if not customer_ids:
            return 0
        if self.keys is not None:
            await self.keys.prefetch(customer_ids)
        async with self.database.connection() as conn:
            locked: list[str] = []
            async with _releasing(conn, locked):
                cursor = await conn.execute(
                    "SELECT c FROM unnest(%s::text[]) AS c"
                    f" WHERE pg_try_advisory_lock({_LOCK_EACH}) ORDER BY c",
                    (customer_ids,),
                )
                locked.extend(row["c"] for row in await cursor.fetchall())
                made, rest = await self._make_starts(conn, locked, concurrency)
        taken = set(locked)
        others = [c for c in customer_ids if c not in taken] + rest
        return made + await self.run(others)

    async def _make_starts(
        self, conn: Connection, customer_ids: list[str], concurrency: int
    ) -> tuple[int, list[str]]:
        """Make the starts of these customers (whose locks ``conn`` holds) concurrently;
        returns how many were made and the customers left to :meth:`run`."""
        cursor = await conn.execute(
            "SELECT id, customer_id, kind, journey, run_no, payload FROM dispatches"
            " WHERE customer_id = ANY(%s) ORDER BY id",
            (customer_ids,),
        )
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in await cursor.fetchall():
            rows.setdefault(row["customer_id"], []).append(row)
        rest = [c for c, mine in rows.items() if any(r["kind"] != "start" for r in mine)]
        starts = [r for c, mine in rows.items() if c not in rest for r in mine]
        if not starts:
            return 0, rest
        customers = await load_customers(conn, sorted({r["customer_id"] for r in starts}))
        pinned = {
            r["id"]: await self._pinned(conn, r["journey"], r["payload"]["version"]) for r in starts
        }
        gate = asyncio.Semaphore(concurrency)

        async def start(row: dict[str, Any]) -> BaseException | None:
            plan = pinned[row["id"]]
            customer = customers.get(row["customer_id"])
            profile = customer.snapshot(plan.reads) if customer else ProfileSnapshot()
            payload = row["payload"]
            trigger = Event.model_validate(payload["trigger"]) if payload.get("trigger") else None
            async with gate:
                try:
                    with contextlib.suppress(WorkflowAlreadyStartedError):
                        await self.start(
                            self.client,
                            self.task_queue,
                            RunStart(
                                plan.plan,
                                row["customer_id"],
                                row["run_no"],
                                profile,
                                trigger,
                                self.timezone_attribute,
                            ),
                            rpc_timeout=RPC_TIMEOUT,
                        )
                except (RuntimeError, TimeoutError, ConnectionError, RPCError) as err:
                    return err
            return None

        outcomes = await asyncio.gather(*(start(row) for row in starts))
        done: list[int] = []
        unreachable: BaseException | None = None
        for row, err in zip(starts, outcomes, strict=True):
            if err is None:
                done.append(row["id"])
            elif isinstance(err, RPCError) and err.status not in _TRANSIENT:
                log.error(
                    "dropping a start of %s run %d for customer %s: %s",
                    row["journey"], row["run_no"], row["customer_id"], err,
                )  # fmt: skip
                await end_run(
                    conn, row["customer_id"], row["journey"], row["run_no"], "not started",
                    final=False,
                )  # fmt: skip
                done.append(row["id"])
            else:
                await _failed_attempt(conn, row["id"], err)
                unreachable = err
        if done:
            await conn.execute(DONE_MANY_SQL, (done, done))
        if unreachable is not None:
            raise TemporalUnreachable(f"Temporal did not take a start: {unreachable}")
        return len(done), rest

    async def sweep(self, limit: int = 200, older_than: timedelta = SWEEP_AFTER) -> int:
        """Make dispatches left behind (older than ``older_than``); returns how many were made."""
        rows = await self.database.fetch_all(
            "SELECT customer_id FROM dispatches WHERE created_at < now() - %s"
            " GROUP BY customer_id ORDER BY min(id) LIMIT %s",
            (older_than, limit),
        )
        if rows:
            log.info("sweeping the dispatches of %d customers", len(rows))
        return await self.run([r["customer_id"] for r in rows], wait=False)

    async def sweep_forever(self, stop: asyncio.Event) -> None:
        """Sweep every few seconds until ``stop`` is set; failures are logged and retried."""
        await repeat(self.sweep, stop, SWEEP_EVERY_SECONDS, "dispatch sweep")

    async def _run_customer(self, customer_id: str, *, wait: bool) -> int:
        async with self.database.connection() as conn:
            locked: list[str] = []
            async with _releasing(conn, locked):
                if not await _lock(conn, customer_id, LOCK_WAIT_SECONDS if wait else 0):
                    # Another process is making them (and will make ours: it works until none
                    # are left); failing that, the sweeper will.
                    return 0
                locked.append(customer_id)
                return await self._make_pending(conn, customer_id)

    async def _make_pending(self, conn: Connection, customer_id: str) -> int:
        """Make the customer's dispatches oldest first, until none are left (under the lock)."""
        made = 0
        while True:
            cursor = await conn.execute(
                "SELECT id, event_id, kind, journey, run_no, payload FROM dispatches"
                " WHERE customer_id = %s ORDER BY id LIMIT 50",
                (customer_id,),
            )
            rows = await cursor.fetchall()
            if not rows:
                return made
            for row in rows:
                await self._make(conn, customer_id, row)
                made += 1

    async def _make(self, conn: Connection, customer_id: str, row: dict[str, Any]) -> None:
        journey, run_no = row["journey"], row["run_no"]
        try:
            if row["kind"] == "start":
                await self._start(conn, customer_id, journey, run_no, row["payload"])
            else:
                await self._signal(conn, customer_id, journey, run_no, row["payload"])
        except (RuntimeError, TimeoutError, ConnectionError) as err:
            # The SDK reports a server it cannot connect to as a RuntimeError.
            await _failed_attempt(conn, row["id"], err)
            raise TemporalUnreachable(f"Temporal did not take a {row['kind']}: {err}") from None
        except RPCError as err:
            if err.status in _TRANSIENT:
                await _failed_attempt(conn, row["id"], err)
                raise TemporalUnreachable(f"Temporal did not take a {row['kind']}: {err}") from None
            # The call can never succeed (a rejected argument, a missing namespace): keep the
            # customer's other calls moving and say so loudly.
            log.error(
                "dropping a %s of %s run %d for customer %s: %s",
                row["kind"], journey, run_no, customer_id, err,
            )  # fmt: skip
            if row["kind"] == "start":
                await end_run(conn, customer_id, journey, run_no, "not started", final=False)
        await conn.execute(DONE_SQL, (row["id"], row["id"]))

    async def _start(
        self, conn: Connection, customer_id: str, journey: str, run_no: int, payload: Any
    ) -> None:
        pinned = await self._pinned(conn, journey, payload["version"])
        trigger = Event.model_validate(payload["trigger"]) if payload.get("trigger") else None
        # A repeat after a crash finds the run it started: the call was made.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            profile = await self._snapshot(conn, customer_id, pinned.reads)
            await self.start(
                self.client,
                self.task_queue,
                RunStart(
                    pinned.plan, customer_id, run_no, profile, trigger, self.timezone_attribute
                ),
                rpc_timeout=RPC_TIMEOUT,
            )

    async def _signal(
        self, conn: Connection, customer_id: str, journey: str, run_no: int, payload: Any
    ) -> None:
        version = await self._run_version(conn, customer_id, journey, run_no)
        reads = (await self._pinned(conn, journey, version)).reads if version else ()
        signal = RunSignal(
            event=Event.model_validate(payload["event"]) if payload.get("event") else None,
            profile=await self._snapshot(conn, customer_id, reads),
            restart=bool(payload.get("restart")),
        )
        handle = self.client.get_workflow_handle(journey_workflow_id(journey, customer_id, run_no))
        if not await reached(handle.signal(SIGNAL_EVENT, signal, rpc_timeout=RPC_TIMEOUT)):
            # The run is over (it may have ended without telling the store: terminated from
            # the Temporal UI). Nothing to signal; make sure the store knows it has ended.
            await end_run(conn, customer_id, journey, run_no, "gone", final=False)

    async def _pinned(self, conn: Connection, journey: str, version: str) -> _Pinned:
        key = (journey, version)
        if key not in self._plans:
            cursor = await conn.execute(
                "SELECT plan, reads FROM plans WHERE journey = %s AND version = %s", key
            )
            row = await cursor.fetchone()
            if row is None:
                raise LookupError(f"no plan {journey}@{version} in the store")
            self._plans[key] = _Pinned(JourneyPlan.model_validate(row["plan"]), tuple(row["reads"]))
        return self._plans[key]

    async def _run_version(
        self, conn: Connection, customer_id: str, journey: str, run_no: int
    ) -> str | None:
        cursor = await conn.execute(
            "SELECT plan_version FROM runs WHERE customer_id = %s AND journey = %s AND run_no = %s",
            (customer_id, journey, run_no),
        )
        row = await cursor.fetchone()
        return str(row["plan_version"]) if row else None

    async def _snapshot(
        self, conn: Connection, customer_id: str, reads: tuple[str, ...]
    ) -> ProfileSnapshot:
        customer = await load_customer(conn, customer_id, lock=False)
        return customer.snapshot(reads) if customer else ProfileSnapshot()


async def repeat(
    work: Callable[[], Awaitable[object]], stop: asyncio.Event, every: float, what: str
) -> None:
    """Run ``work`` every ``every`` seconds until ``stop`` is set. A store or Temporal that
    is down postpones it, any other failure is logged with its traceback; both are tried
    again next time."""
    while not stop.is_set():
        try:
            await work()
        except (TemporalUnreachable, StoreUnavailable) as err:
            log.warning("%s postponed: %s", what, err)
        except Exception:
            log.exception("%s failed; trying again", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)


async def _lock(conn: Connection, customer_id: str, seconds: float) -> bool:
    """Take the customer's dispatch lock (a session advisory lock), waiting up to ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        cursor = await conn.execute(
            f"SELECT pg_try_advisory_lock({_LOCK_SQL}) AS locked", (customer_id,)
        )
        row = await cursor.fetchone()
        if row and row["locked"]:
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _releasing(conn: Connection, locked: list[str]) -> AsyncIterator[None]:
    """Release the dispatch locks of the customers in ``locked`` (as the block fills it in)
    when the block ends, and when Temporal could not be reached: the usual failure leaves the
    connection sound, so it is kept.

    Given up midway (cancelled, perhaps inside a statement) or failed otherwise, the locks may
    be held by a connection that cannot run another statement: closing it ends the session and
    every lock with it, and the pool replaces the connection instead of lending the locks to its
    next user (who would wait them out).
    """
    try:
        yield
    except TemporalUnreachable:
        await _unlock(conn, locked)
        raise
    except BaseException:
        await conn.close()
        raise
    await _unlock(conn, locked)


async def _unlock(conn: Connection, customer_ids: list[str]) -> None:
    if customer_ids:
        await conn.execute(
            f"SELECT pg_advisory_unlock({_LOCK_EACH}) FROM unnest(%s::text[]) AS c",
            (customer_ids,),
        )


async def _failed_attempt(conn: Connection, dispatch_id: int, err: BaseException) -> None:
    await conn.execute(
        "UPDATE dispatches SET attempts = attempts + 1, last_error = %s WHERE id = %s",
        (str(err)[:500], dispatch_id),
    )
