"""``scripts/predict --watch``: the command line of the inspection service.

Usage errors (a malformed --url or --mqtt, a missing folder or file, a bad threshold) print
one line naming the option and exit 2; a model that cannot be used, or a broker that refuses
the credentials, exits 1 (systemd's Restart=always tries again). A broker that is merely
unreachable is not an error: results wait in the outbox.
"""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

from .broker import BrokerURL
from .drop_folder import DropFolder
from .folders import Folders
from .message import DEFECT_THRESHOLD, UNCERTAIN_BAND, Band
from .model_client import ModelClient, StartupError, check_url
from .outbox import Outbox
from .publisher import Credentials, Publisher, TlsFiles
from .service import BrokerRefused, Service, Settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict --watch",
        description="Inspect each photo dropped in a folder and publish its result to MQTT (store and forward).",
    )
    p.add_argument("--watch", type=Path, required=True, metavar="DIR", help="the camera's drop folder")
    p.add_argument("--url", default="http://127.0.0.1:31380", help="the gateway (default: the local site)")
    p.add_argument("--model", default="scratch", help="the model's name: /model/<name>/")
    p.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://host:1883/topic or mqtts://host:8883/topic")
    p.add_argument("--mqtt-user", metavar="USER")
    p.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help="a file holding the password (one line)")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA bundle for mqtts:// (default: the system's)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")
    p.add_argument("--outbox", type=Path, metavar="DIR", help="results waiting for the broker (default: DIR/.outbox)")
    p.add_argument("--outbox-max-mb", type=float, default=256.0, help="size bound; the oldest go first (256)")
    p.add_argument("--outbox-max-hours", type=float, default=168.0, help="age bound (168 = 7 days)")
    p.add_argument("--done", type=Path, metavar="DIR", help="inspected photos (default: DIR/done)")
    p.add_argument("--failed", type=Path, metavar="DIR", help="photos the model refused + reason (default: DIR/failed)")
    p.add_argument("--relabel", type=Path, metavar="DIR", help="copies of uncertain or empty photos + the answer")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFECT_THRESHOLD,
        help=f"defect = any detection at or above it ({DEFECT_THRESHOLD:g}: the served threshold)",
    )
    p.add_argument(
        "--uncertain",
        default=UNCERTAIN_BAND,
        metavar="LOW-HIGH",
        help=f"relabel band of the best confidence ({UNCERTAIN_BAND})",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per model request (30)")
    p.add_argument("--attempts", type=int, default=5, help="tries when the model fails on a photo (5)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between scans of the drop folder (0.5)")
    return p


class Usage(Exception):
    """A bad command line: printed as ``predict: <message>``, exit 2."""


def _readable(path: Path | None, option: str) -> None:
    if path is not None and not path.is_file():
        raise Usage(f"{option} {path}: no such file")


def validate(args: argparse.Namespace) -> tuple[BrokerURL, Credentials, TlsFiles, Band]:
    try:
        args.url = check_url(args.url)
        broker = BrokerURL.parse(args.mqtt)
        band = Band.parse(args.uncertain)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if not args.watch.is_dir():
        raise Usage(f"--watch {args.watch}: no such folder")
    if not 0.0 < args.threshold <= 1.0:
        raise Usage(f"--threshold {args.threshold}: must be in (0, 1]")
    if args.outbox_max_mb <= 0 or args.outbox_max_hours <= 0:
        raise Usage("--outbox-max-mb and --outbox-max-hours must be positive")
    if args.attempts < 1 or args.timeout <= 0 or args.poll <= 0:
        raise Usage("--attempts must be >= 1, --timeout and --poll positive")
    for path, option in ((args.mqtt_password_file, "--mqtt-password-file"), (args.tls_ca, "--tls-ca")):
        _readable(path, option)
    _readable(args.tls_cert, "--tls-cert")
    _readable(args.tls_key, "--tls-key")
    if args.mqtt_password_file and not args.mqtt_user:
        raise Usage("--mqtt-password-file needs --mqtt-user")
    if (args.tls_ca or args.tls_cert) and not broker.tls:
        raise Usage(f"--tls-* options need an mqtts:// broker URL, not {args.mqtt!r}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise Usage("--tls-cert and --tls-key go together")
    password = None
    if args.mqtt_password_file:
        password = args.mqtt_password_file.read_text().rstrip("\r\n")
    return broker, Credentials(args.mqtt_user, password), TlsFiles(args.tls_ca, args.tls_cert, args.tls_key), band


def check_broker(broker: BrokerURL, tls: TlsFiles, log) -> None:
    """Say now what paho's retries would only show as silence; only a certificate problem is fatal."""
    try:
        sock = socket.create_connection((broker.host, broker.port), timeout=5)
    except socket.gaierror as exc:
        log(f"mqtt: broker host {broker.host!r} cannot be resolved now ({exc.strerror}); results wait in the outbox")
        return
    except OSError as exc:
        log(f"mqtt: broker {broker.host}:{broker.port} not reachable now ({exc.strerror or exc}); results wait")
        return
    with sock:
        if not broker.tls:
            return
        ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
        if tls.cert:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        try:
            ctx.wrap_socket(sock, server_hostname=broker.host).close()
        except ssl.SSLCertVerificationError as exc:
            raise StartupError(
                f"mqtts://{broker.host}:{broker.port}: certificate not trusted: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            raise StartupError(f"mqtts://{broker.host}:{broker.port}: TLS handshake failed: {exc.reason}") from None


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        broker, credentials, tls, band = validate(args)
    except Usage as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    model = ModelClient(args.url, args.model, args.timeout, args.attempts, log, stopping)
    try:
        model.check()
        check_broker(broker, tls, log)
    except StartupError as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 1
    outbox = Outbox(
        args.outbox or args.watch / ".outbox", int(args.outbox_max_mb * 1024 * 1024), args.outbox_max_hours * 3600, log
    )
    folders = Folders(args.done or args.watch / "done", args.failed or args.watch / "failed", args.relabel)
    folders.create()
    publisher = Publisher(broker, outbox, log, credentials, tls)
    settings = Settings(args.model, args.threshold, band, args.poll)
    service = Service(settings, DropFolder(args.watch), model, outbox, publisher, folders, sys.stdout, log)
    log(
        f"watching {args.watch} -> {args.url}/model/{args.model}/ -> {broker}; outbox {outbox.folder} "
        f"({len(outbox)} waiting; bounds {args.outbox_max_mb:g} MB and {args.outbox_max_hours:g} h, "
        "oldest dropped first)"
    )
    publisher.start()
    try:
        service.run(stopping)
    except BrokerRefused as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.stop()
        log(f"stopped: {service.counters.line(publisher, outbox)}")
    return 0
