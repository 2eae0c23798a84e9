"""The journey interpreter keeps the promises the journey files make, on time-skipping Temporal.

Each test is a way a run used to break: a restart lost at the last step, a condition that
jammed the run, ``event.items`` read as the dict method, engagement events dropped between
waits, a long wait's history growing without bound, a send going out after its run was
cancelled.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.providers.outbox import OutboxEmailSender
from kairos.language import expressions
from kairos.language.plan import BranchStep, JourneyPlan
from kairos.language.project import Project
from kairos.messages.models import EmailMessage, Receipt, SendStatus
from kairos.messages.rendering import TemplateStore
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyInput, JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, project_store, running_worker
from tests.helpers import finish, outbox, schedule, started, timezone_at

CART = {"cart_total": 20.0, "currency": "EUR"}
MARKETING = {"marketing": True}


def person(now: Any, name: str, **extra: Any) -> dict[str, Any]:
    return {"email": f"{name}@example.com", "locale": "en", "timezone": timezone_at(now, 12),
            **extra}  # fmt: skip


class _RestartDuringSend(OutboxEmailSender):
    """The outbox, except that while run 1's last chance is being sent the customer's cart
    changes (the journey's trigger fires again), and the send finishes only once the store has
    started the new run: the restart arrives during the last step, every time."""

    def __init__(self, outbox_dir: Path, kairos: Kairos, client: Client) -> None:
        super().__init__(outbox_dir)
        self.kairos, self.client, self.restarted = kairos, client, False

    async def send_email(self, message: EmailMessage) -> Receipt:
        _, _, run_no, step, *_ = message.key.split(":")
        if step == "last_chance_email" and run_no == "1" and not self.restarted:
            self.restarted = True
            await self.kairos.emit("late", "cart_updated", {**CART, "cart_total": 35.0})
            await started(self.client, journey_workflow_id("cart_abandonment", "late", 2))
        return await super().send_email(message)


async def test_a_restart_that_arrives_during_the_last_step_is_not_lost(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    # The restart is sent from inside the last send, not timed to coincide with its timer: a
    # signal that wakes a wait whose timer fired meanwhile strands the run on the time-skipping
    # server (it refuses the task's completion, "invalid history builder state for action",
    # temporalio/sdk-java#3088), a flake of the test server the real server does not have.
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    sender = _RestartDuringSend(settings.outbox_dir, kairos, ts_env.client)
    async with running_worker(ts_env.client, settings, store, email=sender):
        await kairos.identify("late", person(now, "late"), consent=MARKETING)
        await kairos.emit("late", "cart_updated", CART)
        first = await started(
            ts_env.client, journey_workflow_id("cart_abandonment", "late", 1), JourneyResult
        )
        ended: JourneyResult = await finish(ts_env, first)
        second = await started(
            ts_env.client, journey_workflow_id("cart_abandonment", "late", 2), JourneyResult
        )
        result: JourneyResult = await finish(ts_env, second)
    assert sender.restarted
    # The store restarted run 1 while its last send was still out: whichever of the send's
    # result and the restart the run saw first, it ended and said how.
    assert ended.outcome in ("completed", "restarted")
    record = await store.customer("late")
    assert record is not None
    assert [(r.run_no, r.outcome) for r in record.runs if r.run_no == 1] == [(1, ended.outcome)]
    # The updated cart gets its own reminder: the restart was not swallowed by the old run.
    assert result.outcome == "completed"
    reminders = [m for m in outbox(settings.outbox_dir) if m["step"] == "first_reminder"]
    assert [m["key"].split(":")[2] for m in reminders] == ["1", "2"]
    last = [m for m in outbox(settings.outbox_dir) if m["step"] == "last_chance_email"]
    assert [m["key"].split(":")[2] for m in last] == ["1", "2"]


def jammed(project: Project, condition: str) -> JourneyPlan:
    """Cart abandonment whose first branch condition is ``condition``."""
    plan = project.plans["cart_abandonment"]
    branch = plan.steps["cart_still_full"]
    assert isinstance(branch, BranchStep)
    cases = (branch.cases[0].model_copy(update={"when": condition}),)
    steps = {**plan.steps, "cart_still_full": branch.model_copy(update={"cases": cases})}
    return plan.model_copy(update={"steps": steps}).with_version()


async def test_a_condition_that_raises_is_recorded_and_taken_as_false(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    plan = jammed(project, "customer.cart_total > 'x'")  # a number compared with text
    broken = dataclasses.replace(project, plans={**project.plans, "cart_abandonment": plan})
    async with project_store(settings, broken) as store:
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store):
            await kairos.identify("jam", person(now, "jam"), consent=MARKETING)
            await kairos.emit("jam", "cart_updated", CART)
            handle = await started(
                ts_env.client, journey_workflow_id("cart_abandonment", "jam", 1), JourneyResult
            )
            result: JourneyResult = await finish(ts_env, handle)
        record = await store.customer("jam")
    # The run did not jam: the case was false, so the else path (exit) ran.
    assert result.outcome == "cart_emptied"
    problem = next(r for r in result.records if r.kind == "problem")
    assert problem.step == "cart_still_full" and "taken as false" in problem.outcome
    assert record is not None
    (run,) = record.runs
    assert run.problems and run.problems[0].startswith("step cart_still_full: cannot evaluate")


def test_a_missing_or_null_property_is_undefined_and_never_compares_true() -> None:
    context = {"event": {"total": None}, "customer": {}, "journey": {}}
    assert not expressions.holds("event.total > 0", context)
    assert not expressions.holds("event.absent >= 0", context)
    assert not expressions.holds("0 < event.absent", context)
    assert expressions.holds("event.total is not defined", context)


def test_event_items_is_the_property_never_the_dict_method(tmp_path: Path) -> None:
    cart = {"event": {"items": ["beans", "grinder"]}, "customer": {}, "journey": {}}
    empty: dict[str, Any] = {"event": {}, "customer": {}, "journey": {}}
    for name in ("items", "keys", "values", "get", "pop"):
        assert not expressions.holds(f"event.{name}", empty), name
    assert expressions.evaluate("event.items | length", cart) == 2
    # Templates: a missing `items` defaults like any missing property.
    (tmp_path / "cart").mkdir()
    text = "{{ (event.items | default([], true)) | length }} items"
    (tmp_path / "cart" / "count.en.sms.j2").write_text(text)
    templates = TemplateStore(tmp_path)
    rendered = templates.render_sms(
        "cart/count", locale="en", default_locale="en", context=empty, marketing=False
    )
    assert rendered.body == "0 items"


async def test_engagement_events_that_arrive_back_to_back_all_count(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        lead = person(now, "keen", interest="espresso", marketing_opt_in=True)
        await kairos.emit("keen", "lead_captured", lead)
        handle = await started(
            ts_env.client, journey_workflow_id("nurture", "keen", 1), JourneyResult
        )
        # Pricing (+15) then, a moment later, a webinar (+25): with the lead's first 10 that
        # makes 50, sales-ready. The webinar arrives while the store hands the lead to sales.
        await schedule(ts_env.client, settings.task_queue, "keen", [
            (timedelta(hours=5), "pricing_viewed", {"plan": "home"}),
            (timedelta(hours=5), "webinar_attended", {"webinar_id": "w1"}),
        ])  # fmt: skip
        result: JourneyResult = await finish(ts_env, handle)
        record = await kairos.customer("keen")
    assert result.outcome == "handed_to_sales"
    assert record.profile["lead_score"] == 50
    handovers = await store.database.fetch_all(
        "SELECT run_no FROM runs WHERE customer_id = 'keen' AND journey = 'sales_handover'"
    )
    assert handovers == [{"run_no": 1}]


async def test_a_long_wait_that_signals_reach_continues_as_new_and_keeps_its_deadline(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    plan = store.project.plans["welcome"]
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("busy", person(now, "busy"), consent=MARKETING)
        handle = await ts_env.client.start_workflow(
            "Journey",
            JourneyInput(plan=plan, customer_id="busy", run_no=1, max_history=40,
                         timezone_attribute="timezone"),
            id=journey_workflow_id("welcome", "busy", 1), task_queue=settings.task_queue,
            result_type=JourneyResult,
        )  # fmt: skip
        # The store knows the run (as if it had entered it), so profile changes reach it.
        async with store.database.transaction() as conn:
            await conn.execute(
                "INSERT INTO journey_entries VALUES ('busy', 'welcome', 1, 1, now(), now())"
            )
            await conn.execute(
                "INSERT INTO runs (customer_id, journey, run_no, plan_version, started_at)"
                " VALUES ('busy', 'welcome', 1, %s, now())",
                (plan.version,),
            )
        # While the run waits two days for setup, its profile changes 30 times: a signal each.
        for n in range(30):
            await kairos.identify("busy", {"company": f"C{n}", "onboarded": n % 2 == 0})
        result: JourneyResult = await handle.result()
        described = await handle.describe()
    assert described.run_id != handle.first_execution_run_id  # continued as new mid-wait
    assert result.outcome == "no_first_order"
    sends = {r.step: r.at for r in result.records if r.kind == "send"}
    welcome_sent = sends["welcome"]
    waited = next(r for r in result.records if r.step == "wait_for_setup")
    # The two-day wait ended two days after it began, not two days after the handover.
    assert timedelta(days=2) <= waited.at - welcome_sent < timedelta(days=2, minutes=1)
    assert [m.status for m in result.messages].count(SendStatus.sent) >= 2


async def test_a_run_cancelled_after_its_message_was_decided_sends_nothing(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    decide = store.ledger.reserve

    async def decided_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        reservation = await decide(*args, **kwargs)
        await store.cancel_run("undo", "cart_abandonment")  # e.g. from the Temporal UI
        return reservation

    store.ledger.reserve = decided_then_cancelled  # type: ignore[method-assign]
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("undo", person(now, "undo"), consent=MARKETING)
        await kairos.emit("undo", "cart_updated", CART)
        handle = await started(
            ts_env.client, journey_workflow_id("cart_abandonment", "undo", 1), JourneyResult
        )
        result: JourneyResult = await finish(ts_env, handle)
    assert result.messages[0].status == "cancelled"
    assert outbox(settings.outbox_dir) == []
    record = await store.customer("undo")
    assert record is not None
    assert (record.messages[0].status, record.messages[0].attempts) == ("cancelled", 0)
