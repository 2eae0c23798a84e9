"""The send transaction: decide a message with the customer's row locked, record it, confirm it.

``reserve`` runs the whole policy (consent, suppression, quiet hours, frequency caps and the
priority contest for a cap's last slot, :func:`kairos.runtime.policy.decide`) over what the store
holds at this moment, and records the decision in the message ledger under the message's key, in one
transaction. Everything that decides sends for one customer takes the same row lock, so two
journeys can never both take the last slot of a cap.

The send protocol, per key (docs/operations.md states the guarantee):

* ``begin_call`` marks the provider call under way (``calling_since``) in the same statement as
  the last look at the run (a cancelled run calls nothing). A retry that finds a key
  ``sending`` without a call under way (the worker died before calling, or the call failed
  cleanly: 429, 5xx, connection refused) decides it again, policy included, and calls again.
* ``confirm`` records the provider's id: a key ``sent`` (or ``blocked``, ``cancelled``,
  ``failed``) answers every later attempt with what was recorded and the provider is never
  called again.
* A call whose answer nobody saw (a timeout, a dropped connection: ``unknown``; or a retry that
  finds a call still marked under way, because its worker died) makes the key ``unknown``,
  counted in ``unconfirmed``. Only the provider's feedback (``feedback``, from its webhooks)
  turns it ``sent``; until then a retry reports what the ledger holds (:class:`Unknown`) and
  :mod:`kairos.runtime.delivery` decides whether to wait, resend once (``resend``: consent and
  suppression checked again) or leave it ``unknown``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kairos.language.catalogue import AttrType, Catalogue
from kairos.language.plan import Category, Channel
from kairos.messages.models import (
    LedgerStatus,
    PolicyDecision,
    Receipt,
    SendOutcome,
    SendStatus,
    Verdict,
)
from kairos.runtime import policy
from kairos.runtime.contract import DeliverRequest, RunOutcome
from kairos.store.database import Connection, Database
from kairos.store.views import CustomerRow, address_hash, load_customer, suppression_key

# A key in one of these statuses is decided for good: a retry answers with what was recorded.
FINAL = (LedgerStatus.sent, LedgerStatus.blocked, LedgerStatus.cancelled, LedgerStatus.failed)
# Statuses whose message may have reached the provider: they hold a frequency cap's slot.
COUNTED = (LedgerStatus.sending, LedgerStatus.sent, LedgerStatus.unknown)
# Ledger statuses a decision writes, by verdict.
_STATUS = {
    Verdict.send: LedgerStatus.sending,
    Verdict.defer: LedgerStatus.deferred,
    Verdict.hold: LedgerStatus.pending,
    Verdict.blocked: LedgerStatus.blocked,
}


@dataclass(frozen=True)
class Unknown:
    """A key whose provider call's outcome nobody saw, and no feedback has settled it."""

    since: datetime
    resends: int
    found: bool = False  # this attempt found the call's worker dead and made it unknown


@dataclass(frozen=True)
class Call:
    """What the last look before a provider call found: the key's ``status`` (``sending``:
    go on), and ``wait``, the seconds its provider is still paused by a 429 (0: call now)."""

    status: LedgerStatus
    wait: float = 0.0


@dataclass
class Reservation:
    """What the send transaction decided.

    ``done`` is the recorded outcome when the key was decided for good before; ``unknown`` is
    set when an earlier call's outcome is unknown (nothing was decided); otherwise
    ``decision`` says what to do now, on ``channel``, rendering with ``profile``.
    """

    decision: PolicyDecision
    channel: Channel
    profile: dict[str, Any] = field(default_factory=dict)
    done: SendOutcome | None = None
    unknown: Unknown | None = None


