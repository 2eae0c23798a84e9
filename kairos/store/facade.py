"""The customer store of one compiled project: every door's way into PostgreSQL.

The client, the web front door, the CLI and the activities all go through :class:`Store`, so an
event is recorded, a consent change is proven and a run is entered the same way whichever door
it came through. Each method is one short transaction; the Temporal calls it decides on are made
afterwards by :class:`kairos.store.dispatch.Dispatcher`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kairos.language.catalogue import AttrType
from kairos.language.pinning import file_hash
from kairos.language.plan import Channel, JourneyPlan
from kairos.language.project import Project
from kairos.runtime import routing
from kairos.runtime.config import Settings
from kairos.runtime.contract import Event, ProfileChange, RunEnd, RunProblems
from kairos.runtime.crypto import MasterKeys
from kairos.runtime.policy import CapRule
from kairos.store.database import Database
from kairos.store.embedded import embedded_url
from kairos.store.ingest import Accepted, Ingest
from kairos.store.keys import DatabaseKeys
from kairos.store.runs import (
    RunRecord,
    cancel_open_run,
    end_run,
    note_problems,
    record_steps,
)
from kairos.store.scores import Expiry, expire_points
from kairos.store.segment_entry import Swept, sweep_segment
from kairos.store.sends import Ledger
from kairos.store.support import (
    CustomerRecord,
    Forgotten,
    customer_record,
    customers_with_phone,
    forget,
    suppress,
    unsuppress,
)
from kairos.store.views import jsonb


@dataclass
class SegmentSweep:
    """What one sweep of the trigger segments did: per segment what it found, how many
    customers entered and left, and the customers with Temporal calls to make."""

    segments: list[Swept] = field(default_factory=list)
    entered: int = 0
    left: int = 0
    customers: list[str] = field(default_factory=list)


async def database_url(settings: Settings) -> str:
    """KAIROS_DATABASE_URL, or the project's embedded PostgreSQL (started when needed)."""
    return settings.database_url or await embedded_url(settings.home)


def cap_rules(settings: Settings) -> list[CapRule]:
    return [
        CapRule(Channel(name), cap.limit, cap.window_seconds) for name, cap in settings.caps.items()
    ]


