"""The send activity: decide in the store, render, deliver, confirm. One activity per message.

The decision is the store's send transaction (:class:`kairos.store.sends.Ledger`): consent,
suppression, quiet hours, frequency caps and priority, with the customer's row locked, so it is
atomic with every other message of that customer. The message renders with the stored profile
as it is now, not as it was when the journey started.

Time is the Temporal server's (when this attempt started), so quiet hours and caps follow the
journey's clock, including the time-skipping clock of tests and simulations.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.customers import CustomerActivities
from activities.providers import EmailSender, SmsSender
from activities.providers.base import NON_RETRYABLE, RECIPIENT_OPTED_OUT
from kairos import phone
from kairos.catalogue import AttrType
from kairos.config import Settings
from kairos.messages import EmailMessage, Receipt, SendOutcome, SmsMessage, Verdict
from kairos.pinning import PinnedTemplates
from kairos.plan import Category, Channel
from kairos.rendering import RenderError, TemplateStore, email_headers, message_context
from kairos.runtime import DeliverRequest, FailedSend
from kairos.store import Store
from kairos.unsubscribe import unsubscribe_url

log = logging.getLogger(__name__)
TEMPLATE_ERROR = "TemplateError"


class _Withdrawn(Exception):
    """The run was cancelled after the message was decided, before the provider was called."""


class Messaging:
    """Delivery activities, built with their dependencies (the seam tests use)."""

    def __init__(
        self,
        customers: CustomerActivities,
        settings: Settings,
        templates: TemplateStore,
        email: EmailSender,
        sms: SmsSender,
    ) -> None:
        self.customers = customers
        self.store: Store = customers.store
        self.settings = settings
        self.templates = templates
        self.pinned = PinnedTemplates()
        self.email = email
        self.sms = sms
        catalogue = self.store.catalogue
        self.email_attribute = catalogue.attribute_of_type(AttrType.email)
        self.phone_attribute = catalogue.attribute_of_type(AttrType.phone)
        self.locale_attribute = catalogue.attribute_of_type(AttrType.locale)

    @activity.defn(name="deliver")
    async def deliver(self, request: DeliverRequest) -> SendOutcome:
        """Decide in the store's send transaction, then render and send through the provider."""
        info = activity.info()
        reserved = await self.store.ledger.reserve(
            request, now=info.started_time, due=info.scheduled_time
        )
        if reserved.done is not None:
            return reserved.done
        decision, channel = reserved.decision, reserved.channel
        if decision.verdict is Verdict.blocked:
            return SendOutcome(
                key=request.key, channel=channel, status="blocked", reason=decision.reason
            )
        if decision.verdict in (Verdict.defer, Verdict.hold):
            return SendOutcome(
                key=request.key, channel=channel, status="deferred",
                reason=decision.reason, defer_until=decision.defer_until,
            )  # fmt: skip
        try:
            if channel is Channel.email:
                receipt, subject = await self._send_email(request, reserved.profile)
            else:
                receipt, subject = await self._send_sms(request, reserved.profile)
        except _Withdrawn:
            return SendOutcome(
                key=request.key, channel=channel, status="cancelled", reason="run cancelled"
            )
        except RenderError as err:
            failure = ApplicationError(
                f"template {request.template} could not be rendered: {err}",
                type=TEMPLATE_ERROR,
                non_retryable=True,
            )
            await self.store.ledger.failed_attempt(request.key, str(failure), final=True)
            raise failure from err
        except ApplicationError as err:
            final = err.non_retryable or err.type in NON_RETRYABLE
            await self.store.ledger.failed_attempt(
                request.key, f"{err.type}: {err.message}", final=final
            )
            if err.type == RECIPIENT_OPTED_OUT:
                await self.customers.withdraw_sms(request.customer_id, request.key)
            raise
        await self.store.ledger.confirm(request.key, receipt)
        return SendOutcome(
            key=request.key,
            channel=channel,
            status="sent",
            provider=receipt.provider,
            provider_id=receipt.provider_id,
            subject=subject,
        )

    @activity.defn(name="record_failed_send")
    async def record_failed_send(self, failed: FailedSend) -> None:
        """The journey gave up on a send after its retries: the ledger says failed."""
        await self.store.ledger.failed_attempt(failed.key, failed.reason, final=True)

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
        # The same context `kairos preview` builds (kairos.rendering.message_context).
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
        await self._still_wanted(request)
        return await self.email.send_email(message), content.subject

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
        await self._still_wanted(request)
        return await self.sms.send_sms(message), content.body[:40]

    async def _still_wanted(self, request: DeliverRequest) -> None:
        """The last look before the provider: a run cancelled since the decision (in the
        Temporal UI, say) sends nothing more."""
        if await self.store.ledger.withdraw_if_cancelled(request):
            raise _Withdrawn


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
