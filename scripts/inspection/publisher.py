"""Send the outbox to the broker in order, QoS 1; a result leaves the outbox only on its PUBACK.

paho-mqtt does the protocol and the reconnecting (``loop_start`` retries the first connection
too, with ``reconnect_delay_set`` backoff) and, after a reconnect, re-sends every QoS 1 message
still waiting for its PUBACK, in order (paho-mqtt 2.1.0, paho/mqtt/client.py:
``Client._messages_reconnect_reset_out``, and ``_thread_main`` for the first connection).
This thread only keeps up to ``window`` results in flight and deletes each one's file when
paho reports its PUBACK. A crash between the PUBACK and the delete means the result is sent again
after the restart: at least once, with the same ``result_id``, which the line de-duplicates.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from .broker import BrokerURL
from .outbox import Entry, Outbox

# CONNACK refusals that no reconnect will fix (paho's names, MQTT 3.1.1 codes 1, 2, 4, 5).
FATAL_CONNACK = {"Unsupported protocol version", "Client identifier not valid", "Bad user name or password"}
FATAL_CONNACK |= {"Not authorized"}


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class TlsFiles:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class Publisher:
    def __init__(
        self,
        broker: BrokerURL,
        outbox: Outbox,
        log: Callable[[str], None],
        credentials: Credentials = Credentials(),
        tls: TlsFiles | None = None,
        window: int = 20,
    ) -> None:
        self.broker, self.outbox, self.log, self.window = broker, outbox, log, window
        self.credentials = credentials
        self.published = 0
        self.fatal: str | None = None
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: dict[int, Entry] = {}
        self._connected = False
        self._backlog = False
        self._last_failure_log: float | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, clean_session=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.max_inflight_messages_set(window)
        if credentials.user is not None:
            self.client.username_pw_set(credentials.user, credentials.password)
        if broker.tls:
            tls = tls or TlsFiles()
            self.client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_publish = self._on_publish
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=15)
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def wake(self) -> None:
        """A new result is in the outbox."""
        self._wake.set()

    # --- the sending thread ---------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)  # the timeout also applies the outbox's age bound
            self._wake.clear()
            self._take_acks()
            if self._connected:
                self._send_more()

    def _take_acks(self) -> None:
        acked = 0
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                self.published += 1
                self.outbox.remove(entry)
                acked += 1
        if acked and self._backlog and len(self.outbox) == 0:
            self._backlog = False
            self.log(f"mqtt: outbox empty: every waiting result was acknowledged ({self.published} published)")

    def _send_more(self) -> None:
        busy = {e.result_id for e in self._inflight.values()}
        for entry in self.outbox.pending():
            if len(self._inflight) >= self.window:
                return
            if entry.result_id in busy:
                continue
            try:
                payload = entry.payload()
            except FileNotFoundError:
                continue  # dropped by the outbox's bounds meanwhile
            info = self.client.publish(self.broker.topic, payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self.log(f"mqtt: publish of {entry.result_id} refused by paho ({mqtt.error_string(info.rc)})")
                return
            self._inflight[info.mid] = entry  # NO_CONN: paho keeps it and sends it on reconnect

    # --- paho's callbacks (its network thread: no blocking, no outbox I/O) --------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            text = str(reason_code)
            if text in FATAL_CONNACK:
                who = f"user {self.credentials.user!r}" if self.credentials.user is not None else "no user"
                self.fatal = f"broker {self.broker.host}:{self.broker.port} refused the connection ({who}): {text}"
                client.disconnect()
            else:
                self.log(f"mqtt: broker refused the connection ({text}); retrying")
            self._wake.set()
            return
        self._connected = True
        self._last_failure_log = None
        self._backlog = len(self.outbox) > 0
        self.log(f"mqtt: connected to {self.broker}; {len(self.outbox)} result(s) waiting in the outbox")
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected:
            self.log(
                f"mqtt: lost the broker ({reason_code}); results wait in the outbox "
                f"({len(self.outbox)} now) and paho reconnects"
            )
        self._connected = False

    def _on_connect_fail(self, client, userdata) -> None:
        now = time.monotonic()
        if self._last_failure_log is None or now - self._last_failure_log >= 60:
            self._last_failure_log = now
            self.log(
                f"mqtt: cannot reach the broker at {self.broker.host}:{self.broker.port}; results wait in the "
                f"outbox ({len(self.outbox)} now) and paho keeps retrying"
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put(mid)
        self._wake.set()
