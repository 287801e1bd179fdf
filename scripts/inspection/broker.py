"""The broker address from ``--mqtt mqtt://host:1883/topic`` (``mqtts://`` for TLS, port 8883)."""

from __future__ import annotations

from argparse import ArgumentTypeError
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cli_values import host

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class BrokerURL:
    host: str
    port: int
    topic: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Raise ValueError naming what is wrong: the CLI prints it and exits 2."""
        if "#" in url or "+" in url:  # "#" would otherwise parse as a URL fragment
            raise ValueError(f"--mqtt {url!r}: a topic wildcard (+ or #) can only be subscribed to, not published")
        try:
            parsed = urlsplit(url)
        except ValueError as exc:  # "Invalid IPv6 URL"
            raise ValueError(f"--mqtt {url!r}: {exc}") from None
        if parsed.scheme not in DEFAULT_PORTS:
            raise ValueError(f"--mqtt {url!r}: expected mqtt://host:1883/topic or mqtts://host:8883/topic")
        try:
            host(parsed.hostname or "")
        except ArgumentTypeError:
            raise ValueError(f"--mqtt {url!r}: no usable broker host (a host name or an IP address)") from None
        if parsed.username or parsed.password:
            raise ValueError(f"--mqtt {url!r}: give credentials with --mqtt-user/--mqtt-password-file, not in the URL")
        try:
            port = parsed.port if parsed.port is not None else DEFAULT_PORTS[parsed.scheme]
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise ValueError(f"--mqtt {url!r}: the port must be a number 1-65535")
        topic = unquote(parsed.path.lstrip("/"))
        if not topic:
            raise ValueError(f"--mqtt {url!r}: no topic (mqtt://host:1883/<topic>)")
        if parsed.query:
            raise ValueError(f"--mqtt {url!r}: unexpected ?query")
        return cls(parsed.hostname, port, topic, parsed.scheme == "mqtts")

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"
