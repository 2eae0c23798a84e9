"""The send activity: ask the customer entity, render, deliver. One activity per message.

The policy decision is an update on the customer entity, so consent, caps and quiet hours are
decided atomically with every other message of that customer; the entity answers with the fresh
profile, so the message renders with what is known now, not when the journey started.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.providers import EmailSender, SmsSender
from activities.providers.base import RECIPIENT_OPTED_OUT
from kairos import phone
from kairos.catalogue import AttrType, Catalogue
from kairos.config import Settings
from kairos.messages import EmailMessage, Receipt, SendOutcome, SmsMessage, Verdict
from kairos.plan import Category, Channel
from kairos.rendering import RenderError, TemplateStore, email_headers
from kairos.runtime import (
    SIGNAL_CONSENT,
    SIGNAL_IDENTIFY,
    UPDATE_RESERVE,
    CapRule,
    ConsentChange,
    DeliverRequest,
    ReserveResult,
    SendRequest,
    customer_workflow_id,
)
from kairos.temporal import signal_customer
from kairos.unsubscribe import unsubscribe_url

log = logging.getLogger(__name__)
TEMPLATE_ERROR = "TemplateError"


class Messaging:
    """Delivery activities, built with their dependencies (the seam tests use)."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        catalogue: Catalogue,
        templates: TemplateStore,
        email: EmailSender,
        sms: SmsSender,
    ) -> None:
        self.client = client
        self.settings = settings
        self.templates = templates
        self.email = email
        self.sms = sms
        self.email_attribute = catalogue.attribute_of_type(AttrType.email)
        self.phone_attribute = catalogue.attribute_of_type(AttrType.phone)
        self.locale_attribute = catalogue.attribute_of_type(AttrType.locale)
        self.timezone_attribute = catalogue.attribute_of_type(AttrType.timezone)
        self.caps = tuple(
            CapRule(channel=Channel(name), limit=cap.limit, window_seconds=cap.window_seconds)
            for name, cap in settings.caps.items()
        )

    @activity.defn(name="deliver")
    async def deliver(self, request: DeliverRequest) -> SendOutcome:
        """Reserve with the customer entity, then render and send through the provider."""
        reserved = await self._reserve(request)
        decision = reserved.decision
        if decision.verdict is Verdict.blocked:
            return SendOutcome(
                key=request.key, channel=reserved.channel or request.channel,
                status="blocked", reason=decision.reason,
            )  # fmt: skip
        if decision.verdict is Verdict.defer:
            return SendOutcome(
                key=request.key, channel=reserved.channel or request.channel,
                status="deferred", reason=decision.reason, defer_until=decision.defer_until,
            )  # fmt: skip
        channel = reserved.channel or request.channel
        profile = dict(decision.profile)
        try:
            if channel is Channel.email:
                receipt, subject = await self._send_email(request, profile)
            else:
                receipt, subject = await self._send_sms(request, profile)
        except RenderError as err:
            raise ApplicationError(
                f"template {request.template} could not be rendered: {err}",
                type=TEMPLATE_ERROR,
                non_retryable=True,
            ) from err
        except ApplicationError as err:
            if err.type == RECIPIENT_OPTED_OUT:
                await signal_customer(
                    self.client, activity.info().task_queue, request.customer_id, SIGNAL_CONSENT,
                    ConsentChange(topic="sms", granted=False, source="twilio 21610"),
                )  # fmt: skip
            raise
        return SendOutcome(
            key=request.key,
            channel=channel,
            status="sent",
            provider=receipt.provider,
            provider_id=receipt.provider_id,
            subject=subject,
        )

    async def _reserve(self, request: DeliverRequest) -> ReserveResult:
        channels = (request.channel,) + ((request.fallback,) if request.fallback else ())
        quiet = (
            None if request.ignore_quiet_hours else request.quiet_hours or self.settings.quiet_hours
        )
        send = SendRequest(
            key=request.key,
            journey=request.journey,
            step=request.step,
            channels=channels,
            category=request.category,
            priority=request.priority,
            quiet_hours=quiet,
            caps=self.caps,
            email_attribute=self.email_attribute,
            phone_attribute=self.phone_attribute,
            timezone_attribute=self.timezone_attribute,
        )
        handle = self.client.get_workflow_handle(customer_workflow_id(request.customer_id))
        result: ReserveResult
        try:
            result = await handle.execute_update(UPDATE_RESERVE, send, result_type=ReserveResult)
            return result
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise
        # A journey started directly (not through the entity) for a customer the entity has
        # not seen: create the entity, then ask again.
        handle = await signal_customer(
            self.client, activity.info().task_queue, request.customer_id, SIGNAL_IDENTIFY, {}
        )
        result = await handle.execute_update(UPDATE_RESERVE, send, result_type=ReserveResult)
        return result

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
        return {
            **request.context,
            "customer": profile,
            "unsubscribe_url": link,
            "message": {"key": request.key},
        }

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
        content = self.templates.render_email(
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
            from_name=self.settings.from_name,
            subject=content.subject,
            preheader=content.preheader,
            html=content.html,
            text=content.text,
            headers=email_headers(link) if marketing and link else {},
            categories=(request.journey, request.category.value),
            metadata=self._metadata(request),
            category=request.category,
        )
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
        content = self.templates.render_sms(
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
        return await self.sms.send_sms(message), content.body[:40]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
