"""Prometheus metrics (prometheus-client), each ``Metrics`` with its own registry: no global state.

Series:
  frames_in_total{stream}, frames_processed_total{stream}, frames_dropped_total{stream},
  reconnects_total{stream}, decode_errors_total{stream}             counters
  detector_fallbacks_total            counter: detection batches retried frame by frame
  store_written_rows_total, store_buffered_rows_total, store_dropped_rows_total,
  store_reconnects_total, store_failures_total                   counters of the event store
  store_pending_rows, store_up        gauges: rows waiting in memory; 1 while the store takes writes
  alerts_total{rule}                  counter: alerts fired per rule
  mqtt_published_total, mqtt_dropped_total, mqtt_reconnects_total, mqtt_connect_failures_total
                                      counters of the MQTT link (published: acknowledged by the broker)
  mqtt_outbox_messages, mqtt_connected   gauges: messages waiting for the broker; 1 while connected
  webhook_delivered_total, webhook_retries_total, webhook_failed_total, webhook_dropped_total
                                      counters of the webhook sender; webhook_pending gauge
  queue_depth{queue}                  gauge
  stage_latency_seconds{stage}        histogram: detect (a detector batch call), track (one frame),
                                      embed (an embedder call), output (one frame's writing),
                                      frame_to_output (capture to written: the end-to-end latency)
Stream labels are masked with ``mask_secrets`` (a URL used as a stream id never shows a password).
All methods are thread-safe (prometheus-client locks each child). ``serve`` starts the HTTP
endpoint on a daemon thread and returns a ``MetricsServer`` whose ``shutdown()`` stops it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from stream.integrations.counters import IntegrationCounters
from stream.logs import mask_secrets
from stream.outputs import OutputError
from stream.store.records import StoreCounters

__all__ = ["LATENCY_BUCKETS_S", "Metrics", "MetricsServer"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running /metrics endpoint."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop serving, close the socket and wait (at most ``timeout_s``) for the thread."""
        try:
            self._server.shutdown()
        finally:
            self._server.server_close()
            self._thread.join(timeout_s)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._frames_in = Counter("frames_in_total", "Frames read from the source", ["stream"], registry=r)
        self._frames_processed = Counter(
            "frames_processed_total", "Frames that went through detection and tracking", ["stream"], registry=r
        )
        self._frames_dropped = Counter(
            "frames_dropped_total", "Frames dropped at the door (live sources)", ["stream"], registry=r
        )
        self._reconnects = Counter(
            "reconnects_total", "Source reconnects (each starts an epoch)", ["stream"], registry=r
        )
        self._decode_errors = Counter(
            "decode_errors_total", "Corrupt packets/frames skipped by the source", ["stream"], registry=r
        )
        self._detector_fallbacks = Counter(
            "detector_fallbacks_total", "Detection batches that failed and were retried frame by frame", registry=r
        )
        self._store_counts = {
            name: Counter(f"store_{name}_total", text, registry=r)
            for name, text in (
                ("written_rows", "Rows the event store committed"),
                ("buffered_rows", "Rows that waited out an event store outage in memory"),
                ("dropped_rows", "Rows lost: dropped from a full outage buffer (they are in the journal)"),
                ("reconnects", "Times the event store came back after an outage"),
                ("failures", "Failed event store writes or connects"),
            )
        }
        self._store_seen: dict[str, int] = dict.fromkeys(self._store_counts, 0)
        self._store_pending = Gauge("store_pending_rows", "Rows waiting in memory for the event store", registry=r)
        self._store_up = Gauge("store_up", "1 while the event store takes writes", registry=r)
        self._alerts = Counter("alerts_total", "Alerts fired", ["rule"], registry=r)
        self._integration_counts = {
            name: Counter(f"{name}_total", text, registry=r)
            for name, text in (
                ("mqtt_published", "MQTT messages the broker acknowledged (QoS 0: written)"),
                ("mqtt_dropped", "MQTT messages dropped: the outbox was full, or they were left at exit"),
                ("mqtt_reconnects", "Times the MQTT link came back after losing the broker"),
                ("mqtt_connect_failures", "Failed MQTT connect attempts (refused, timed out, rejected)"),
                ("webhook_delivered", "Alert webhooks answered with 2xx"),
                ("webhook_retries", "Webhook attempts that failed and were retried"),
                ("webhook_failed", "Webhook deliveries given up (out of retries, or a 4xx answer)"),
                ("webhook_dropped", "Webhook deliveries dropped: the outbox was full, or they were left at exit"),
            )
        }
        self._integration_seen: dict[str, int] = dict.fromkeys(self._integration_counts, 0)
        self._alerts_seen: dict[str, int] = {}
        self._mqtt_outbox = Gauge("mqtt_outbox_messages", "MQTT messages waiting for the broker", registry=r)
        self._mqtt_connected = Gauge("mqtt_connected", "1 while the MQTT link is connected", registry=r)
        self._webhook_pending = Gauge("webhook_pending", "Webhook deliveries waiting (incl. retries)", registry=r)
        self._queue_depth = Gauge("queue_depth", "Items waiting in a pipeline queue", ["queue"], registry=r)
        self._latency = Histogram(
            "stage_latency_seconds", "Time spent in one pipeline stage per item", ["stage"],
            buckets=LATENCY_BUCKETS_S, registry=r,
        )  # fmt: skip

    def frames_in(self, stream: str, n: int = 1) -> None:
        self._frames_in.labels(stream=mask_secrets(stream)).inc(n)

    def frames_processed(self, stream: str, n: int = 1) -> None:
        self._frames_processed.labels(stream=mask_secrets(stream)).inc(n)

    def frames_dropped(self, stream: str, n: int = 1) -> None:
        self._frames_dropped.labels(stream=mask_secrets(stream)).inc(n)

    def reconnect(self, stream: str) -> None:
        self._reconnects.labels(stream=mask_secrets(stream)).inc()

    def decode_errors(self, stream: str, n: int = 1) -> None:
        self._decode_errors.labels(stream=mask_secrets(stream)).inc(n)

    def detector_fallbacks(self, n: int = 1) -> None:
        self._detector_fallbacks.inc(n)

    def store(self, counters: StoreCounters) -> None:
        """The event store's cumulative counters (reported as increments) and gauges."""
        now = {
            "written_rows": counters.written,
            "buffered_rows": counters.buffered,
            "dropped_rows": counters.dropped,
            "reconnects": counters.reconnects,
            "failures": counters.failures,
        }
        for name, value in now.items():
            if value > self._store_seen[name]:
                self._store_counts[name].inc(value - self._store_seen[name])
                self._store_seen[name] = value
        self._store_pending.set(counters.pending)
        self._store_up.set(1 if counters.up else 0)

    def integrations(self, counters: IntegrationCounters) -> None:
        """The integrations' cumulative counters (reported as increments) and gauges."""
        for rule, count in counters.alerts.items():
            seen = self._alerts_seen.get(rule, 0)
            if count > seen:
                self._alerts.labels(rule=rule).inc(count - seen)
                self._alerts_seen[rule] = count
        for name, value in counters.summary().items():
            if name in self._integration_counts and value > self._integration_seen[name]:
                self._integration_counts[name].inc(value - self._integration_seen[name])
                self._integration_seen[name] = value
        if counters.mqtt is not None:
            self._mqtt_outbox.set(counters.mqtt.pending)
            self._mqtt_connected.set(1 if counters.mqtt.connected else 0)
        if counters.webhook is not None:
            self._webhook_pending.set(counters.webhook.pending)

    def set_queue_depth(self, queue: str, depth: int) -> None:
        self._queue_depth.labels(queue=queue).set(depth)

    def observe_latency(self, stage: str, seconds: float) -> None:
        self._latency.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format of this registry (what /metrics returns)."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve /metrics on ``host:port`` (port 0 picks a free one); raises ``OutputError`` if it cannot bind."""
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OutputError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
        return MetricsServer(host=host, port=int(server.server_address[1]), _server=server, _thread=thread)
