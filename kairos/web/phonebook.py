"""Which customers a phone number belongs to, for SMS STOP and START, without storing numbers.

Twilio tells us who replied by phone number, but consent lives on customer entities and there
is no database besides Temporal. Phone numbers are personal data, so they must not be search
attributes (stored unencrypted, searchable). Instead each number gets its own small workflow
whose *id* is a keyed hash: ``phone:<HMAC-SHA256(KAIROS_SECRET, number)>``. Finding it needs the
number and the secret; the id reveals neither, and nothing in it is searchable.

The workflow holds the ids of the customers linked to the number and whether the number last
said STOP or START. A keyword is one signal-with-start from the web front door (so Twilio gets
its answer as soon as Temporal has it); the workflow then applies the consent change to every
linked customer entity, durably, and remembers it, so a customer linked to the number later
inherits a STOP. A replayed webhook (same Twilio MessageSid) is applied once.

Register :class:`PhoneWorkflow` on the worker next to the customer entity.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

with workflow.unsafe.imports_passed_through():
    from kairos.runtime import SIGNAL_CONSENT, ConsentChange, customer_workflow_id

PHONE_WORKFLOW = "Phone"
SIGNAL_LINK = "link"
SIGNAL_UNLINK = "unlink"
SIGNAL_KEYWORD = "keyword"
QUERY_STATE = "state"

# A number shared by more customers than this is not a person's phone; keep the newest.
MAX_CUSTOMERS = 50
# Enough to recognise a replayed webhook; Twilio never resends an old message.
SEEN_MESSAGES = 100
_KEY_DOMAIN = b"kairos.phonebook.v1."


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeywordReceived(_Model):
    """An SMS keyword from the number: ``opt_in`` for START, not for STOP."""

    message_id: str
    opt_in: bool
    keyword: str = ""


class PhoneState(_Model):
    """What one number's workflow knows: its customers, and its last keyword."""

    customers: list[str] = Field(default_factory=list)
    opted_out: bool = False
    seen_messages: list[str] = Field(default_factory=list)


class PhoneInput(_Model):
    state: PhoneState | None = None


class _ConsentTask(_Model):
    customer_id: str
    granted: bool
    source: str


def phone_workflow_id(secret: str, e164: str) -> str:
    """The workflow id of a number: a keyed hash, never the number itself."""
    digest = hmac.new(secret.encode(), _KEY_DOMAIN + e164.encode(), hashlib.sha256).hexdigest()
    return f"phone:{digest}"


@workflow.defn(name=PHONE_WORKFLOW)
class PhoneWorkflow:
    """Customers of one phone number, and that number's SMS opt-out."""

    @workflow.init
    def __init__(self, input: PhoneInput) -> None:
        self.state = input.state or PhoneState()
        self.tasks: list[_ConsentTask] = []

    @workflow.run
    async def run(self, input: PhoneInput) -> PhoneState:
        while True:
            await workflow.wait_condition(
                lambda: bool(self.tasks) or workflow.info().is_continue_as_new_suggested()
            )
            while self.tasks:
                await self._apply(self.tasks.pop(0))
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(PhoneInput(state=self.state))

    @workflow.signal(name=SIGNAL_LINK)
    def link(self, customer_id: str) -> None:
        """Link a customer to this number; a number that said STOP stays stopped for them."""
        if customer_id in self.state.customers:
            return
        self.state.customers.append(customer_id)
        del self.state.customers[:-MAX_CUSTOMERS]
        if self.state.opted_out:
            self.tasks.append(
                _ConsentTask(customer_id=customer_id, granted=False, source="sms STOP earlier")
            )

    @workflow.signal(name=SIGNAL_UNLINK)
    def unlink(self, customer_id: str) -> None:
        if customer_id in self.state.customers:
            self.state.customers.remove(customer_id)

    @workflow.signal(name=SIGNAL_KEYWORD)
    def keyword(self, received: KeywordReceived) -> None:
        """Opt every customer of the number out of SMS (STOP) or back in (START), once."""
        if received.message_id in self.state.seen_messages:
            return
        self.state.seen_messages.append(received.message_id)
        del self.state.seen_messages[:-SEEN_MESSAGES]
        self.state.opted_out = not received.opt_in
        source = f"sms {received.keyword or ('START' if received.opt_in else 'STOP')}"
        for customer_id in self.state.customers:
            self.tasks.append(
                _ConsentTask(customer_id=customer_id, granted=received.opt_in, source=source)
            )

    @workflow.query(name=QUERY_STATE)
    def view(self) -> PhoneState:
        return self.state

    async def _apply(self, task: _ConsentTask) -> None:
        entity = workflow.get_external_workflow_handle(customer_workflow_id(task.customer_id))
        change = ConsentChange(topic="sms", granted=task.granted, source=task.source)
        try:
            await entity.signal(SIGNAL_CONSENT, change)
        except ApplicationError:
            # The entity is gone (the customer was forgotten): so is their link to the number.
            self.unlink(task.customer_id)


class Phonebook:
    """The web front door's side of the phone workflows: link numbers, pass on keywords."""

    def __init__(self, client: Client, secret: str, task_queue: str) -> None:
        """Create a phonebook.

        Args:
            client: A Temporal client.
            secret: The key of the number hashes (``KAIROS_SECRET``); changing it orphans the
                links made with the old one.
            task_queue: Where :class:`PhoneWorkflow` is registered (the worker's queue).
        """
        self.client = client
        self.secret = secret
        self.task_queue = task_queue

    async def link(self, e164: str, customer_id: str) -> None:
        """Remember that ``customer_id`` has the number ``e164`` (E.164)."""
        await self._signal_with_start(e164, SIGNAL_LINK, customer_id)

    async def unlink(self, e164: str, customer_id: str) -> None:
        """Forget that ``customer_id`` has the number; nothing happens for an unknown number."""
        handle = self.client.get_workflow_handle(phone_workflow_id(self.secret, e164))
        try:
            await handle.signal(SIGNAL_UNLINK, customer_id)
        except RPCError as err:
            if err.status is not RPCStatusCode.NOT_FOUND:
                raise

    async def keyword(self, e164: str, received: KeywordReceived) -> None:
        """Pass an SMS keyword from the number on; its customers' consent follows."""
        await self._signal_with_start(e164, SIGNAL_KEYWORD, received)

    async def state(self, e164: str) -> PhoneState | None:
        """What the number's workflow knows, or None when it has none."""
        handle = self.client.get_workflow_handle(phone_workflow_id(self.secret, e164))
        try:
            state: PhoneState = await handle.query(QUERY_STATE, result_type=PhoneState)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            raise
        return state

    async def _signal_with_start(self, e164: str, signal: str, arg: Any) -> None:
        await self.client.start_workflow(
            PHONE_WORKFLOW,
            PhoneInput(),
            id=phone_workflow_id(self.secret, e164),
            task_queue=self.task_queue,
            start_signal=signal,
            start_signal_args=[arg],
            static_summary="SMS opt-in and opt-out of one phone number (number not stored)",
        )
