"""Policy and local time, as pure functions: consent, caps, quiet hours, DST, splits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kairos.messages import Verdict
from kairos.plan import Category, Channel, SplitVariant
from kairos.policy import choose_variant, decide, in_quiet_hours, next_time_of_day
from kairos.runtime import CapRule, Consent, LedgerEntry, SendRequest

HELSINKI = "Europe/Helsinki"


def request(**overrides: object) -> SendRequest:
    values: dict[str, object] = {
        "key": "k", "journey": "j", "step": "s", "channels": (Channel.email,),
        "category": Category.marketing, "quiet_hours": ("21:00", "08:00"),
        "caps": (CapRule(channel=Channel.email, limit=3, window_seconds=7 * 86400),),
        "email_attribute": "email", "phone_attribute": "phone",
        "timezone_attribute": "timezone",
    }  # fmt: skip
    values.update(overrides)
    return SendRequest.model_validate(values)


PROFILE = {"email": "a@example.com", "timezone": HELSINKI}
NOON = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)  # 12:00 in Helsinki (UTC+3 in summer)


def test_a_message_at_3am_helsinki_is_deferred_to_8am() -> None:
    three_am = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    decision, _ = decide(request(), PROFILE, Consent(), [], three_am)
    assert decision.verdict is Verdict.defer
    assert decision.defer_until == datetime(2026, 6, 1, 5, 0, tzinfo=UTC)  # 08:00 EEST


def test_quiet_hours_follow_daylight_saving_time() -> None:
    winter_night = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)  # 02:00 EET
    assert in_quiet_hours(winter_night, ("21:00", "08:00"), HELSINKI) == datetime(
        2026, 1, 15, 6, 0, tzinfo=UTC
    )
    assert in_quiet_hours(NOON, ("21:00", "08:00"), HELSINKI) is None


def test_transactional_messages_ignore_quiet_hours_caps_and_marketing_opt_out() -> None:
    three_am = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    ledger = [
        LedgerEntry(key=f"m{n}", journey="j", step="s", channel=Channel.email,
                    category=Category.marketing, status="sent", at=three_am)
        for n in range(5)
    ]  # fmt: skip
    decision, channel = decide(
        request(category=Category.transactional), PROFILE, Consent(marketing=False), ledger,
        three_am,
    )  # fmt: skip
    assert decision.verdict is Verdict.send and channel is Channel.email


def test_the_cap_counts_only_recent_marketing_messages_on_the_channel() -> None:
    def sent(days_ago: int, channel: Channel = Channel.email) -> LedgerEntry:
        return LedgerEntry(key=f"{days_ago}{channel}", journey="j", step="s", channel=channel,
                           category=Category.marketing, status="sent",
                           at=NOON - timedelta(days=days_ago))  # fmt: skip

    ledger = [sent(1), sent(2), sent(8), sent(1, Channel.sms)]
    assert decide(request(), PROFILE, Consent(), ledger, NOON)[0].verdict is Verdict.send
    ledger.append(sent(3))
    blocked = decide(request(), PROFILE, Consent(), ledger, NOON)[0]
    assert blocked.verdict is Verdict.blocked
    assert blocked.reason == "frequency cap: 3 marketing email per 1w reached"


def test_fallback_channel_when_sms_is_impossible() -> None:
    both = request(channels=(Channel.sms, Channel.email))
    decision, channel = decide(both, PROFILE, Consent(), [], NOON)
    assert decision.verdict is Verdict.send and channel is Channel.email
    nothing, none = decide(both, {"timezone": HELSINKI}, Consent(), [], NOON)
    assert nothing.verdict is Verdict.blocked and none is None
    assert nothing.reason == "sms: no phone number; email: no email address"


def test_opted_out_of_sms_is_blocked_with_the_reason() -> None:
    sms = request(channels=(Channel.sms,))
    decision, _ = decide(sms, {**PROFILE, "phone": "+358401234567"}, Consent(sms=False), [], NOON)
    assert (decision.verdict, decision.reason) == (Verdict.blocked, "sms: opted out of SMS")


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
