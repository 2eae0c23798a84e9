"""The fault harness, small: journeys sent through the real SendGrid and Twilio SDKs to local
fakes that answer 429 and 5xx, take requests and never answer in time, and are stopped and
restarted, while a worker process is SIGKILLed (``benchmarks/provider_faults.py``; the run of
400 journeys and its figures are in docs/operations.md)."""

from __future__ import annotations

import pytest

from benchmarks.provider_faults import Faults, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_twenty_journeys_through_failing_providers_lose_and_duplicate_nothing() -> None:
    # Only the first request to each fake is held past the client's timeout: a held request
    # drawn late would keep the run going for its timeout and the wait for feedback.
    result = await run(10, kills=1, seconds=8, faults=Faults(held=0.0), unknown_wait="20s")

    served = result["faults_served"]
    assert served.get("429", 0) > 0 and served.get("500", 0) + served.get("503", 0) > 0
    assert result["runs"].get("open", 0) == 0 and sum(result["runs"].values()) == 20
    assert result["feedback_refused"] == 0
    assert result["lost"] == 0
    assert result["duplicates"] == 0
    # Every call whose answer nobody saw (at least the two held on purpose) was settled by
    # the provider's feedback, resent (email, when the provider never had it) or counted.
    assert result["ambiguous"] >= 2
    assert result["ambiguous"] == (
        result["settled_by_feedback"] + result["resent"] + result["unknown"]
    )
    assert result["unknown_taken_by_provider"] == 0
