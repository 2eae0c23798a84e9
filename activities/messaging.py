"""The send activity: decide in the store, render, deliver, confirm. One activity per message.

The decision is the store's send transaction (:class:`kairos.store.sends.Ledger`): consent,
suppression, quiet hours, frequency caps and priority, with the customer's row locked, so it is
atomic with every other message of that customer. The message renders with the stored profile
as it is now, not as it was when the journey started.

The send protocol around the provider call (docs/operations.md states what it guarantees): the
ledger marks the call under way just before it and records its outcome after it, so a retry
knows whether an earlier attempt called the provider and what came of it. A call whose answer
nobody saw makes the message ``unknown``; the retries that follow wait for the provider's
feedback (``AwaitingFeedback``, with the next look as the retry delay), then resend once or
report it, as the channel's :class:`kairos.runtime.delivery.UnknownPolicy` says.

Time is the Temporal server's (when this attempt started), so quiet hours and caps follow the
journey's clock, including the time-skipping clock of tests and simulations.

Sends run on their channel's task queue (``<queue>-email``, ``<queue>-sms``), whose dispatch
rate Temporal limits across all workers (``KAIROS_RATE_EMAIL``, ``KAIROS_RATE_SMS``). When policy
picks the fallback channel the activity answers ``rerouted`` and the journey sends it again on
that channel's queue. A provider that answers 429 is paused for every worker until its
Retry-After has passed (``provider_pauses`` in the store): sends sit the pause out instead of
calling it, and spend no attempt on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.customers import CustomerActivities
from activities.metrics import DeliveryMetrics
from activities.providers import EmailSender, SmsSender
from activities.providers.base import (
    NON_RETRYABLE,
    OUTCOME_UNKNOWN,
    RATE_LIMITED,
    RECIPIENT_OPTED_OUT,
    provider_error,
)
from kairos.language.catalogue import AttrType
from kairos.language.pinning import PinnedTemplates
from kairos.language.plan import Category, Channel
from kairos.messages.models import (
    EmailMessage,
    LedgerStatus,
    Receipt,
    SendOutcome,
    SendStatus,
    SmsMessage,
    Verdict,
)
from kairos.messages.rendering import RenderError, TemplateStore, email_headers, message_context
from kairos.messages.unsubscribe import unsubscribe_url
from kairos.runtime import delivery, phone
from kairos.runtime.config import Settings
from kairos.runtime.contract import UNSETTLED_SENDS, DeliverRequest, FailedSend, send_record
from kairos.store.facade import Store
from kairos.store.sends import Reservation

log = logging.getLogger(__name__)
TEMPLATE_ERROR = "TemplateError"
AWAITING_FEEDBACK = "AwaitingFeedback"
"""Retryable: an earlier call's outcome is unknown and the provider has not said yet."""
# The last decision about an unknown outcome is made this long before the send's deadline,
# so the journey records it rather than a timeout.
DEADLINE_MARGIN = timedelta(minutes=2)
# A 429 without Retry-After pauses its provider this long.
DEFAULT_PAUSE = timedelta(seconds=1)
# Provider calls one attempt makes at most while 429s keep coming.
MAX_CALLS_PER_ATTEMPT = 4

T = TypeVar("T")
M = TypeVar("M", EmailMessage, SmsMessage)


class _Withdrawn(Exception):
    """The run was cancelled after the message was decided, before the provider was called."""


class _Settled(Exception):
    """Feedback settled the message while this attempt was getting ready to call."""