class Ledger:
    """The message ledger and the policy that fills it."""

    def __init__(
        self,
        database: Database,
        catalogue: Catalogue,
        caps: Sequence[policy.CapRule],
        quiet_hours: tuple[str, str] | None,
    ) -> None:
        self.database = database
        self.caps = tuple(caps)
        self.quiet_hours = quiet_hours
        self.email_attribute = catalogue.attribute_of_type(AttrType.email)
        self.phone_attribute = catalogue.attribute_of_type(AttrType.phone)
        self.timezone_attribute = catalogue.attribute_of_type(AttrType.timezone)
        self.window = timedelta(seconds=max((c.window_seconds for c in self.caps), default=0))

    async def reserve(
        self, request: DeliverRequest, *, now: datetime, due: datetime
    ) -> Reservation:
        """Decide ``request`` at ``now`` (the send was due at ``due``) and record it."""
        async with self.database.transaction() as conn:
            customer = await load_customer(conn, request.customer_id, lock=True)
            if customer is None:
                blocked = PolicyDecision(verdict=Verdict.blocked, reason="no such customer")
                return Reservation(blocked, request.channel)
            existing = await _row(conn, request.key)
            if existing is not None and existing["status"] in FINAL:
                return _done(existing)
            # Before anything else: a message that may have reached the provider stays on
            # record as such, whatever happened since (a cancelled run included).
            found = existing is not None and existing["calling_since"] is not None
            if found:
                # The attempt that made this call died before it saw the answer.
                existing = await _went_unknown(conn, request.key, "the worker died during the call")
            if existing is not None and existing["status"] == LedgerStatus.unknown:
                return _unknown(existing, found=found)
            if await _cancelled(conn, request):
                cancelled = PolicyDecision(verdict=Verdict.blocked, reason="run cancelled")
                await _record(
                    conn, request, request.channel, cancelled, now=now, due=due,
                    status=LedgerStatus.cancelled,
                )  # fmt: skip
                return Reservation(
                    cancelled, request.channel, done=_outcome(request, SendStatus.cancelled)
                )
            if existing is not None and existing["unknown_since"] is not None:
                # A resend after no feedback came: the same message, its cap slot already
                # taken, so only consent and suppression are asked again.
                return await self._decide_resend(conn, request, customer, existing, now)
            contest = existing is not None and existing["status"] == LedgerStatus.pending
            if existing is not None and contest:
                due = existing["due_at"]
            ask = policy.SendAsk(
                key=request.key,
                channels=(request.channel, *((request.fallback,) if request.fallback else ())),
                category=request.category,
                priority=request.priority,
                due_at=due,
                quiet_hours=None
                if request.ignore_quiet_hours
                else request.quiet_hours or self.quiet_hours,
                contest=contest,
            )
            decision, channel = policy.decide(
                ask,
                await self._recipient(conn, customer, request.category),
                self.caps,
                await self._counted(conn, customer.id, now, request.key),
                await self._claims(conn, customer.id, due) if contest else (),
                now,
            )
            chosen = channel or request.channel
            await _record(conn, request, chosen, decision, now=now, due=due)
            return Reservation(decision, chosen, customer.view())

    async def resend(self, request: DeliverRequest, *, now: datetime) -> Reservation:
        """Send an ``unknown`` message once more: no feedback came, so the provider most
        likely never had it. Consent and suppression are asked again; a message they block now
        stays ``unknown`` (its first call may have gone through)."""
        async with self.database.transaction() as conn:
            customer = await load_customer(conn, request.customer_id, lock=True)
            existing = await _row(conn, request.key)
            if customer is None or existing is None or existing["status"] != LedgerStatus.unknown:
                # Settled meanwhile (feedback came, the customer was forgotten): ask again.
                return await self._settled(conn, request, existing)
            if await _cancelled(conn, request):
                await conn.execute(
                    "UPDATE messages SET reason = 'not resent: run cancelled' WHERE key = %s",
                    (request.key,),
                )
                return _done({**existing, "reason": "not resent: run cancelled"})
            await conn.execute(
                "UPDATE messages SET status = 'sending', resends = resends + 1 WHERE key = %s",
                (request.key,),
            )
            existing = {**existing, "status": "sending", "resends": existing["resends"] + 1}
            return await self._decide_resend(conn, request, customer, existing, now)

    async def _decide_resend(
        self,
        conn: Connection,
        request: DeliverRequest,
        customer: CustomerRow,
        existing: dict[str, Any],
        now: datetime,
    ) -> Reservation:
        channel = Channel(existing["channel"])
        ask = policy.SendAsk(
            key=request.key,
            channels=(channel,),
            category=request.category,
            priority=request.priority,
            due_at=existing["due_at"],
        )
        recipient = await self._recipient(conn, customer, request.category)
        decision, _ = policy.decide(ask, recipient, (), {}, (), now)
        if decision.verdict is not Verdict.send:
            reason = f"not resent: {decision.reason}"
            await conn.execute(
                "UPDATE messages SET status = 'unknown', reason = %s WHERE key = %s",
                (reason, request.key),
            )
            return _done({**existing, "status": LedgerStatus.unknown, "reason": reason})
        return Reservation(decision, channel, customer.view())

    async def _settled(
        self, conn: Connection, request: DeliverRequest, existing: dict[str, Any] | None
    ) -> Reservation:
        if existing is None:
            blocked = PolicyDecision(verdict=Verdict.blocked, reason="no such customer")
            return Reservation(blocked, request.channel)
        if existing["status"] == LedgerStatus.unknown:
            return _unknown(existing)
        return _done(existing)

    async def begin_call(
        self, request: DeliverRequest, *, now: datetime, provider: str = ""
    ) -> Call:
        """The last look before the provider: mark the call under way, unless the run was
        cancelled since the message was decided (in the Temporal UI, say; then the ledger
        says ``cancelled`` and no call is made), or ``provider`` is paused by a 429 (then
        nothing is marked, and the answer says how long the pause lasts).

        Returns:
            ``sending`` to call; ``cancelled``; ``sending`` with a ``wait`` when the provider
            is paused; or the status the key has now when it is no longer ``sending``
            (feedback settled it meanwhile).
        """
        row = await self.database.fetch_one(
            "WITH run AS (SELECT coalesce(bool_or(outcome = %(cancelled)s), false) AS cancelled"
            " FROM runs WHERE customer_id = %(customer)s AND journey = %(journey)s"
            " AND run_no = %(run_no)s),"
            " pause AS (SELECT count(*) > 0 AS paused FROM provider_pauses"
            " WHERE provider = %(provider)s AND until > %(now)s)"
            " UPDATE messages SET"
            " status = CASE WHEN run.cancelled THEN 'cancelled' ELSE status END,"
            " reason = CASE WHEN run.cancelled THEN 'run cancelled' ELSE reason END,"
            " calling_since = CASE WHEN run.cancelled THEN NULL ELSE %(now)s END,"
            " attempts = attempts + CASE WHEN run.cancelled THEN 0 ELSE 1 END"
            " FROM run, pause WHERE key = %(key)s AND status = 'sending'"
            " AND (run.cancelled OR NOT pause.paused) RETURNING status",
            {
                "customer": request.customer_id,
                "journey": request.journey,
                "run_no": request.run_no,
                "provider": provider,
                "now": now,
                "key": request.key,
                "cancelled": RunOutcome.cancelled,
            },
        )
        if row is not None:
            return Call(LedgerStatus(row["status"]))
        # Rare: the provider is paused, or the key was settled meanwhile.
        current = await self.database.fetch_one(
            "SELECT status, (SELECT greatest(extract(epoch FROM until - %s), 0)::float8"
            " FROM provider_pauses WHERE provider = %s) AS wait FROM messages WHERE key = %s",
            (now, provider, request.key),
        )
        if current is None:
            return Call(LedgerStatus.cancelled)
        status = LedgerStatus(current["status"])
        if status != LedgerStatus.sending:
            return Call(status)
        # Still sending and nothing marked: it was paused (if only just), so look again.
        return Call(status, max(float(current["wait"] or 0.0), 0.01))

    async def confirm(self, key: str, receipt: Receipt) -> bool:
        """The provider accepted the message: record its id. Returns whether this was a
        resend after an unknown outcome."""
        row = await self.database.fetch_one(
            "UPDATE messages SET status = 'sent', provider = %(provider)s,"
            " provider_id = %(id)s, calling_since = NULL, last_error = NULL,"
            " reason = CASE WHEN unknown_since IS NULL THEN reason"
            " ELSE 'sent again after no feedback came' END,"
            " provider_ids = CASE WHEN %(id)s = '' OR %(id)s = ANY(provider_ids) THEN provider_ids"
            " ELSE provider_ids || %(id)s END WHERE key = %(key)s RETURNING resends",
            {"provider": receipt.provider, "id": receipt.provider_id, "key": key},
        )
        return bool(row and row["resends"])

    async def call_unknown(self, key: str, error: str, *, now: datetime) -> None:
        """The provider call ended without an answer anyone saw: the key is ``unknown``."""
        async with self.database.transaction() as conn:
            await _went_unknown(conn, key, error, now=now)

    async def failed_attempt(self, key: str, error: str, *, final: bool) -> None:
        """The provider call failed cleanly (the provider did not take the message): ``final``
        when it will not be retried."""
        if final:
            await self.database.fetch_one(
                "UPDATE messages SET status = 'failed', reason = %s, last_error = %s,"
                " calling_since = NULL WHERE key = %s AND status <> 'sent' RETURNING key",
                (error[:500], error[:500], key),
            )
        else:
            await self.database.fetch_one(
                "UPDATE messages SET last_error = %s, calling_since = NULL"
                " WHERE key = %s RETURNING key",
                (error[:500], key),
            )

    async def pause_provider(self, provider: str, until: datetime, reason: str) -> None:
        """``provider`` answered 429: no worker calls it before ``until`` (its Retry-After,
        on Temporal's clock like every decision of the send). A pause only ever grows."""
        await self.database.fetch_one(
            "INSERT INTO provider_pauses AS p (provider, until, reason)"
            " VALUES (%(provider)s, %(until)s, %(reason)s)"
            " ON CONFLICT (provider) DO UPDATE SET"
            " until = greatest(p.until, excluded.until), reason = excluded.reason,"
            " pauses = p.pauses + 1 RETURNING provider",
            {"provider": provider, "until": until, "reason": reason[:500]},
        )

    async def give_up(self, key: str, reason: str) -> LedgerStatus:
        """The journey gave up on the send (its deadline passed, or the provider refused it
        for good). A message whose earlier call may have gone through stays ``unknown``;
        otherwise it is ``failed``. Returns the status recorded."""
        row = await self.database.fetch_one(
            "UPDATE messages SET"
            " status = CASE WHEN status = 'unknown' OR calling_since IS NOT NULL"
            " OR unknown_since IS NOT NULL THEN 'unknown' ELSE 'failed' END,"
            " unconfirmed = unconfirmed + (calling_since IS NOT NULL)::int,"
            " unknown_since = coalesce(unknown_since, calling_since), calling_since = NULL,"
            " reason = %s"
            " WHERE key = %s AND status NOT IN ('sent', 'blocked', 'cancelled', 'failed')"
            " RETURNING status",
            (reason[:500], key),
        )
        return LedgerStatus(row["status"]) if row else LedgerStatus.failed

    async def report_unknown(self, key: str, reason: str) -> None:
        """No feedback came and the message is not sent again: say why it stays unknown."""
        await self.database.fetch_one(
            "UPDATE messages SET reason = %s WHERE key = %s AND status = 'unknown' RETURNING key",
            (reason[:500], key),
        )

    async def feedback(
        self, key: str, *, provider: str, provider_id: str, event: str, at: datetime
    ) -> str | None:
        """The provider's own word on a message (a webhook): it has the message, so a key
        that was ``unknown`` (or still ``sending``) is ``sent``; when it was first delivered,
        opened or clicked is kept for the report. A provider id the ledger had
        not seen for the key is added to ``provider_ids``: more than one is a duplicate.

        Returns:
            The key's status now, or None when the ledger has no such key.
        """
        row = await self.database.fetch_one(
            "UPDATE messages SET"
            " status = CASE WHEN status IN ('unknown', 'sending') THEN 'sent' ELSE status END,"
            " reason = CASE WHEN status = 'unknown'"
            " THEN 'sent: the provider''s feedback (' || %(event)s || ') shows it had it'"
            " ELSE reason END,"
            " calling_since = CASE WHEN status IN ('unknown', 'sending') THEN NULL"
            " ELSE calling_since END,"
            " provider = coalesce(provider, %(provider)s),"
            " provider_id = coalesce(nullif(provider_id, ''), %(id)s),"
            " provider_ids = CASE WHEN %(id)s = '' OR %(id)s = ANY(provider_ids) THEN provider_ids"
            " ELSE provider_ids || %(id)s END,"
            " feedback = %(event)s, feedback_at = %(at)s,"
            " delivered_at = CASE WHEN %(event)s = 'delivered'"
            " THEN least(delivered_at, %(at)s) ELSE delivered_at END,"
            " opened_at = CASE WHEN %(event)s = 'open'"
            " THEN least(opened_at, %(at)s) ELSE opened_at END,"
            " clicked_at = CASE WHEN %(event)s = 'click'"
            " THEN least(clicked_at, %(at)s) ELSE clicked_at END"
            " WHERE key = %(key)s RETURNING status",
            {"key": key, "provider": provider, "id": provider_id, "event": event[:40], "at": at},
        )
        return str(row["status"]) if row else None

    async def _recipient(
        self, conn: Connection, customer: CustomerRow, category: Category
    ) -> policy.Recipient:
        profile = customer.profile
        addresses = {
            Channel.email: profile.get(self.email_attribute or ""),
            Channel.sms: profile.get(self.phone_attribute or ""),
        }
        suppressed: dict[Channel, str] = {}
        marketing: dict[Channel, str] = {}
        present = {c: a for c, a in addresses.items() if isinstance(a, str) and a}
        if present:
            key = await suppression_key(conn)
            hashes = {address_hash(key, c, a): c for c, a in present.items()}
            cursor = await conn.execute(
                "SELECT address_hash, scope, reason FROM suppressions WHERE address_hash = ANY(%s)",
                (list(hashes),),
            )
            for row in await cursor.fetchall():
                channel = hashes[bytes(row["address_hash"])]
                target = suppressed if row["scope"] == "all" else marketing
                target[channel] = row["reason"]
        timezone = profile.get(self.timezone_attribute or "")
        return policy.Recipient(
            has_email=Channel.email in present,
            has_phone=Channel.sms in present,
            refused=customer.consent.refused(),
            suppressed=suppressed,
            suppressed_marketing=marketing,
            timezone=timezone if isinstance(timezone, str) else None,
        )

    async def _counted(
        self, conn: Connection, customer_id: str, now: datetime, key: str
    ) -> dict[Channel, list[datetime]]:
        """When this customer's marketing messages took a cap slot, within the longest window.
        The message being decided is left out: a retry must not be capped by its own slot."""
        counted: dict[Channel, list[datetime]] = {}
        if not self.caps:
            return counted
        cursor = await conn.execute(
            "SELECT channel, sent_at FROM messages WHERE customer_id = %s"
            " AND category = 'marketing' AND status = ANY(%s) AND sent_at > %s AND key <> %s",
            (customer_id, list(COUNTED), now - self.window, key),
        )
        for row in await cursor.fetchall():
            counted.setdefault(Channel(row["channel"]), []).append(row["sent_at"])
        return counted

    async def _claims(
        self, conn: Connection, customer_id: str, due: datetime
    ) -> list[policy.Claim]:
        """The messages holding for a cap's last slot that were due in the same minute."""
        cursor = await conn.execute(
            "SELECT key, channel, priority, due_at FROM messages WHERE customer_id = %s"
            " AND status = 'pending' AND date_trunc('minute', due_at) = date_trunc('minute', %s)",
            (customer_id, due),
        )
        return [
            policy.Claim(r["key"], Channel(r["channel"]), r["priority"], r["due_at"])
            for r in await cursor.fetchall()
        ]


