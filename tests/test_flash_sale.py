"""The shipped flash sale, simulated: a text the moment the broadcast enters the customer (the
broadcast is scheduled for 10:00 in their own time), email when we may not text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.simulation.customers import SimCustomer, load_customer, parse_event_spec
from kairos.simulation.engine import simulate
from tests.test_simulate import NO_DST, kinds, on, sent

FIXTURES = Path(__file__).parent / "fixtures" / "simulate"


def customer(name: str, **profile: object) -> SimCustomer:
    loaded = load_customer(FIXTURES / f"{name}.yaml")
    return dataclasses.replace(loaded, profile={**loaded.profile, "timezone": NO_DST, **profile})


async def test_a_regular_who_takes_texts_gets_the_sale_by_sms_at_once_in_finnish(
    project: Project, settings: Settings
) -> None:
    # Entered at 10:00 her time (`--at 10:00 --local`): the text goes then, not a day later.
    timeline = await simulate(
        project, settings, "flash_sale", customer("fia"), start="10:00", **on(settings)
    )

    assert sent(timeline) == [("flash_sale", "+0d 00:00", "10:00")]
    [message] = [e.message for e in timeline.entries if e.message is not None]
    assert message.channel == "sms" and message.to == "+358401234567"
    assert message.text.startswith("Lumo Coffeen salamatarjous: Fia, kaikki kahvipavut -25 %")
    assert message.text.endswith("Lopeta viestit vastaamalla STOP")
    assert message.segments == 1


async def test_a_customer_without_sms_consent_gets_the_same_offer_by_email_in_german(
    project: Project, settings: Settings
) -> None:
    # Entered at 07:00 her time (a broadcast at --at 07:00): quiet hours hold it until 08:00.
    timeline = await simulate(
        project, settings, "flash_sale", customer("dee"), start="07:00", **on(settings)
    )

    assert sent(timeline) == [("flash_sale", "+0d 01:00", "08:00")]
    [message] = [e.message for e in timeline.entries if e.message is not None]
    assert (message.channel, message.to) == ("email", "dee@example.com")
    assert message.subject == "Nur heute: 25 % auf alle Kaffeebohnen"
    assert "Hallo Dee," in message.text and "https://lumo.example/sale" in message.text


async def test_an_order_during_the_night_converts_and_sends_nothing(
    project: Project, settings: Settings
) -> None:
    # Entered at 21:00 (a broadcast at --at 21:00): quiet hours hold the text until 08:00, and
    # she orders at 23:00.
    events = (parse_event_spec("order_placed@+2h"),)
    timeline = await simulate(
        project,
        settings,
        "flash_sale",
        customer("fia"),
        start="21:00",
        events=events,
        **on(settings),
    )

    assert sent(timeline) == []
    assert "send" not in kinds(timeline)
    assert (timeline.outcome, timeline.converted) == ("converted", True)