class Messaging:
    """Delivery activities, built with their dependencies (the seam tests use)."""

    def __init__(
        self,
        customers: CustomerActivities,
        settings: Settings,
        templates: TemplateStore,
        email: EmailSender,
        sms: SmsSender,
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self.customers = customers
        self.store: Store = customers.store
        self.settings = settings
        self.templates = templates
        self.pinned = PinnedTemplates()
        self.email = email
        self.sms = sms
        self.metrics = metrics or DeliveryMetrics()
        catalogue = self.store.catalogue
        self.email_attribute = catalogue.attribute_of_type(AttrType.email)
        self.phone_attribute = catalogue.attribute_of_type(AttrType.phone)
        self.locale_attribute = catalogue.attribute_of_type(AttrType.locale)

    @activity.defn(name="deliver")
    async def deliver(self, request: DeliverRequest) -> SendOutcome:
        """Decide in the store's send transaction, then render and send through the provider."""
        info = activity.info()
        if info.attempt == 1:
            lag = (info.started_time - info.scheduled_time).total_seconds()
            self.metrics.lag(request.channel, lag)
        else:
            self.metrics.retry(request.channel)
        try:
            outcome = await _alive(self._deliver(request), self.metrics.heartbeat)
        except ApplicationError as err:
            final = err.non_retryable or err.type in NON_RETRYABLE
            status = SendStatus.failed.value if final else "retrying"  # a metric label
            self.metrics.message(request.journey, request.step, request.channel, status)
            raise
        self.metrics.message(request.journey, request.step, outcome.channel, outcome.status)
        if request.end is not None and outcome.status not in UNSETTLED_SENDS:
            # The run's last step: its end is recorded here rather than by another activity,
            # with this send's record as the run will keep it.
            sent = send_record(request.step, outcome, activity.info().started_time)
            await self.store.end_run(request.end.after(sent))
        return outcome

    async def _deliver(self, request: DeliverRequest) -> SendOutcome:
        info = activity.info()
        now = info.started_time
        reserved = await self.store.ledger.reserve(request, now=now, due=info.scheduled_time)
        if reserved.unknown is not None:
            reserved = await self._after_unknown(request, reserved)
        if reserved.done is not None:
            return reserved.done
        decision, channel = reserved.decision, reserved.channel
        if decision.verdict is not Verdict.send:
            self.metrics.blocked(channel, decision.reason)
        if decision.verdict is Verdict.blocked:
            return SendOutcome(
                key=request.key, channel=channel, status=SendStatus.blocked, reason=decision.reason
            )
        if decision.verdict in (Verdict.defer, Verdict.hold):
            return SendOutcome(
                key=request.key, channel=channel, status=SendStatus.deferred,
                reason=decision.reason, defer_until=decision.defer_until,
            )  # fmt: skip
        if channel is not request.channel:
            # Policy picked the fallback: its own task queue (and rate limit) sends it.
            return SendOutcome(
                key=request.key, channel=channel, status=SendStatus.rerouted,
                reason=f"{request.channel.value} cannot carry it; sent by {channel.value}",
            )  # fmt: skip
        return await self._send(request, reserved)

    async def _send(self, request: DeliverRequest, reserved: Reservation) -> SendOutcome:
        channel = reserved.channel
        try:
            if channel is Channel.email:
                receipt, subject = await self._send_email(request, reserved.profile)
            else:
                receipt, subject = await self._send_sms(request, reserved.profile)
        except _Withdrawn:
            return SendOutcome(
                key=request.key,
                channel=channel,
                status=SendStatus.cancelled,
                reason="run cancelled",
            )
        except _Settled:
            # Feedback settled it while we got ready; the next attempt reads what it says.
            raise ApplicationError(
                "the provider's feedback settled this message meanwhile; reading it again",
                type=AWAITING_FEEDBACK,
                next_retry_delay=timedelta(seconds=1),
            ) from None
        except RenderError as err:
            failure = ApplicationError(
                f"template {request.template} could not be rendered: {err}",
                type=TEMPLATE_ERROR,
                non_retryable=True,
            )
            await self.store.ledger.failed_attempt(request.key, str(failure), final=True)
            raise failure from err
        except ApplicationError as err:
            await self._failed(request, channel, err)
            raise
        await self.store.ledger.confirm(request.key, receipt)
        return SendOutcome(
            key=request.key,
            channel=channel,
            status=SendStatus.sent,
            provider=receipt.provider,
            provider_id=receipt.provider_id,
            subject=subject,
        )

    async def _failed(
        self, request: DeliverRequest, channel: Channel, err: ApplicationError
    ) -> None:
        """Record a failed provider call in the ledger, as what it means for the message."""
        ledger = self.store.ledger
        if err.type == OUTCOME_UNKNOWN:
            await ledger.call_unknown(
                request.key, f"{err.type}: {err.message}", now=activity.info().started_time
            )
            self.metrics.unknown(channel, "detected")
            return
        final = err.non_retryable or err.type in NON_RETRYABLE
        await ledger.failed_attempt(request.key, f"{err.type}: {err.message}", final=final)
        if err.type == RECIPIENT_OPTED_OUT:
            await self.customers.withdraw_sms(request.customer_id, request.key)

    async def _after_unknown(self, request: DeliverRequest, reserved: Reservation) -> Reservation:
        """An earlier call's outcome is unknown and no feedback has settled it: wait for it,
        resend once, or report it, as the channel's policy says."""
        assert reserved.unknown is not None
        info = activity.info()
        channel = reserved.channel
        if reserved.unknown.found:
            self.metrics.unknown(channel, "detected")  # by this attempt: the last one died
        deadline = (
            info.scheduled_time + info.schedule_to_close_timeout
            if info.schedule_to_close_timeout
            else None
        )
        sender: EmailSender | SmsSender = self.email if channel is Channel.email else self.sms
        next_step = (
            # The provider keeps one message per key: asking again is safe, and tells.
            delivery.Resend()
            if sender.deduplicates
            else delivery.after_unknown(
                since=reserved.unknown.since,
                now=info.started_time,
                policy=self.settings.unknown[channel],
                resends=reserved.unknown.resends,
                deadline=deadline,
                margin=DEADLINE_MARGIN,
            )
        )
        match next_step:
            case delivery.Wait(until=until):
                raise ApplicationError(
                    f"the outcome of an earlier {channel.value} call is unknown; waiting for "
                    f"the provider's feedback (looking again at {until:%H:%M:%S} UTC)",
                    {"key": request.key},
                    type=AWAITING_FEEDBACK,
                    next_retry_delay=max(until - info.started_time, timedelta(seconds=1)),
                )
            case delivery.Report(reason=reason):
                await self.store.ledger.report_unknown(request.key, reason)
                self.metrics.unknown(channel, "reported")
                outcome = SendOutcome(
                    key=request.key, channel=channel, status=SendStatus.unknown, reason=reason
                )
                return Reservation(
                    reserved.decision, channel, done=outcome, unknown=reserved.unknown
                )
            case delivery.Resend():
                resent = await self.store.ledger.resend(request, now=info.started_time)
                if resent.unknown is not None:  # somebody else resent it meanwhile
                    raise ApplicationError(
                        "another attempt is resending this message", type=AWAITING_FEEDBACK,
                        next_retry_delay=timedelta(seconds=30),
                    )  # fmt: skip
                if resent.done is None and resent.decision.verdict is Verdict.send:
                    self.metrics.unknown(channel, "resent")
                elif resent.done is not None and resent.done.status == SendStatus.unknown:
                    self.metrics.unknown(channel, "reported")  # not resent: consent, say
                return resent

    @activity.defn(name="record_failed_send")
    async def record_failed_send(self, failed: FailedSend) -> None:
        """The journey gave up on a send (its deadline passed, or the provider refused it): the
        ledger says ``failed``, or ``unknown`` when an earlier call may have gone through."""
        status = await self.store.ledger.give_up(failed.key, failed.reason)
        self.metrics.given_up(status)

    async def _templates(self, request: DeliverRequest) -> TemplateStore:
        """The templates the run's plan was compiled with; the current ones for a plan that
        names none (hand-written workflows) or one the store does not know."""
        if not request.templates:
            return self.templates
        store = self.pinned.get(request.templates)
        if store is None:
            files = await self.store.template_tree(request.templates)
            if files is None:
                log.warning("template tree %s is not in the store", request.templates)
                return self.templates
            store = self.pinned.add(request.templates, files)
        return store

    def _render_context(self, request: DeliverRequest, profile: dict[str, Any]) -> dict[str, Any]:
        marketing = request.category is Category.marketing
        link = None
        if marketing:
            link = unsubscribe_url(
                self.settings.public_url,
                request.customer_id,
                secret=self.settings.secret,
                now=int(time.time()),
            )
        # The same context `kairos preview` builds (kairos.messages.rendering.message_context).
        return message_context(
            customer=profile,
            event=request.context.get("event", {}),
            journey=request.context.get("journey", {}),
            unsubscribe_url=link,
            key=request.key,
        )

    def _metadata(self, request: DeliverRequest) -> dict[str, str]:
        return {
            "kairos_key": request.key,
            "customer_id": request.customer_id,
            "journey": request.journey,
            "journey_version": request.journey_version,
            "step": request.step,
        }

    async def _send_email(
        self, request: DeliverRequest, profile: dict[str, Any]
    ) -> tuple[Receipt, str]:
        context = self._render_context(request, profile)
        marketing = request.category is Category.marketing
        content = (await self._templates(request)).render_email(
            request.template,
            locale=_text(profile.get(self.locale_attribute or "")),
            default_locale=request.default_locale,
            context=context,
            marketing=marketing,
        )
        link = context["unsubscribe_url"]
        message = EmailMessage(
            key=request.key,
            to=str(profile.get(self.email_attribute or "")),
            from_email=self.settings.from_email,
            from_name=self.store.catalogue.brand,
            subject=content.subject,
            preheader=content.preheader,
            html=content.html,
            text=content.text,
            headers=email_headers(link) if marketing and link else {},
            categories=(request.journey, request.category.value),
            metadata=self._metadata(request),
            category=request.category,
        )
        receipt = await self._call_when_allowed(
            request, self.email.name, Channel.email, self.email.send_email, message
        )
        return receipt, content.subject

    async def _send_sms(
        self, request: DeliverRequest, profile: dict[str, Any]
    ) -> tuple[Receipt, str]:
        raw = str(profile.get(self.phone_attribute or "") or "")
        try:
            number = phone.normalise(raw)
        except phone.PhoneError as err:
            raise ApplicationError(
                f"cannot send SMS: {err}", type="InvalidRecipient", non_retryable=True
            ) from err
        content = (await self._templates(request)).render_sms(
            request.template,
            locale=_text(profile.get(self.locale_attribute or "")),
            default_locale=request.default_locale,
            context=self._render_context(request, profile),
            marketing=request.category is Category.marketing,
        )
        message = SmsMessage(
            key=request.key,
            to=number,
            body=content.body,
            encoding=content.encoding,
            segments=content.segments,
            metadata=self._metadata(request),
            category=request.category,
        )
        receipt = await self._call_when_allowed(
            request, self.sms.name, Channel.sms, self.sms.send_sms, message
        )
        return receipt, content.body[:40]

    async def _call_when_allowed(
        self,
        request: DeliverRequest,
        provider: str,
        channel: Channel,
        send: Callable[[M], Awaitable[Receipt]],
        message: M,
    ) -> Receipt:
        """The provider call, made only while the provider is not paused by a 429.

        A 429 pauses the provider for every worker (its Retry-After, in the store), so the
        channel slows down instead of each message finding out for itself. A pause that ends
        within this attempt's waiting budget is sat out here, and the call made again in the
        same attempt: the message's attempts are not spent on the provider's rate limit. A
        longer one ends the attempt with a retry at the pause's end, calling nobody.
        """
        patience = _patience()
        started = time.monotonic()
        for _ in range(MAX_CALLS_PER_ATTEMPT):
            wait = await self._still_wanted(request, provider, time.monotonic() - started)
            if wait > 0:
                self.metrics.paused(provider, channel)
                if time.monotonic() - started + wait > patience:
                    raise provider_error(
                        RATE_LIMITED,
                        f"{provider} asked us to slow down: its sends are paused for "
                        f"{wait:.0f}s more; trying again then",
                        {"provider": provider, "key": request.key},
                        retry_after=timedelta(seconds=max(wait, 1.0)),
                    )
                await asyncio.sleep(wait)
                continue
            try:
                return await self._call(provider, channel, send, message)
            except ApplicationError as err:
                if err.type != RATE_LIMITED:
                    raise
                pause = err.next_retry_delay or DEFAULT_PAUSE
                now = activity.info().started_time + timedelta(seconds=time.monotonic() - started)
                await self.store.ledger.pause_provider(
                    provider, now + pause, f"{err.type}: {err.message}"
                )
                await self.store.ledger.failed_attempt(
                    request.key, f"{err.type}: {err.message}", final=False
                )
        raise provider_error(
            RATE_LIMITED,
            f"{provider} kept answering 429 ({MAX_CALLS_PER_ATTEMPT} calls); trying again later",
            {"provider": provider, "key": request.key},
            retry_after=DEFAULT_PAUSE,
        )

    async def _call(
        self, provider: str, channel: Channel, send: Callable[[M], Awaitable[Receipt]], message: M
    ) -> Receipt:
        """One provider call, timed and counted."""
        started = time.monotonic()
        try:
            receipt = await send(message)
        except ApplicationError as err:
            self.metrics.call(provider, channel, time.monotonic() - started, err.type or "Error")
            raise
        self.metrics.call(provider, channel, time.monotonic() - started)
        return receipt

    async def _still_wanted(self, request: DeliverRequest, provider: str, spent: float) -> float:
        """The last look before the provider: a run cancelled since the decision (in the
        Temporal UI, say) sends nothing more. The call is marked under way in the same
        statement, so a retry knows this attempt called the provider.

        Returns:
            0 when the call is marked under way; else the seconds ``provider`` stays paused
            (nothing is marked).
        """
        # Temporal's time (of the attempt's start, plus what it spent sitting out pauses).
        now = activity.info().started_time + timedelta(seconds=spent)
        call = await self.store.ledger.begin_call(request, now=now, provider=provider)
        if call.status == LedgerStatus.cancelled:
            raise _Withdrawn
        if call.status != LedgerStatus.sending:
            raise _Settled
        return call.wait


async def _alive(work: Awaitable[T], beat: Callable[[], None]) -> T:
    """``work``, telling Temporal this worker is alive while it takes long, so a dead worker's
    send is retried after the heartbeat timeout, not the whole start-to-close. A send that ends
    within half the timeout (almost all) costs no heartbeat."""
    task = asyncio.ensure_future(work)
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return await task
    # The SDK sends a heartbeat at most every 0.8 timeouts; beating at that pace after the
    # first means each one reaches the server (and is billed as the action it is).
    wait = timeout.total_seconds() / 2
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                return task.result()
            activity.heartbeat()
            beat()
            wait = timeout.total_seconds() * 0.8
    finally:
        if not task.done():
            task.cancel()


def _patience() -> float:
    """Seconds of this attempt that may be spent sitting out a provider's pause: half of its
    start-to-close, so the call and its confirmation still fit."""
    timeout = activity.info().start_to_close_timeout
    seconds = timeout.total_seconds() if timeout else delivery.SEND_TIMEOUTS.start_to_close_seconds
    return seconds / 2


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