async def _record(
    conn: Connection,
    request: DeliverRequest,
    channel: Channel,
    decision: PolicyDecision,
    *,
    now: datetime,
    due: datetime,
    status: LedgerStatus | None = None,
) -> None:
    status = status or _STATUS[decision.verdict]
    sending = status == LedgerStatus.sending
    await conn.execute(
        "INSERT INTO messages (key, customer_id, journey, run_no, step, channel, category,"
        " priority, status, reason, due_at, decided_at, defer_until, sent_at)"
        " VALUES (%(key)s, %(customer)s, %(journey)s, %(run_no)s, %(step)s, %(channel)s,"
        " %(category)s, %(priority)s, %(status)s, %(reason)s, %(due)s, %(now)s, %(until)s,"
        " %(sent_at)s)"
        " ON CONFLICT (key) DO UPDATE SET channel = EXCLUDED.channel, status = EXCLUDED.status,"
        " reason = EXCLUDED.reason, due_at = EXCLUDED.due_at, decided_at = EXCLUDED.decided_at,"
        " defer_until = EXCLUDED.defer_until, sent_at = EXCLUDED.sent_at",
        {
            "key": request.key,
            "customer": request.customer_id,
            "journey": request.journey,
            "run_no": request.run_no,
            "step": request.step,
            "channel": channel.value,
            "category": request.category.value,
            "priority": request.priority,
            "status": status,
            "reason": decision.reason,
            "due": due,
            "now": now,
            "until": decision.defer_until,
            "sent_at": now if sending else None,
        },
    )


