"""Values that the site's command lines take, each parsed in one place.

Every command that takes a gateway URL, a model name, a port or a number of seconds uses
these (scripts/predict one-shot and --watch, roll-model, local-site, evaluate), so a value
is refused the same way everywhere: one line naming the argument and what is wrong, exit 2,
before anything is started. They are argparse ``type=`` functions; argparse prints
``<prog>: error: argument --url: <why>``. Code that checks a value outside argparse catches
``ArgumentTypeError``. Standard library only: the one-shot ``scripts/predict`` runs on a
bare Python 3.
"""

from __future__ import annotations

import ipaddress
import math
import re
from argparse import ArgumentTypeError
from pathlib import Path
from urllib.parse import urlsplit

# The charm's model-name rule (charms/onnx-model/src/model_config.py): a DNS label of at most
# 40 characters, because it is the URL segment /model/<name>/ and Seldon derives names from it.
MODEL_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MODEL_NAME_MAX = 40
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG: what the model server decodes
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.fullmatch(host) is not None


def gateway_url(text: str) -> str:
    """``http(s)://host[:port][/prefix]``, returned without a trailing slash.

    urllib accepts what no connection can use (port 99999 raises only when read, ``[::1``
    raises from urlsplit, a host with spaces or non-ASCII fails at connect time deep in
    http.client): all of it is refused here, with the reason.
    """
    shown = repr(text) if len(text) <= 80 else repr(text[:77] + "...")
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise ArgumentTypeError(f"{shown}: expected http(s)://host:port, without spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # "Port out of range 0-65535", "Invalid IPv6 URL", a port that is no number
        raise ArgumentTypeError(f"{shown}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ArgumentTypeError(f"{shown}: expected http(s)://host:port (the gateway)")
    if not parts.hostname or not _host_ok(parts.hostname):
        raise ArgumentTypeError(f"{shown}: no usable host name (letters, digits, '-' and '.', or an IP address)")
    if port == 0:
        raise ArgumentTypeError(f"{shown}: port 0 is not a port anything listens on")
    if parts.username is not None or parts.query or parts.fragment:
        raise ArgumentTypeError(f"{shown}: no user, ?query or #fragment: http(s)://host:port[/prefix]")
    return text.rstrip("/")


def host(text: str) -> str:
    """An address to listen on or connect to: an IP address or a host name."""
    if not _host_ok(text):
        raise ArgumentTypeError(f"{text[:60]!r}: not an IP address or a host name")
    return text


def model_name(text: str) -> str:
    """The segment of /model/<name>/: the charm's model-name rule."""
    if len(text) > MODEL_NAME_MAX or not MODEL_NAME.fullmatch(text):
        raise ArgumentTypeError(
            f"{text[:60]!r}: a model name is lowercase letters, digits and '-', 1-{MODEL_NAME_MAX} characters"
        )
    return text


def _number(text: str, kind=float) -> float:
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        raise ArgumentTypeError(f"{text[:40]!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise ArgumentTypeError(f"{text[:40]!r}: must be a finite number")
    return value


def positive_number(text: str) -> float:
    """Seconds, megabytes, hours: finite and above zero (NaN compares false to every bound)."""
    value = _number(text)
    if value <= 0:
        raise ArgumentTypeError(f"{text[:40]!r}: must be above 0")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise ArgumentTypeError(f"{text[:40]!r}: must be 1 or more")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise ArgumentTypeError(f"{text[:40]!r}: must be 0 or more")
    return value


def probability(text: str) -> float:
    """A confidence or IoU threshold: in (0, 1]."""
    value = _number(text)
    if not 0 < value <= 1:
        raise ArgumentTypeError(f"{text[:40]!r}: must be above 0 and at most 1")
    return value


def chance(text: str) -> float:
    """An augmentation's probability: 0 (never) to 1 (always)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise ArgumentTypeError(f"{text[:40]!r}: a chance from 0 (never) to 1 (always)")
    return value


def zoom_range(text: str) -> float:
    """An augmentation's zoom range r (each photo scaled by a random factor in 1 +/- r): 0 to below 1.

    At 1 or more the factor could reach 0: a photo shrunk to nothing.
    """
    value = _number(text)
    if not 0 <= value < 1:
        raise ArgumentTypeError(f"{text[:40]!r}: a zoom range from 0 (photos at their own scale) to below 1")
    return value


def learning_rate(text: str) -> float:
    """An optimiser's initial learning rate: above 0, at most 0.1.

    Past 0.1 neither SGD (ultralytics' 0.01) nor AdamW (0.001-0.002) trains: the weights diverge.
    """
    value = _number(text)
    if not 0 < value <= 0.1:
        raise ArgumentTypeError(f"{text[:40]!r}: a learning rate above 0 and at most 0.1 (AdamW's is about 0.001)")
    return value


def port(text: str) -> int:
    value = int(_number(text, int))
    if not 1 <= value <= 65535:
        raise ArgumentTypeError(f"{text[:40]!r}: a TCP port is 1-65535")
    return value


def image_file(text: str) -> Path:
    """A photo to send: readable, and a JPEG or PNG by its first bytes (checked before anything
    is started or sent, so a wrong path is not a container start or a roll later)."""
    path = Path(text)
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ArgumentTypeError(f"{text[:80]!r}: cannot read it ({exc.strerror})") from None
    if not head.startswith(IMAGE_MAGIC):
        raise ArgumentTypeError(f"{text[:80]!r}: not a JPEG or PNG")
    return path
