"""The context a message renders with, built the same way by the send activity
(:func:`message_context`) and ``kairos preview`` (:func:`render_preview`, which also fills in
what a hand-written customer or event file leaves out), so a preview shows what a customer
receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kairos.language.actions_catalogue import action_sample
from kairos.language.catalogue import CONSENT_KEYS
from kairos.language.plan import ActionStep, Category, Channel, EventTrigger, JourneyPlan, SendStep
from kairos.language.problems import quote_list, suggestion
from kairos.messages.models import EmailContent, SmsContent
from kairos.messages.template_files import RenderError

if TYPE_CHECKING:
    from kairos.messages.rendering import TemplateStore


def message_context(
    *,
    customer: Mapping[str, Any],
    event: Mapping[str, Any],
    journey: Mapping[str, Any],
    unsubscribe_url: str | None,
    key: str,
) -> dict[str, Any]:
    """The names a message renders with. The send activity and ``kairos preview`` both build
    their context here, so a preview shows the text a customer receives."""
    return {
        "customer": dict(customer),
        "event": dict(event),
        "journey": dict(journey),
        "unsubscribe_url": unsubscribe_url,
        "message": {"key": key},
    }


def render_preview(
    store: TemplateStore,
    plan: JourneyPlan,
    step_id: str,
    customer: Mapping[str, Any],
    event: Mapping[str, Any],
    locale: str | None,
    unsubscribe_url: str | None,
) -> EmailContent | SmsContent:
    """Render a send step's message for one customer as the send activity would.

    Built-in names the customer or event file leave out are filled in (``customer.id``,
    ``consent`` all granted, ``event.name`` from the trigger), and results of earlier actions
    (``journey.<save_as>``) are what the action would return for the step's own arguments at
    the time of the preview (a 10% coupon says 10%, valid from today), with the registered
    action's sample values for the rest.

    Args:
        locale: The locale asked for; None uses ``customer["locale"]``, then the journey's
            default.

    Raises:
        RenderError: An unknown or non-send step (with a did-you-mean), or any render error.
    """
    step = _send_step(plan, step_id)
    now = store.clock()
    marketing = plan.category == Category.marketing
    context = message_context(
        customer=_preview_customer(plan, customer),
        event=_preview_event(plan, event, now),
        journey=_preview_journey(plan, step_id, now),
        # As the send activity: only marketing messages carry an unsubscribe link.
        unsubscribe_url=unsubscribe_url if marketing else None,
        key=f"preview:{plan.name}:{step_id}",
    )
    render = store.render_email if step.channel == Channel.email else store.render_sms
    return render(
        step.template,
        locale=locale or _str_or_none(customer.get("locale")),
        default_locale=plan.default_locale,
        context=context,
        marketing=marketing,
    )


def _send_step(plan: JourneyPlan, step_id: str) -> SendStep:
    step = plan.steps.get(step_id)
    if isinstance(step, SendStep):
        return step
    sends = [sid for sid, s in plan.steps.items() if isinstance(s, SendStep)]
    if step is None:
        hint = suggestion(step_id, sends, kind="send steps")
        raise RenderError(f"journey `{plan.name}` has no step `{step_id}` ({hint})")
    raise RenderError(
        f"step `{step_id}` of journey `{plan.name}` is a {step.kind} step, not a send "
        f"(send steps: {quote_list(sends, conj='and')})"
    )


def _preview_customer(plan: JourneyPlan, customer: Mapping[str, Any]) -> dict[str, Any]:
    builtins: dict[str, Any] = {
        "id": "preview-customer",
        "stage": plan.stage.value if plan.stage else None,
        "consent": dict.fromkeys(CONSENT_KEYS, True),
    }
    return builtins | dict(customer)


def _preview_event(plan: JourneyPlan, event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    name = plan.trigger.event if isinstance(plan.trigger, EventTrigger) else None
    builtins = {"name": name, "id": "preview-event", "timestamp": now.isoformat()}
    return builtins | dict(event)


def _preview_journey(plan: JourneyPlan, step_id: str, now: datetime) -> dict[str, Any]:
    journey: dict[str, Any] = {
        "name": plan.name,
        "version": plan.version,
        "step": step_id,
        "variant": None,
        "started_at": now.isoformat(),
    }
    for step in plan.steps.values():
        if isinstance(step, ActionStep) and step.save_as:
            journey[step.save_as] = action_sample(step.action, step.args, now)
    return journey


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