async def _row(conn: Connection, key: str) -> dict[str, Any] | None:
    cursor = await conn.execute("SELECT * FROM messages WHERE key = %s FOR UPDATE", (key,))
    row: dict[str, Any] | None = await cursor.fetchone()
    return row


async def _went_unknown(
    conn: Connection, key: str, error: str, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """A call's outcome went unseen: ``unknown`` from when the call began, counted once."""
    cursor = await conn.execute(
        "UPDATE messages SET status = 'unknown', unconfirmed = unconfirmed + 1,"
        " unknown_since = coalesce(unknown_since, calling_since, %s), calling_since = NULL,"
        " reason = 'outcome unknown: waiting for the provider''s feedback', last_error = %s"
        " WHERE key = %s AND status = 'sending' RETURNING *",
        (now, error[:500], key),
    )
    row: dict[str, Any] | None = await cursor.fetchone()
    return row if row is not None else await _row(conn, key)


def _done(row: dict[str, Any]) -> Reservation:
    return Reservation(
        PolicyDecision(verdict=Verdict.blocked, reason=row["reason"]),
        Channel(row["channel"]),
        done=_recorded(row),
    )


def _unknown(row: dict[str, Any], *, found: bool = False) -> Reservation:
    return Reservation(
        PolicyDecision(verdict=Verdict.blocked, reason=row["reason"]),
        Channel(row["channel"]),
        unknown=Unknown(since=row["unknown_since"], resends=row["resends"], found=found),
    )


def _recorded(row: dict[str, Any]) -> SendOutcome:
    return SendOutcome(
        key=row["key"],
        channel=Channel(row["channel"]),
        status=SendStatus(row["status"]),
        reason=row["reason"],
        provider=row["provider"] or "",
        provider_id=row["provider_id"] or "",
    )


async def _cancelled(conn: Connection, request: DeliverRequest) -> bool:
    """Whether support cancelled the run this message belongs to."""
    cursor = await conn.execute(
        "SELECT outcome FROM runs WHERE customer_id = %s AND journey = %s AND run_no = %s",
        (request.customer_id, request.journey, request.run_no),
    )
    row = await cursor.fetchone()
    return row is not None and row["outcome"] == RunOutcome.cancelled


def _outcome(request: DeliverRequest, status: SendStatus) -> SendOutcome:
    return SendOutcome(
        key=request.key, channel=request.channel, status=status, reason="run cancelled"
    )
