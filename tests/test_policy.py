"""Policy and local time, as pure functions: consent, caps, quiet hours, DST, splits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kairos.language.plan import Category, Channel, SplitVariant
from kairos.messages.models import Verdict
from kairos.runtime.policy import (
    CONTEST_GRACE,
    CapRule,
    Claim,
    Recipient,
    SendAsk,
    choose_variant,
    decide,
    in_quiet_hours,
    next_time_of_day,
)

HELSINKI = "Europe/Helsinki"
NOON = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # 12:00 in Helsinki (UTC+3 in summer)
WEEK = 7 * 86400
CAPS = (CapRule(Channel.email, 3, WEEK),)


def ask(**overrides: object) -> SendAsk:
    values: dict[str, object] = {
        "key": "k", "channels": (Channel.email,), "category": Category.marketing,
        "priority": 50, "due_at": NOON, "quiet_hours": ("21:00", "08:00"),
    }  # fmt: skip
    values.update(overrides)
    return SendAsk(**values)  # type: ignore[arg-type]


# An opted-in customer with an address and a number.
ADA = Recipient(has_email=True, has_phone=True, timezone=HELSINKI)


def test_a_message_at_3am_helsinki_is_deferred_to_8am() -> None:
    three_am = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    decision, _ = decide(ask(), ADA, CAPS, {}, (), three_am)
    assert decision.verdict is Verdict.defer
    assert decision.defer_until == datetime(2026, 6, 1, 5, 0, tzinfo=UTC)  # 08:00 EEST


def test_quiet_hours_follow_daylight_saving_time() -> None:
    winter_night = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)  # 02:00 EET
    assert in_quiet_hours(winter_night, ("21:00", "08:00"), HELSINKI) == datetime(
        2026, 1, 15, 6, 0, tzinfo=UTC
    )
    assert in_quiet_hours(NOON, ("21:00", "08:00"), HELSINKI) is None


def test_transactional_messages_ignore_quiet_hours_caps_and_marketing_consent() -> None:
    three_am = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    no_marketing = Recipient(
        has_email=True, has_phone=False, refused={"marketing": "never given (opt-in)"}
    )
    counted = {Channel.email: [three_am - timedelta(hours=n) for n in range(5)]}
    decision, channel = decide(
        ask(category=Category.transactional), no_marketing, CAPS, counted, (), three_am
    )
    assert decision.verdict is Verdict.send and channel is Channel.email


def test_marketing_without_consent_is_blocked_saying_why() -> None:
    never = Recipient(
        has_email=True, has_phone=False, refused={"marketing": "never given (opt-in)"}
    )
    decision, _ = decide(ask(), never, CAPS, {}, (), NOON)
    assert (decision.verdict, decision.reason) == (
        Verdict.blocked,
        "marketing consent never given (opt-in)",
    )


def test_a_full_cap_defers_until_the_oldest_message_leaves_the_window() -> None:
    def sent(days_ago: int) -> datetime:
        return NOON - timedelta(days=days_ago)

    # One of three slots taken this week (the SMS and the 8-day-old email do not count).
    counted = {Channel.email: [sent(1), sent(8)], Channel.sms: [sent(1), sent(2)]}
    assert decide(ask(), ADA, CAPS, counted, (), NOON)[0].verdict is Verdict.send
    counted[Channel.email] += [sent(2), sent(3)]
    deferred = decide(ask(), ADA, CAPS, counted, (), NOON)[0]
    assert deferred.verdict is Verdict.defer
    assert deferred.reason.startswith("frequency cap: 3 marketing email per 1w reached")
    assert deferred.defer_until == sent(3) + timedelta(days=7)


def test_the_last_slot_is_held_to_the_end_of_the_minute_then_goes_to_the_highest_priority() -> None:
    counted = {Channel.email: [NOON - timedelta(days=1), NOON - timedelta(days=2)]}
    due = NOON + timedelta(seconds=12)
    held, _ = decide(ask(key="low", priority=60, due_at=due), ADA, CAPS, counted, (), due)
    assert held.verdict is Verdict.hold
    assert held.defer_until == NOON + timedelta(minutes=1) + CONTEST_GRACE
    claims = [
        Claim("low", Channel.email, 60, due),
        Claim("high", Channel.email, 70, due + timedelta(seconds=30)),
    ]
    after = NOON + timedelta(minutes=1, seconds=5)
    low, _ = decide(ask(key="low", priority=60, due_at=due, contest=True), ADA, CAPS, counted,
                    claims, after)  # fmt: skip
    high, _ = decide(ask(key="high", priority=70, due_at=due, contest=True), ADA, CAPS, counted,
                     claims, after)  # fmt: skip
    assert high.verdict is Verdict.send
    assert low.verdict is Verdict.defer and "went to high (priority 70)" in low.reason
    # The slot frees when the older of the two messages this week leaves the window.
    assert low.defer_until == NOON - timedelta(days=2) + timedelta(days=7)


def test_fallback_channel_when_sms_is_impossible() -> None:
    both = ask(channels=(Channel.sms, Channel.email))
    no_phone = Recipient(has_email=True, has_phone=False, timezone=HELSINKI)
    decision, channel = decide(both, no_phone, CAPS, {}, (), NOON)
    assert decision.verdict is Verdict.send and channel is Channel.email
    nobody = Recipient(has_email=False, has_phone=False, timezone=HELSINKI)
    nothing, none = decide(both, nobody, CAPS, {}, (), NOON)
    assert nothing.verdict is Verdict.blocked and none is None
    assert nothing.reason == "sms: no phone number; email: no email address"


def test_sms_without_consent_or_to_a_suppressed_number_is_blocked_with_the_reason() -> None:
    sms = ask(channels=(Channel.sms,))
    withdrawn = Recipient(has_email=True, has_phone=True, refused={"sms": "withdrawn (sms STOP)"})
    decision, _ = decide(sms, withdrawn, CAPS, {}, (), NOON)
    assert (decision.verdict, decision.reason) == (
        Verdict.blocked,
        "sms: SMS consent withdrawn (sms STOP)",
    )
    stopped = Recipient(has_email=True, has_phone=True, suppressed={Channel.sms: "replied STOP"})
    decision, _ = decide(sms, stopped, CAPS, {}, (), NOON)
    assert decision.reason == "sms: address suppressed (replied STOP)"


def test_wait_until_a_time_of_day_across_the_spring_forward() -> None:
    # 29 March 2026: Helsinki moves from UTC+2 to UTC+3 at 03:00 local.
    before = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    assert next_time_of_day(before, "09:00", HELSINKI) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)
    # 03:30 does not exist that night: it is moved past the gap, to 04:30 summer time.
    assert next_time_of_day(before, "03:30", HELSINKI) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # An unknown timezone falls back to UTC rather than failing the journey.
    assert next_time_of_day(before, "09:00", "Mars/Olympus") == datetime(
        2026, 3, 29, 9, 0, tzinfo=UTC
    )


def test_splits_are_deterministic_weighted_and_hold_out_the_right_share() -> None:
    variants = (SplitVariant(name="a", weight=70), SplitVariant(name="b", weight=30))
    picks = [choose_variant(f"c{n}", "j", "split", variants, 10) for n in range(5000)]
    assert picks == [choose_variant(f"c{n}", "j", "split", variants, 10) for n in range(5000)]
    held = sum(1 for p in picks if p is None)
    a = sum(1 for p in picks if p is not None and p.name == "a")
    assert 400 < held < 600
    assert 0.65 < a / (5000 - held) < 0.75


def test_wait_until_a_time_of_day_across_the_fall_back() -> None:
    # 25 October 2026: 04:00 EEST becomes 03:00 EET; 03:30 happens twice, the first counts.
    before = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    assert next_time_of_day(before, "03:30", HELSINKI) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert next_time_of_day(before, "09:00", HELSINKI) == datetime(2026, 10, 25, 7, 0, tzinfo=UTC)
