"""Kairos's own metrics, exported with the Temporal SDK's through the worker's runtime.

With ``KAIROS_METRICS`` set (``make dev`` sets it), the worker's Temporal runtime serves
Prometheus metrics at ``http://<KAIROS_METRICS>/metrics``; every metric here is created on that
runtime's meter, so one endpoint carries both the SDK's (``temporal_*``: activity and workflow
task latencies, schedule-to-start per task queue, failures, pollers) and these.
docs/operations.md lists them with the alerts to set. Labels are names and kinds only: never a
customer id, an address or a free-text reason.
"""

from __future__ import annotations

from typing import Literal

from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from kairos.language.plan import Channel

# Seconds: from a fast provider answer to a slow one, and from no queue wait to a long one.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)

BlockKind = Literal[
    "consent", "suppressed", "no_address", "quiet_hours", "frequency_cap", "cancelled", "other"
]


def prometheus_runtime(address: str) -> Runtime:
    """A Temporal runtime serving Prometheus metrics at ``http://<address>/metrics``.

    Raises:
        ValueError: The address cannot be bound (another process has the port).
    """
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                histogram_bucket_overrides={
                    "kairos_provider_latency_seconds": _LATENCY_BUCKETS,
                    "kairos_send_queue_lag_seconds": _LAG_BUCKETS,
                },
            )
        )
    )


class DeliveryMetrics:
    """The send activity's counters and histograms."""

    def __init__(self, meter: MetricMeter | None = None) -> None:
        meter = meter or MetricMeter.noop
        self._messages = meter.create_counter(
            "kairos_messages_total",
            "Sends by journey, step, channel and what became of the message",
        )
        self._blocked = meter.create_counter(
            "kairos_messages_blocked_total",
            "Messages blocked or deferred by policy, by channel and kind of reason",
        )
        self._retries = meter.create_counter(
            "kairos_send_retries_total", "Send attempts after the first, by channel"
        )
        self._latency = meter.create_histogram_float(
            "kairos_provider_latency_seconds", "Provider calls: time to the answer", "s"
        )
        self._errors = meter.create_counter(
            "kairos_provider_errors_total", "Provider calls that failed, by error type"
        )
        self._unknown = meter.create_counter(
            "kairos_unknown_outcomes_total",
            "Provider calls whose outcome nobody saw (detected), and how the send ended them: "
            "resent, reported",
        )
        self._lag = meter.create_histogram_float(
            "kairos_send_queue_lag_seconds",
            "Time a send's first attempt waited on the task queue for a worker",
            "s",
        )
        self._given_up = meter.create_counter(
            "kairos_sends_given_up_total",
            "Sends the journey gave up on (refused for good, or past their deadline), by the "
            "status the ledger recorded: failed, or unknown when a call may have gone through",
        )
        self._paused = meter.create_counter(
            "kairos_send_paused_total",
            "Sends that found their provider paused by a 429 and waited instead of calling it",
        )
        self._heartbeats = meter.create_counter(
            "kairos_send_heartbeats_total", "Heartbeats sent while a send took long"
        )

    @classmethod
    def of(cls, client: Client) -> DeliveryMetrics:
        """The metrics of the runtime ``client`` runs on (they go nowhere without an exporter)."""
        runtime = client.service_client.config.runtime or Runtime.default()
        return cls(runtime.metric_meter)

    def message(self, journey: str, step: str, channel: Channel, status: str) -> None:
        attributes = {"journey": journey, "step": step, "channel": channel.value}
        self._messages.add(1, {**attributes, "status": status})

    def blocked(self, channel: Channel, reason: str) -> None:
        self._blocked.add(1, {"channel": channel.value, "reason": block_kind(reason)})

    def retry(self, channel: Channel) -> None:
        self._retries.add(1, {"channel": channel.value})

    def call(self, provider: str, channel: Channel, seconds: float, error: str = "") -> None:
        attributes = {"provider": provider, "channel": channel.value}
        self._latency.record(seconds, attributes)
        if error:
            self._errors.add(1, {**attributes, "type": error})

    def unknown(self, channel: Channel, what: Literal["detected", "resent", "reported"]) -> None:
        self._unknown.add(1, {"channel": channel.value, "outcome": what})

    def lag(self, channel: Channel, seconds: float) -> None:
        self._lag.record(max(seconds, 0.0), {"channel": channel.value})

    def given_up(self, status: str) -> None:
        self._given_up.add(1, {"status": status})

    def paused(self, provider: str, channel: Channel) -> None:
        self._paused.add(1, {"provider": provider, "channel": channel.value})

    def heartbeat(self) -> None:
        self._heartbeats.add(1)


def block_kind(reason: str) -> BlockKind:
    """The kind of a policy reason, for a metric label (reasons themselves vary too much)."""
    text = reason.lower()
    if "consent" in text:
        return "consent"
    if "suppressed" in text:
        return "suppressed"
    if "no email address" in text or "no phone number" in text:
        return "no_address"
    if text.startswith("quiet hours"):
        return "quiet_hours"
    if text.startswith("frequency cap"):
        return "frequency_cap"
    if "cancelled" in text:
        return "cancelled"
    return "other"
