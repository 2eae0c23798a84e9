"""Journeys delivering through the real SendGrid and Twilio SDKs, over HTTP to local fakes."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from temporalio.api.history.v1 import ActivityTaskScheduledEventAttributes
from temporalio.testing import WorkflowEnvironment

from activities.providers.sendgrid import SendGridSender
from activities.providers.twilio import TwilioSender
from kairos.language.plan import Channel, SendStep
from kairos.language.project import Project
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, project_store, running_worker
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.fakes.twilio_server import FakeTwilio
from tests.helpers import finish, outbox, started, timezone_at

PHONE = "+358401234567"


async def abandoned_cart(
    env: WorkflowEnvironment, kairos: Kairos, customer: str, profile: dict[str, Any]
) -> tuple[JourneyResult, list[ActivityTaskScheduledEventAttributes]]:
    """A customer who consents to marketing and SMS leaves a cart: the run's result, and each
    send activity as the run scheduled it."""
    await kairos.identify(customer, profile, consent={"marketing": True, "sms": True})
    await kairos.emit(customer, "cart_updated", {"cart_total": 25.0, "currency": "EUR"})
    workflow_id = journey_workflow_id("cart_abandonment", customer, 1)
    handle = await started(env.client, workflow_id, JourneyResult)
    result: JourneyResult = await finish(env, handle)
    scheduled = [
        e.activity_task_scheduled_event_attributes
        async for e in handle.fetch_history_events()
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "deliver"
    ]
    return result, scheduled


async def test_a_customer_who_replied_stop_is_opted_out_of_sms_and_not_retried(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    with FakeTwilio() as twilio, FakeSendGrid() as sendgrid:
        twilio.fail_for(PHONE, 400, code=21610)
        sms = TwilioSender(twilio.account_sid, twilio.auth_token, from_number="+15005550006",
                           base_url=twilio.base_url, timeout=5)  # fmt: skip
        email = SendGridSender(sendgrid.api_key, base_url=sendgrid.base_url, timeout=5)
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store, email=email, sms=sms):
            await kairos.identify("stop", {"email": "s@example.com", "phone": PHONE,
                                           "timezone": timezone_at(now, 12)},
                                  consent={"marketing": True, "sms": True})  # fmt: skip
            await kairos.emit("stop", "cart_updated", {"cart_total": 25.0, "currency": "EUR"})
            handle = await started(
                ts_env.client, journey_workflow_id("cart_abandonment", "stop", 1), JourneyResult
            )
            result = await finish(ts_env, handle)
            view = await kairos.customer("stop")

    assert [m.status for m in result.messages] == ["sent", "failed"]
    assert result.messages[1].reason.startswith("RecipientOptedOut")
    assert not view.consent.sms and view.consent.email
    assert view.consent_history[-1].source == "twilio 21610"
    assert twilio.attempts == 1  # non-retryable: Twilio was asked once
    # The reminder went through SendGrid with the message key for webhook match-back.
    (mail,) = sendgrid.received
    custom = mail.body["custom_args"]
    assert custom["kairos_key"] == result.messages[0].key
    assert custom["journey"] == "cart_abandonment" and custom["step"] == "first_reminder"
    assert mail.body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_a_sendgrid_outage_is_retried_and_the_email_goes_out_once(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    with FakeSendGrid() as sendgrid:
        sendgrid.fail_next(503, times=2)
        sendgrid.fail_next(429, retry_after=30)
        email = SendGridSender(sendgrid.api_key, base_url=sendgrid.base_url, timeout=5)
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store, email=email):
            await kairos.identify("retry", {"email": "r@example.com",
                                            "timezone": timezone_at(now, 12)},
                                  consent={"marketing": True})  # fmt: skip
            await kairos.emit("retry", "cart_updated", {"cart_total": 25.0, "currency": "EUR"})
            handle = await started(
                ts_env.client, journey_workflow_id("cart_abandonment", "retry", 1), JourneyResult
            )
            result = await finish(ts_env, handle)
    reminder = result.messages[0]
    assert reminder.status == "sent"
    assert sendgrid.attempts == 5 and len(sendgrid.received) == 2
    assert timedelta(0) < result.records[-1].at - result.records[0].at


async def test_a_reminder_that_cannot_go_out_within_two_hours_is_given_up_and_the_journey_goes_on(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    with FakeSendGrid() as sendgrid:
        sendgrid.fail_next(503, times=1000)  # SendGrid is down all day
        email = SendGridSender(sendgrid.api_key, base_url=sendgrid.base_url, timeout=5)
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store, email=email):
            profile = {"email": "d@example.com", "phone": PHONE, "timezone": timezone_at(now, 12)}
            result, scheduled = await abandoned_cart(ts_env, kairos, "down", profile)
        row = await store.database.fetch_one(
            "SELECT status, attempts FROM messages WHERE key = %s", (result.messages[0].key,)
        )

    reminder, last_chance = result.messages
    # cart_abandonment's reminder says give_up_after: 2h; the last chance goes out by SMS.
    assert reminder.status == "failed"
    assert reminder.reason.startswith("gave up after 2h; the last attempt: ProviderUnavailable")
    assert row is not None and row["status"] == "failed" and row["attempts"] > 1
    assert sendgrid.received == []
    assert (last_chance.channel.value, last_chance.status) == ("sms", "sent")
    options = [
        (s.schedule_to_close_timeout.ToSeconds(), s.start_to_close_timeout.ToSeconds(),
         s.heartbeat_timeout.ToSeconds())
        for s in scheduled
    ]  # fmt: skip
    assert options == [(2 * 3600, 30, 10), (24 * 3600, 30, 10)]


async def test_a_reminder_that_falls_back_to_sms_goes_out_on_the_sms_queue(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    # The reminder may fall back to SMS; she has a phone number and no email address.
    plan = project.plans["cart_abandonment"]
    reminder = plan.steps["first_reminder"]
    assert isinstance(reminder, SendStep)
    reminder = reminder.model_copy(
        update={"template": "cart_abandonment/last_chance", "fallback": Channel.sms}
    )
    plan = plan.model_copy(update={"steps": {**plan.steps, "first_reminder": reminder}})
    fallback = dataclasses.replace(
        project, plans={**project.plans, "cart_abandonment": plan.with_version()}
    )
    now = await ts_env.get_current_time()
    async with project_store(settings, fallback) as store:
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store):
            profile = {"phone": PHONE, "timezone": timezone_at(now, 12)}
            result, scheduled = await abandoned_cart(ts_env, kairos, "fb", profile)
    queues = [s.task_queue.name for s in scheduled]

    first = result.messages[0]
    assert (first.channel, first.status) == (Channel.sms, "sent")
    q = settings.task_queue
    # The reminder: asked on the email queue, sent on the SMS queue; then the last chance (held
    # a minute for the SMS cap's last slot, so asked twice), on the SMS queue too.
    assert queues[:2] == [f"{q}-email", f"{q}-sms"]
    assert set(queues[2:]) == {f"{q}-sms"}
    sent = [(m["channel"], m["step"]) for m in outbox(settings.outbox_dir)]
    assert sent == [("sms", "first_reminder"), ("sms", "last_chance_sms")]