class Store:
    """Customers, consent, events, runs and the send ledger of one project."""

    def __init__(self, database: Database, project: Project, settings: Settings) -> None:
        self.database = database
        self.project = project
        self.catalogue = project.catalogue
        self.master = MasterKeys(settings.master_key, settings.master_key_previous)
        # The data keys that encrypt what Temporal stores (kairos.runtime.codec uses them).
        self.keys = DatabaseKeys(database, self.master)
        self.ingest = Ingest(project.catalogue, project.plans, self.master, project.segments)
        self.ledger = Ledger(database, project.catalogue, cap_rules(settings), settings.quiet_hours)
        self.timezone_attribute = project.catalogue.attribute_of_type(AttrType.timezone)
        self.email_attribute = project.catalogue.attribute_of_type(AttrType.email)
        self.phone_attribute = project.catalogue.attribute_of_type(AttrType.phone)

    @classmethod
    async def open(cls, settings: Settings, project: Project) -> Store:
        """Connect to the configured store and record the project's plans in it.

        Raises:
            StoreUnavailable: PostgreSQL cannot be reached.
            SchemaMismatch: The schema needs `kairos db upgrade` (or a newer Kairos).
        """
        database = await Database.open(await database_url(settings))
        store = cls(database, project, settings)
        try:
            await store.register_trees(project.trees)
            await store.register_plans(project.plans.values())
            await store.track_segments()
        except BaseException:
            await database.close()
            raise
        return store

    async def register_trees(self, trees: dict[str, dict[str, str]]) -> None:
        """Record template trees (and their files, once by hash) that are not yet known."""
        if not trees:
            return
        known = {
            row["tree"]
            for row in await self.database.fetch_all(
                "SELECT tree FROM template_trees WHERE tree = ANY(%s)", (list(trees),)
            )
        }
        async with self.database.transaction() as conn:
            for tree, files in trees.items():
                if tree in known:
                    continue
                hashes = {name: file_hash(source) for name, source in files.items()}
                for name, digest in hashes.items():
                    await conn.execute(
                        "INSERT INTO template_files (hash, source) VALUES (%s, %s)"
                        " ON CONFLICT (hash) DO NOTHING",
                        (digest, files[name]),
                    )
                await conn.execute(
                    "INSERT INTO template_trees (tree, files) VALUES (%s, %s)"
                    " ON CONFLICT (tree) DO NOTHING",
                    (tree, jsonb(hashes)),
                )

    async def template_tree(self, tree: str) -> dict[str, str] | None:
        """The files of a pinned template tree (name -> source); None when unknown."""
        rows = await self.database.fetch_all(
            "SELECT f.key AS name, s.source FROM template_trees t,"
            " jsonb_each_text(t.files) AS f JOIN template_files s ON s.hash = f.value"
            " WHERE t.tree = %s",
            (tree,),
        )
        return {row["name"]: row["source"] for row in rows} if rows else None

    async def close(self) -> None:
        await self.database.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def register_plans(self, plans: Iterable[JourneyPlan]) -> None:
        """Record plans by content hash, so runs pinned to them can be routed later."""
        async with self.database.transaction() as conn:
            for plan in plans:
                await conn.execute(
                    "INSERT INTO plans (journey, version, plan, listens, reads)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (journey, version) DO NOTHING",
                    (
                        plan.name,
                        plan.version,
                        jsonb(plan.model_dump(mode="json")),
                        sorted(routing.listens(plan)),
                        sorted(routing.reads(plan, self.timezone_attribute)),
                    ),
                )

    # --- changes (each one event, recorded once) -------------------------------------------

    async def accept(self, customer_id: str, event: Event) -> Accepted:
        """Record an event (validated by the caller) and decide what it starts and wakes."""
        async with self.database.transaction() as conn:
            return await self.ingest.accept(conn, customer_id, event)

    async def identify(
        self,
        customer_id: str,
        attributes: dict[str, Any],
        *,
        consent: dict[str, bool] | None = None,
        source: str = "identify",
        call_id: str | None = None,
        at: datetime | None = None,
    ) -> Accepted:
        """Update a customer's profile (and consent, with its source)."""
        properties: dict[str, Any] = {"attributes": attributes, "source": source}
        if consent:
            properties["consent"] = consent
        return await self.accept(
            customer_id, _internal(routing.IDENTIFY_EVENT, properties, call_id, at)
        )

    async def change_consent(
        self,
        customer_id: str,
        consent: dict[str, bool],
        *,
        source: str,
        change_id: str | None = None,
        at: datetime | None = None,
    ) -> Accepted:
        """Grant or withdraw consent topics, recorded with ``source``; once per change id."""
        properties = {"consent": consent, "source": source}
        return await self.accept(
            customer_id, _internal(routing.CONSENT_EVENT, properties, change_id, at)
        )

    async def start(
        self, journey: str, customer_id: str, *, call_id: str | None = None
    ) -> Accepted:
        """Enter a journey by name, under its entry rule (``refused`` says why not)."""
        return await self.accept(
            customer_id, _internal(routing.START_EVENT, {"journey": journey}, call_id, None)
        )

    async def change_profile(self, change: ProfileChange, at: datetime | None = None) -> Accepted:
        """A journey's ``set`` step, applied once per step key."""
        properties = {
            "journey": change.journey,
            "run_no": change.run_no,
            "attributes": change.attributes,
            "increment": change.increment,
            "stage": change.stage,
        }
        return await self.accept(
            change.customer_id, _internal(routing.SET_EVENT, properties, change.key, at)
        )

    async def end_run(self, end: RunEnd) -> None:
        """A run says how it ended; its entry is free again (``after_exit``)."""
        async with self.database.transaction() as conn:
            await end_run(
                conn, end.customer_id, end.journey, end.run_no, end.outcome,
                final=True, goal_event=end.goal_event,
            )  # fmt: skip
            if end.problems:
                await note_problems(conn, end.customer_id, end.journey, end.run_no, end.problems)
            await record_steps(
                conn, end.customer_id, end.journey, end.run_no, end.records,
                variant=end.variant, held_out=end.held_out,
            )  # fmt: skip

    async def note_problems(self, report: RunProblems) -> None:
        """A run could not evaluate a condition or render a value: keep it on its record."""
        async with self.database.transaction() as conn:
            await note_problems(
                conn, report.customer_id, report.journey, report.run_no, report.problems
            )

    async def phone_keyword(
        self, e164: str, *, opt_in: bool, message_id: str, keyword: str
    ) -> list[Accepted]:
        """An SMS STOP or START from a number: every customer with that number, and the number
        itself (so a customer who gives the number later inherits a STOP)."""
        source = f"sms {keyword or ('START' if opt_in else 'STOP')}"
        async with self.database.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO inbound_receipts (id) VALUES (%s) ON CONFLICT (id) DO NOTHING"
                " RETURNING id",
                (f"twilio:{message_id}",),
            )
            if await cursor.fetchone() is None:
                return []  # Twilio retried a message already applied
            if opt_in:
                await unsuppress(conn, Channel.sms, e164, scope="all")
            else:
                await suppress(conn, Channel.sms, e164, scope="all", reason=f"replied {keyword}")
            customers = await customers_with_phone(conn, e164)
        return [
            await self.change_consent(
                customer_id, {"sms": opt_in}, source=source, change_id=f"sms:{message_id}"
            )
            for customer_id in customers
        ]

    async def customers_with_phone(self, e164: str) -> list[str]:
        """The customers whose profile has this number (E.164)."""
        async with self.database.connection() as conn:
            return await customers_with_phone(conn, e164)

    async def suppress(self, channel: Channel, address: str, *, scope: str, reason: str) -> None:
        async with self.database.transaction() as conn:
            await suppress(conn, channel, address, scope=scope, reason=reason)

    # --- what changes with time alone ----------------------------------------------------------

    @property
    def changes_with_time(self) -> bool:
        """Whether anything here changes with time alone: segments that trigger journeys, or
        scores whose points expire (the worker sweeps them every minute)."""
        expiring = any(s.expire_after for s in self.catalogue.scoring.values())
        return expiring or bool(self.ingest.membership.segments)

    async def expire_points(self, now: datetime | None = None) -> Expiry:
        """Take expired points off the scores (``scoring:`` in customer.yaml), set-based, and
        write a profile signal for each open run that reads a score that changed; returns how
        many scores changed and whose runs are to be told (``Dispatcher.run``)."""
        async with self.database.transaction() as conn:
            return await expire_points(conn, self.catalogue, now or self.ingest.clock())

    async def compact_report(self) -> None:
        """Fold the differences writers appended to the report's rollups into one row per key
        (``kairos_report_compact``, migration 10): the report sums them either way, faster
        when folded."""
        async with self.database.transaction() as conn:
            await conn.execute("SELECT kairos_report_compact()")

    async def track_segments(self) -> None:
        """Start keeping the membership of trigger segments not yet kept (or whose condition
        was edited): who is in them now is recorded, nobody is started."""
        now = self.ingest.clock()
        for segment in self.ingest.membership.segments.values():
            async with self.database.transaction() as conn:
                await sweep_segment(conn, segment, now, baseline_only=True)

    async def sweep_segments(self, now: datetime | None = None) -> SegmentSweep:
        """Bring every trigger segment's membership up to date with the clock: customers who
        entered start their journeys (each in their own transaction, exactly as when an event
        moves them), those who left are recorded. The worker runs it every minute."""
        moment = now or self.ingest.clock()
        result = SegmentSweep()
        for segment in self.ingest.membership.segments.values():
            async with self.database.transaction() as conn:
                swept = await sweep_segment(conn, segment, moment)
            result.segments.append(swept)
            for customer_id in swept.stale:
                async with self.database.transaction() as conn:
                    accepted = await self.ingest.reevaluate(conn, customer_id, moment)
                if accepted is not None and accepted.dispatches:
                    result.customers.append(customer_id)
                if accepted is not None:
                    result.entered += len(accepted.segments.entered)
                    result.left += len(accepted.segments.left)
        return result

    # --- support ------------------------------------------------------------------------------

    async def customer(self, customer_id: str) -> CustomerRecord | None:
        return await customer_record(self.database, customer_id)

    async def has_customer(self, customer_id: str) -> bool:
        """Whether the customer is known (a cheap check for doors that must not create one)."""
        row = await self.database.fetch_one(
            "SELECT EXISTS (SELECT 1 FROM customers WHERE id = %s) AS known", (customer_id,)
        )
        return bool(row and row["known"])

    async def forget(self, customer_id: str) -> Forgotten | None:
        forgotten = await forget(
            self.database,
            customer_id,
            email_attribute=self.email_attribute,
            phone_attribute=self.phone_attribute,
        )
        # Their data key went with their row; this process must not keep using a copy.
        self.keys.evict(customer_id)
        return forgotten

    async def cancel_run(self, customer_id: str, journey: str) -> RunRecord | None:
        return await cancel_open_run(self.database, customer_id, journey)


def _internal(
    name: str, properties: dict[str, Any], event_id: str | None, at: datetime | None
) -> Event:
    return Event(
        id=event_id or f"{name}:{uuid.uuid4()}", name=name, properties=properties, timestamp=at
    )
