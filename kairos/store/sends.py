"""The send transaction: decide a message with the customer's row locked, record it, confirm it.

``reserve`` runs the whole policy (consent, suppression, quiet hours, frequency caps and the
priority contest for a cap's last slot, :func:`kairos.policy.decide`) over what the store holds
at this moment, and records the decision in the message ledger under the message's key, in one
transaction. Everything that decides sends for one customer takes the same row lock, so two
journeys can never both take the last slot of a cap.

A key already ``sent`` (or ``blocked``, ``failed``) answers with what was recorded and the
provider is never called again. A key found ``sending`` means an earlier attempt called the
provider and nobody saw the answer (its worker died): the attempt is counted in
``unconfirmed`` and the message is decided again, policy included, before it is sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kairos import policy
from kairos.catalogue import AttrType, Catalogue
from kairos.messages import PolicyDecision, Receipt, SendOutcome, Verdict
from kairos.plan import Category, Channel
from kairos.runtime import DeliverRequest
from kairos.store.database import Connection, Database
from kairos.store.views import CustomerRow, address_hash, load_customer, suppression_key

# A key in one of these statuses is decided for good: a retry answers with what was recorded.
FINAL = ("sent", "blocked", "cancelled", "failed")
# Ledger statuses a decision writes, by verdict.
_STATUS = {
    Verdict.send: "sending",
    Verdict.defer: "deferred",
    Verdict.hold: "pending",
    Verdict.blocked: "blocked",
}


@dataclass
class Reservation:
    """What the send transaction decided.

    ``done`` is the recorded outcome when the key was decided for good before; otherwise
    ``decision`` says what to do now, on ``channel``, rendering with ``profile``.
    """

    decision: PolicyDecision
    channel: Channel
    profile: dict[str, Any] = field(default_factory=dict)
    done: SendOutcome | None = None


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
            cursor = await conn.execute(
                "SELECT * FROM messages WHERE key = %s FOR UPDATE", (request.key,)
            )
            existing = await cursor.fetchone()
            if existing is not None and existing["status"] in FINAL:
                return Reservation(
                    PolicyDecision(verdict=Verdict.blocked, reason=existing["reason"]),
                    Channel(existing["channel"]),
                    done=_recorded(existing),
                )
            if await _cancelled(conn, request):
                cancelled = PolicyDecision(verdict=Verdict.blocked, reason="run cancelled")
                await _record(
                    conn, request, request.channel, cancelled, now=now, due=due,
                    unconfirmed=False, status="cancelled",
                )  # fmt: skip
                return Reservation(cancelled, request.channel, done=_outcome(request, "cancelled"))
            contest = existing is not None and existing["status"] == "pending"
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
                await self._counted(conn, customer.id, now),
                await self._claims(conn, customer.id, due) if contest else (),
                now,
            )
            chosen = channel or request.channel
            unconfirmed = (
                existing is not None
                and existing["status"] == "sending"
                and existing["last_error"] is None
            )
            await _record(
                conn, request, chosen, decision, now=now, due=due, unconfirmed=unconfirmed
            )
            return Reservation(decision, chosen, customer.view())

    async def withdraw_if_cancelled(self, request: DeliverRequest) -> bool:
        """Whether the message's run was cancelled since it was decided; if so the ledger
        says cancelled (and no provider call was made)."""
        async with self.database.connection() as conn:
            if not await _cancelled(conn, request):
                return False
            await conn.execute(
                "UPDATE messages SET status = 'cancelled', reason = 'run cancelled',"
                " attempts = greatest(attempts - 1, 0) WHERE key = %s AND status = 'sending'",
                (request.key,),
            )
            return True

    async def confirm(self, key: str, receipt: Receipt) -> None:
        """The provider accepted the message: record its id."""
        await self.database.fetch_one(
            "UPDATE messages SET status = 'sent', provider = %s, provider_id = %s,"
            " last_error = NULL WHERE key = %s RETURNING key",
            (receipt.provider, receipt.provider_id, key),
        )

    async def failed_attempt(self, key: str, error: str, *, final: bool) -> None:
        """The provider call failed: ``final`` when it will not be retried."""
        if final:
            await self.database.fetch_one(
                "UPDATE messages SET status = 'failed', reason = %s, last_error = %s"
                " WHERE key = %s AND status <> 'sent' RETURNING key",
                (error[:500], error[:500], key),
            )
        else:
            await self.database.fetch_one(
                "UPDATE messages SET last_error = %s WHERE key = %s RETURNING key",
                (error[:500], key),
            )

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
        self, conn: Connection, customer_id: str, now: datetime
    ) -> dict[Channel, list[datetime]]:
        """When this customer's marketing messages took a cap slot, within the longest window."""
        counted: dict[Channel, list[datetime]] = {}
        if not self.caps:
            return counted
        cursor = await conn.execute(
            "SELECT channel, sent_at FROM messages WHERE customer_id = %s"
            " AND category = 'marketing' AND status IN ('sending', 'sent') AND sent_at > %s",
            (customer_id, now - self.window),
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
    unconfirmed: bool,
    status: str | None = None,
) -> None:
    status = status or _STATUS[decision.verdict]
    sending = status == "sending"
    await conn.execute(
        "INSERT INTO messages (key, customer_id, journey, run_no, step, channel, category,"
        " priority, status, reason, due_at, decided_at, defer_until, sent_at, attempts)"
        " VALUES (%(key)s, %(customer)s, %(journey)s, %(run_no)s, %(step)s, %(channel)s,"
        " %(category)s, %(priority)s, %(status)s, %(reason)s, %(due)s, %(now)s, %(until)s,"
        " %(sent_at)s, %(calls)s)"
        " ON CONFLICT (key) DO UPDATE SET channel = EXCLUDED.channel, status = EXCLUDED.status,"
        " reason = EXCLUDED.reason, due_at = EXCLUDED.due_at, decided_at = EXCLUDED.decided_at,"
        " defer_until = EXCLUDED.defer_until, sent_at = EXCLUDED.sent_at,"
        " attempts = messages.attempts + EXCLUDED.attempts,"
        " unconfirmed = messages.unconfirmed + %(unconfirmed)s, last_error = NULL",
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
            "calls": 1 if sending else 0,
            "unconfirmed": 1 if unconfirmed else 0,
        },
    )


def _recorded(row: dict[str, Any]) -> SendOutcome:
    return SendOutcome(
        key=row["key"],
        channel=Channel(row["channel"]),
        status=row["status"],
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
    return row is not None and row["outcome"] == "cancelled"


def _outcome(request: DeliverRequest, status: str) -> SendOutcome:
    return SendOutcome(
        key=request.key, channel=request.channel, status=status, reason="run cancelled"
    )
