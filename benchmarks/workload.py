"""The customers of a benchmark run and the events product code sends for them.

Customer ``c-<i>`` enters one of the five journeys, by ``i % 5``, with a profile and events
that depend only on ``i``, so both sides of a run (and every run of the same size) see exactly
the same work. Half the customers have a phone number (SMS paths); locales rotate en, fi, de.
Consent is opt-in, so every customer grants marketing consent (and SMS consent with a number)
the way product code would: with the sign-up or lead form's boxes, or with ``identify``.

Every other nurture lead engages at once (pricing and a live tasting): the scoring rules of
journeys/customer.yaml make them sales-ready, which starts bench_sales_handover for them.

A quarter of the cart customers buy after their reminder: the harness sends ``order_placed`` as
soon as their first message is in the outbox. The order ends the cart journey as converted (a
goal, from any step) and, because it moves ``customer.last_order_at``, starts win-back for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JOURNEY_CYCLE = (
    "bench_welcome",
    "bench_cart_abandonment",
    "bench_nurture",
    "bench_referral_reward",
    "bench_win_back",
)
# Journeys whose first message is due at once (no designed wait before it): the ones whose
# event-to-first-message latency measures the engine rather than the journey's own timing.
IMMEDIATE = frozenset({"bench_welcome", "bench_nurture", "bench_referral_reward"})
NAMES = ("Ada", "Bo", "Chidi", "Dana", "Eero", "", "Fatima", "Gus")
LOCALES = ("en", "fi", "de")
INTERESTS = ("espresso", "filter", "office")


@dataclass(frozen=True)
class Customer:
    """One benchmark customer: which journey they enter, with what, and whether they buy."""

    id: str
    journey: str
    profile: dict[str, Any] = field(default_factory=dict)
    converts: bool = False
    # A lead who looks at the prices and joins a live tasting right after the form: with the
    # form's points that is 50, sales-ready (bench_sales_handover starts; nurture ends early).
    engages: bool = False

    @property
    def identified_first(self) -> bool:
        """Whether product code identifies the customer (profile and consent) before the
        trigger: when the trigger event does not carry them (sign-up and lead forms do)."""
        return self.journey not in ("bench_welcome", "bench_nurture")

    @property
    def consent(self) -> dict[str, bool]:
        """What the customer agreed to: marketing, and SMS when they gave a number."""
        return {"marketing": True, "sms": "phone" in self.profile}

    def trigger(self, now: datetime) -> tuple[str, dict[str, Any]]:
        """The event that starts the customer's journey."""
        number = int(self.id.removeprefix("c-"))
        match self.journey:
            case "bench_welcome":
                opt_in = {"marketing_opt_in": True, "sms_opt_in": "phone" in self.profile}
                return "signed_up", {**self.profile, **opt_in, "signed_up_at": now.isoformat()}
            case "bench_cart_abandonment":
                return "cart_updated", {
                    "cart_total": 42.5 + number % 7,
                    "currency": "EUR",
                    "cart_url": f"https://lumo.example/cart/{self.id}",
                    "item_count": 1 + number % 3,
                    "first_item_name": "Ethiopia Yirgacheffe",
                }
            case "bench_nurture":
                interest = INTERESTS[number // 5 % 3]
                return "lead_captured", {
                    **self.profile,
                    "interest": interest,
                    "marketing_opt_in": True,
                }
            case "bench_referral_reward":
                return "referral_converted", {"friend_first_name": "Kim", "order_id": f"o-{number}"}
            case _:
                return "order_placed", order(number, now)


def order(number: int, now: datetime) -> dict[str, Any]:
    """An ``order_placed`` event's properties."""
    return {
        "order_id": f"o-{number}",
        "total": 31.0,
        "currency": "EUR",
        "placed_at": now.isoformat(),
    }


def customers(count: int) -> list[Customer]:
    """The first ``count`` benchmark customers."""
    return [_customer(i) for i in range(count)]


def _customer(i: int) -> Customer:
    journey = JOURNEY_CYCLE[i % len(JOURNEY_CYCLE)]
    profile: dict[str, Any] = {
        "email": f"c{i}@bench.example",
        "locale": LOCALES[i // 5 % len(LOCALES)],
        "timezone": "UTC",
    }
    if name := NAMES[i % len(NAMES)]:
        profile["first_name"] = name
    if i // 5 % 2 == 0:
        profile["phone"] = f"+35840{i:07d}"
    converts = journey == "bench_cart_abandonment" and i // 5 % 4 == 0
    engages = journey == "bench_nurture" and i // 5 % 2 == 1
    return Customer(
        id=f"c-{i}", journey=journey, profile=profile, converts=converts, engages=engages
    )


def engagement(number: int) -> list[tuple[str, dict[str, Any]]]:
    """The events an engaging lead sends after the form (15 + 25 points)."""
    return [
        ("pricing_viewed", {"plan": "office"}),
        ("webinar_attended", {"webinar_id": f"w-{number}", "minutes_attended": 40}),
    ]


def utcnow() -> datetime:
    return datetime.now(UTC)
