"""The MQTT link: the only module that imports paho-mqtt.

``MqttLink`` owns one paho client and one thread (``mqtt``) that does everything with it: connecting,
the network loop, publishing and reconnecting. Other threads (the output thread) only hand it
messages, without waiting:

- ``publish(topic, payload)``: events and alerts, into a bounded FIFO outbox (``mqtt.outbox``); when it
  is full the oldest message is dropped and counted (``dropped``);
- ``retain(topic, payload)``: retained states (presence, last person, discovery configs), kept as the
  latest payload per topic, never dropped; all of them are published again after every (re)connect,
  since a restarted broker may have lost them.

The thread publishes states before events, and keeps at most ``MAX_IN_FLIGHT`` messages unacknowledged
in paho; at QoS 1 and 2 paho resends the unacknowledged ones after a reconnect, so a message handed
over while the broker is away waits in the outbox and one that was in flight is resent: none is lost
unless the outbox overflows. Connecting never blocks anyone but this thread: a connect attempt is
bounded by ``CONNECT_TIMEOUT_S``; a failed one, a refused CONNACK or a lost connection is retried
after 0.5 s, 1 s, 2 s, ... up to ``mqtt.reconnect_max_s``, with a warning when the link goes down and
an info line when it is back. A broker that stops answering (frozen) is dropped by the keep-alive.

The birth message ``online`` (retained) is published on ``<prefix>/status`` on every connect; the last
will ``offline`` (retained) covers a crash, and ``close`` publishes ``offline`` itself before a clean
disconnect. ``close(deadline)`` gives the thread until ``deadline`` (monotonic) to flush, then counts
what is left as dropped.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from stream.config import MqttConfig, broker_address
from stream.errors import UserError
from stream.integrations.counters import MqttCounters
from stream.logs import mask_secrets

__all__ = ["CONNECT_TIMEOUT_S", "MAX_IN_FLIGHT", "MqttCounters", "MqttLink", "default_client_id"]

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
MAX_IN_FLIGHT = 100
FIRST_BACKOFF_S = 0.5
_LOOP_S = 0.05
_STILL_DOWN_LOG_S = 60.0
_GOODBYE_S = 0.3  # of the close budget, kept for "offline" and a clean disconnect
_JOIN_GRACE_S = 0.2


def default_client_id(prefix: str) -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())
    return f"adaface-stream-{prefix.replace('/', '_')}-{host}"[:128]


class MqttLink:
    """See the module notes. ``start`` once; ``publish``/``retain`` from any thread; ``close`` once."""

    def __init__(
        self, config: MqttConfig, status_topic: str, *, online: str = "online", offline: str = "offline"
    ) -> None:
        """Builds the client (credentials, TLS, last will); ``UserError`` naming the key for TLS files that
        cannot be loaded. Nothing touches the network until ``start``."""
        self._config = config
        self._address = broker_address(config.url)
        self._shown = self._address.shown
        self._status = status_topic
        self._online, self._offline = online, offline
        self._qos = config.qos
        self._client = self._make_client(config)
        self._lock = threading.Lock()
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._states: dict[str, bytes] = {}
        self._dirty: dict[str, None] = {}  # topics whose latest state is not published yet, in order
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        # written by the mqtt thread only (others read them)
        self._connected = False
        self._socket_open = False
        self._ever_connected = False
        self._sent = 0
        self._acked = 0
        self._reconnects = 0
        self._failures = 0
        self._failures_in_row = 0
        self._next_attempt = 0.0
        self._down_since: float | None = None
        self._down_logged = 0.0
        # written by the output thread (publish) and, after the thread ended, by close
        self._dropped = 0

    # ---- any thread ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
            self._thread.start()

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue an event or alert message (not retained); never waits. A full outbox drops its oldest."""
        with self._lock:
            if len(self._outbox) >= self._config.outbox:
                self._outbox.popleft()
                self._dropped += 1
            self._outbox.append((topic, payload))

    def retain(self, topic: str, payload: bytes) -> None:
        """Set a retained state; only the latest payload of a topic is published."""
        with self._lock:
            self._states[topic] = payload
            self._dirty.pop(topic, None)
            self._dirty[topic] = None

    def counters(self) -> MqttCounters:
        with self._lock:
            pending = len(self._outbox)
        return MqttCounters(
            published=self._acked,
            dropped=self._dropped,
            reconnects=self._reconnects,
            connect_failures=self._failures,
            pending=pending,
            connected=self._connected,
        )

    def stop(self, deadline: float) -> None:
        """Ask the thread to flush until ``deadline`` (``time.monotonic()``), say offline and disconnect."""
        self._deadline = deadline
        self._stop.set()

    def close(self, deadline: float) -> None:
        """``stop``, wait for the thread (until ``deadline`` and a little), count what is left as dropped."""
        self.stop(deadline)
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()) + _JOIN_GRACE_S)
            if self._thread.is_alive():
                log.warning("mqtt: the link thread did not finish in time (%s)", self._shown)
        with self._lock:
            left = len(self._outbox)
            self._outbox.clear()
            self._dropped += left
        if left:
            log.warning("mqtt: %d messages not delivered to %s before exit", left, self._shown)

    # ---- the mqtt thread -----------------------------------------------------------------------------

    def _make_client(self, config: MqttConfig) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id or default_client_id(config.topic_prefix),
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_inflight_messages_set(MAX_IN_FLIGHT)
        if self._address.username is not None:
            client.username_pw_set(self._address.username, self._address.password)
        if self._address.tls:
            client.tls_set_context(_tls_context(config))  # insecure: the context skips the host name check
        client.will_set(self._status, self._offline, qos=config.qos, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self._address.host, self._address.port, keepalive=config.keepalive_s)
        return client

    def _run(self) -> None:
        try:
            while not self._finished():
                now = time.monotonic()
                if not self._socket_open:
                    if self._stop.is_set():
                        break
                    if now >= self._next_attempt:
                        self._attempt()
                    else:
                        self._stop.wait(min(_LOOP_S * 2, self._next_attempt - now))
                    continue
                if self._connected:
                    self._pump()
                rc = self._client.loop(timeout=_LOOP_S)
                if rc != paho.MQTT_ERR_SUCCESS and self._socket_open:
                    self._lost(f"network loop: {paho.error_string(rc)}")
        except Exception:  # a bug here must not take the pipeline down: log it, stop publishing
            log.exception("mqtt: the link thread failed")
        finally:
            self._goodbye()

    def _finished(self) -> bool:
        if not self._stop.is_set():
            return False
        if time.monotonic() >= self._deadline - _GOODBYE_S or not self._connected:
            return True
        with self._lock:
            idle = not self._outbox and not self._dirty
        return idle and self._sent == self._acked

    def _attempt(self) -> None:
        try:
            self._client.reconnect()  # TCP (+TLS) connect, bounded by connect_timeout; CONNACK comes in loop()
        except (OSError, ValueError) as exc:  # refused, timed out, unresolvable, TLS handshake
            self._failed(_reason(exc))
            return
        self._socket_open = True

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._failed(f"broker refused the connection: {reason}")
            return
        if self._ever_connected:
            self._reconnects += 1
        if self._down_since is not None or not self._ever_connected:
            log.info("mqtt: connected to %s", self._shown)
        self._ever_connected = True
        self._connected = True
        self._failures_in_row = 0
        self._down_since = None
        if self._qos == 0:
            self._sent = self._acked  # QoS 0 messages lost with the old connection are never acknowledged
        self._client.publish(self._status, self._online, qos=self._qos, retain=True)
        self._sent += 1
        with self._lock:  # a restarted broker may have lost every retained state
            for topic in self._states:
                self._dirty.setdefault(topic, None)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._socket_open or self._connected:
            self._lost(str(reason))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._acked += 1

    def _lost(self, why: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._socket_open = False
        if self._stop.is_set():
            return
        if was_connected:
            self._down_since = time.monotonic()
            self._down_logged = self._down_since
            log.warning(
                "mqtt: connection to %s lost (%s); reconnecting with back-off up to %.0f s",
                self._shown,
                why,
                self._config.reconnect_max_s,
            )
        self._schedule()

    def _failed(self, why: str) -> None:
        self._failures += 1
        self._connected = False
        self._socket_open = False
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._down_logged = now
            log.warning(
                "mqtt: cannot connect to %s (%s); retrying with back-off up to %.0f s, events wait in the outbox",
                self._shown,
                why,
                self._config.reconnect_max_s,
            )
        elif now - self._down_logged >= _STILL_DOWN_LOG_S:
            self._down_logged = now
            log.warning(
                "mqtt: %s still unreachable after %d attempts (%s)", self._shown, self._failures_in_row + 1, why
            )
        else:
            log.debug("mqtt: connect to %s failed (%s)", self._shown, why)
        self._schedule()

    def _schedule(self) -> None:
        delay = min(self._config.reconnect_max_s, FIRST_BACKOFF_S * 2 ** min(self._failures_in_row, 30))
        self._failures_in_row += 1
        self._next_attempt = time.monotonic() + delay

    def _pump(self) -> None:
        """Publish waiting states, then events, while paho holds fewer than MAX_IN_FLIGHT unacknowledged."""
        while self._connected and self._sent - self._acked < MAX_IN_FLIGHT:
            with self._lock:
                if self._dirty:
                    topic = next(iter(self._dirty))
                    del self._dirty[topic]
                    payload, retain = self._states[topic], True
                elif self._outbox:
                    (topic, payload), retain = self._outbox.popleft(), False
                else:
                    return
            try:
                self._client.publish(topic, payload, qos=self._qos, retain=retain)
            except ValueError as exc:  # a topic or payload paho refuses: nothing to retry
                log.warning("mqtt: cannot publish on %s: %s", topic, exc)
                continue
            self._sent += 1  # NO_CONN: paho keeps it and sends it after the reconnect

    def _goodbye(self) -> None:
        """Say offline (retained) and disconnect cleanly, within the deadline."""
        try:
            if self._connected:
                end = max(self._deadline, time.monotonic() + _GOODBYE_S)  # the last _GOODBYE_S is for this
                self._client.publish(self._status, self._offline, qos=self._qos, retain=True)
                self._sent += 1
                while self._connected and self._sent != self._acked and time.monotonic() < end:
                    self._client.loop(timeout=_LOOP_S)
                self._client.disconnect()
                while self._client.socket() is not None and time.monotonic() < end:
                    self._client.loop(timeout=_LOOP_S)
        except Exception as exc:  # closing must not raise
            log.debug("mqtt: disconnect failed: %s", exc)
        finally:
            self._connected = False


def _tls_context(config: MqttConfig) -> ssl.SSLContext:
    tls = config.tls
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(f"mqtt.tls.ca_file: cannot load {tls.ca_file if tls else ''}: {_reason(exc)}") from None
    if tls is not None and tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise UserError(
                f"mqtt.tls.cert_file: cannot load {tls.cert_file} with {tls.key_file}: {_reason(exc)}"
            ) from None
    if tls is not None and tls.insecure:
        context.check_hostname = False
    return context


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return mask_secrets(str(text).splitlines()[0])
