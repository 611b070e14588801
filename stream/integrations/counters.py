"""The integrations' counters: cumulative counts and the state now, as frozen snapshots (for /metrics
and the run summary). Each live count is written by one thread: the output thread (drops when an
outbox is full), the ``mqtt`` thread or the ``webhook`` thread (the rest)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["IntegrationCounters", "MqttCounters", "WebhookCounters"]


@dataclass(frozen=True, slots=True)
class MqttCounters:
    """Cumulative counts of one link (``published``: acknowledged by the broker at QoS 1/2, written at
    QoS 0) and its state now (``pending``: messages waiting in the outbox)."""

    published: int = 0
    dropped: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    pending: int = 0
    connected: bool = False


@dataclass(frozen=True, slots=True)
class WebhookCounters:
    delivered: int = 0
    retries: int = 0
    failed: int = 0  # gave up: out of retries, or an answer not worth retrying
    dropped: int = 0  # never tried to the end: the outbox was full, or the app stopped
    pending: int = 0


@dataclass(frozen=True, slots=True)
class IntegrationCounters:
    alerts: Mapping[str, int] = field(default_factory=dict)  # per rule
    mqtt: MqttCounters | None = None
    webhook: WebhookCounters | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "alerts", MappingProxyType(dict(self.alerts)))

    def summary(self) -> dict[str, int]:
        """Flat counts for the run summary."""
        out = {"alerts": sum(self.alerts.values())}
        if self.mqtt is not None:
            m = self.mqtt
            out |= {
                "mqtt_published": m.published,
                "mqtt_dropped": m.dropped,
                "mqtt_reconnects": m.reconnects,
                "mqtt_connect_failures": m.connect_failures,
            }
        if self.webhook is not None:
            w = self.webhook
            out |= {
                "webhook_delivered": w.delivered,
                "webhook_retries": w.retries,
                "webhook_failed": w.failed,
                "webhook_dropped": w.dropped,
            }
        return out
