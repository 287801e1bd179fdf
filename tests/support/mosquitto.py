"""A real Mosquitto broker (Debian package ``mosquitto``) on a free loopback port, and a subscriber.

Each broker gets its own folder: config, persistence file (so a restart keeps the sessions and
queued QoS 1 messages of persistent subscribers, as a production broker does) and log.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from .server_process import free_port


def require_mosquitto() -> str:
    """tox -e e2e installs it as root (scripts/host-packages); elsewhere a missing broker skips, naming it."""
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed: tox -e e2e (scripts/host-packages) should have installed it")
        pytest.skip("needs the Debian package mosquitto (apt-get install mosquitto)")
    return path


@dataclass
class Mosquitto:
    folder: Path
    users: dict[str, str] | None = None  # None: anonymous allowed
    tls: Pki | None = None  # a TLS listener that also requires a client certificate
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> Mosquitto:
        binary = require_mosquitto()
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = [
            f"listener {self.port} 127.0.0.1",
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",  # as root it would switch to "mosquitto"
            "persistence true",
            f"persistence_location {self.folder}/",
            f"log_dest file {self.folder / 'mosquitto.log'}",
        ]
        if self.tls is not None:
            conf += [
                f"cafile {self.tls.ca}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
            ]
        if self.users is None:
            conf.append("allow_anonymous true")
        else:
            passwd = self.folder / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
            passwd.chmod(0o600)
            conf += ["allow_anonymous false", f"password_file {passwd}"]
        (self.folder / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.folder / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"mosquitto not listening on {self.port} after {timeout}s")

    def stop(self) -> None:
        """SIGTERM, as systemd stops it: it saves its persistence file and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def url(self, topic: str) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}/{topic}"


@dataclass
class Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI)."""

    folder: Path

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self.folder / "ca.pem", self.folder / "ca.key"
        self._openssl("req", "-x509", "-keyout", self.ca_key, "-out", self.ca, "-days", "1", "-subj", "/CN=test-ca")
        self.server_cert, self.server_key = self._signed("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1")
        self.client_cert, self.client_key = self._signed("client", "line-3", "extendedKeyUsage=clientAuth")

    def _signed(self, name: str, cn: str, ext: str) -> tuple[Path, Path]:
        key, csr, cert = (self.folder / f"{name}.{s}" for s in ("key", "csr", "pem"))
        (self.folder / f"{name}.ext").write_text(ext + "\n")
        self._openssl("req", "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        subprocess.run(
            ["openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
             "-out", cert, "-days", "1", "-extfile", self.folder / f"{name}.ext"],
            check=True, capture_output=True,
        )  # fmt: skip
        return cert, key

    @staticmethod
    def _openssl(cmd: str, *args) -> None:
        subprocess.run(
            ["openssl", cmd, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", *map(str, args)],
            check=True, capture_output=True,
        )  # fmt: skip


class Subscriber:
    """The line's controller: a persistent QoS 1 session, reconnecting by itself (paho)."""

    def __init__(
        self,
        port: int,
        topic: str,
        client_id: str,
        user: str | None = None,
        password: str | None = None,
        tls: Pki | None = None,
    ):
        self.messages: list[dict] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if user:
            self.client.username_pw_set(user, password)
        if tls:
            self.client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = lambda c, u, msg: self.messages.append(json.loads(msg.payload))
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            self.stop()
            raise TimeoutError("subscriber: no SUBACK from the broker")

    def unique(self) -> list[dict]:
        """What the line keeps after dropping duplicates by result_id, in arrival order."""
        seen: dict[str, dict] = {}
        for m in list(self.messages):
            seen.setdefault(m["result_id"], m)
        return list(seen.values())

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
