"""``scripts/predict --watch``: the command line of the inspection service.

Usage errors (a malformed --url or --mqtt, a missing folder or file, a bad threshold) print
one line naming the option and exit 2; a model that cannot be used, or a broker that refuses
the credentials, exits 1 (systemd's Restart=always tries again). A broker that is merely
unreachable is not an error: results wait in the outbox.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import socket
import ssl
import sys
import threading
from pathlib import Path

from cli_values import gateway_url, model_name, port, positive_int, positive_number, probability

from manifests import shadow_prefix  # noqa: E402  (the charm's route; inspection/__init__ puts it on the path)

from .broker import BrokerURL
from .drop_folder import DropFolder
from .folders import Folders
from .message import DEFECT_THRESHOLD, UNCERTAIN_BAND, Band
from .model_client import ModelClient, StartupError
from .outbox import Outbox
from .publisher import Credentials, Publisher, TlsFiles
from .service import BrokerRefused, Service, Settings
from .shadow import Metrics, Shadow
from .shadow_record import default_record_dir

PREDICT_PATH = "api/v0.1/predictions"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="predict --watch",
        description="Inspect each photo dropped in a folder and publish its result to MQTT (store and forward).",
    )
    p.add_argument("--watch", type=Path, required=True, metavar="DIR", help="the camera's drop folder")
    p.add_argument(
        "--url", type=gateway_url, default="http://127.0.0.1:31380", help="the gateway (default: the local site)"
    )
    p.add_argument("--model", type=model_name, default="scratch", help="the model's name: /model/<name>/")
    p.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://host:1883/topic or mqtts://host:8883/topic")
    p.add_argument("--mqtt-user", metavar="USER")
    p.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help="a file holding the password (one line)")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA bundle for mqtts:// (default: the system's)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")
    p.add_argument("--outbox", type=Path, metavar="DIR", help="results waiting for the broker (default: DIR/.outbox)")
    p.add_argument("--outbox-max-mb", type=positive_number, default=256.0, help="size bound; the oldest go first (256)")
    p.add_argument("--outbox-max-hours", type=positive_number, default=168.0, help="age bound (168 = 7 days)")
    p.add_argument("--done", type=Path, metavar="DIR", help="inspected photos (default: DIR/done)")
    p.add_argument("--failed", type=Path, metavar="DIR", help="photos the model refused + reason (default: DIR/failed)")
    p.add_argument("--relabel", type=Path, metavar="DIR", help="copies of uncertain or empty photos + the answer")
    p.add_argument(
        "--threshold",
        type=probability,
        default=DEFECT_THRESHOLD,
        help=f"defect = any detection at or above it ({DEFECT_THRESHOLD:g}: the served threshold)",
    )
    p.add_argument(
        "--uncertain",
        default=UNCERTAIN_BAND,
        metavar="LOW-HIGH",
        help=f"relabel band of the best confidence ({UNCERTAIN_BAND})",
    )
    p.add_argument("--timeout", type=positive_number, default=30.0, help="seconds per model request (30)")
    p.add_argument("--attempts", type=positive_int, default=5, help="tries when the model fails on a photo (5)")
    p.add_argument("--poll", type=positive_number, default=0.5, help="seconds between scans of the drop folder (0.5)")
    p.add_argument(
        "--shadow",
        nargs="?",
        const=True,  # a bare --shadow: the charm's route (argparse passes only a string const through type)
        type=_predictions_url,
        metavar="URL",
        help="also send each inspected photo to a shadow model, which decides nothing, and record how it compares "
        f"(default URL: <--url>{shadow_prefix('<--model>')}{PREDICT_PATH})",
    )
    p.add_argument(
        "--shadow-record",
        type=Path,
        metavar="DIR",
        help="the comparison record and pending shadow work "
        "(default: $XDG_STATE_HOME/defect-inspection/shadow/<model>)",
    )
    p.add_argument("--metrics-port", type=port, metavar="PORT", help="serve the shadow's Prometheus metrics here")
    return p


def _predictions_url(text: str) -> str:
    """A model's predictions endpoint, by the rule evaluate's --url uses (one place: endpoint.check_url)."""
    from models.training.endpoint import endpoint_url

    return endpoint_url(text)


class Usage(Exception):
    """A bad command line: printed as ``predict: <message>``, exit 2."""


def _readable(path: Path | None, option: str) -> None:
    if path is not None and not path.is_file():
        raise Usage(f"{option} {path}: no such file")


def _password(path: Path) -> str:
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise Usage(f"--mqtt-password-file {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise Usage(f"--mqtt-password-file {path}: not a text file") from None


def tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """The client's TLS context; a CA, certificate or key that does not load is named here, not
    raised from paho's thread later."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise Usage(f"--tls-ca {tls.ca}: not a readable PEM CA bundle ({_ssl_reason(exc)})") from None
    if tls.cert:
        try:
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        except (OSError, ssl.SSLError) as exc:
            raise Usage(
                f"--tls-cert {tls.cert} / --tls-key {tls.key}: not a PEM certificate and its key ({_ssl_reason(exc)})"
            ) from None
    return ctx


def _ssl_reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def validate(args: argparse.Namespace) -> tuple[BrokerURL, Credentials, TlsFiles, Band]:
    """What argparse's types cannot see alone: the folder, the files and how options combine."""
    try:
        broker = BrokerURL.parse(args.mqtt)
        band = Band.parse(args.uncertain)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if not args.watch.is_dir():
        raise Usage(f"--watch {args.watch}: no such folder")
    for path, option in (
        (args.mqtt_password_file, "--mqtt-password-file"),
        (args.tls_ca, "--tls-ca"),
        (args.tls_cert, "--tls-cert"),
        (args.tls_key, "--tls-key"),
    ):
        _readable(path, option)
    if args.mqtt_password_file and not args.mqtt_user:
        raise Usage("--mqtt-password-file needs --mqtt-user")
    if (args.tls_ca or args.tls_cert) and not broker.tls:
        raise Usage(f"--tls-* options need an mqtts:// broker URL, not {args.mqtt!r}")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise Usage("--tls-cert and --tls-key go together")
    if args.shadow is None and (args.shadow_record or args.metrics_port):
        raise Usage(f"{'--shadow-record' if args.shadow_record else '--metrics-port'} needs --shadow")
    password = _password(args.mqtt_password_file) if args.mqtt_password_file else None
    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key)
    if broker.tls:
        tls_context(tls)
    return broker, Credentials(args.mqtt_user, password), tls, band


def _make_folder(folder: Path | None, option: str) -> None:
    """The folder exists (made if need be) and takes a file: the world refusing is exit 1."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".predict-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(f"{option} {folder}: cannot write there ({exc.strerror or exc})") from None


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
        ctx = tls_context(tls)
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
    folders = Folders(args.done or args.watch / "done", args.failed or args.watch / "failed", args.relabel)
    outbox_dir = args.outbox or args.watch / ".outbox"
    record_dir = (args.shadow_record or default_record_dir(args.model)) if args.shadow is not None else None
    try:  # the local folders first: a folder we cannot write is named before any network check
        for folder, option in ((folders.done, "--done"), (folders.failed, "--failed"), (folders.relabel, "--relabel")):
            _make_folder(folder, option)
        _make_folder(outbox_dir, "--outbox")
        _make_folder(record_dir, "--shadow-record")
        outbox = Outbox(outbox_dir, int(args.outbox_max_mb * 1024 * 1024), args.outbox_max_hours * 3600, log)
        # The shadow's summaries: an outbox of their own (a subfolder the results' outbox never lists),
        # the same bounds, published to <topic>/shadow.
        shadow_outbox = (
            Outbox(outbox_dir / "shadow", int(args.outbox_max_mb * 1024 * 1024), args.outbox_max_hours * 3600, log)
            if record_dir
            else None
        )
    except StartupError as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"predict: --outbox {outbox_dir}: cannot use it ({exc.strerror or exc})", file=sys.stderr)
        return 1
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
    publisher = Publisher(broker, outbox, log, credentials, tls)
    shadow = shadow_publisher = None
    if record_dir is not None and shadow_outbox is not None:
        shadow_url = (
            args.shadow if isinstance(args.shadow, str) else f"{args.url}{shadow_prefix(args.model)}{PREDICT_PATH}"
        )
        shadow_broker = dataclasses.replace(broker, topic=f"{broker.topic}/shadow")
        shadow_publisher = Publisher(shadow_broker, shadow_outbox, lambda t: log(f"shadow {t}"), credentials, tls)
        metrics = Metrics()
        if args.metrics_port:
            try:
                metrics.serve(args.metrics_port)
            except OSError as exc:
                print(f"predict: --metrics-port {args.metrics_port}: cannot listen ({exc.strerror or exc})",
                      file=sys.stderr)  # fmt: skip
                return 1
        shadow = Shadow(
            shadow_url, record_dir, args.threshold, args.timeout, folders, shadow_outbox, shadow_publisher.wake,
            log, metrics,
        )  # fmt: skip
        log(f"shadow: {shadow_url} sees every inspected photo and decides nothing; record {record_dir}, "
            f"summaries to {shadow_broker}")  # fmt: skip
    settings = Settings(args.model, args.threshold, band, args.poll)
    service = Service(settings, DropFolder(args.watch), model, outbox, publisher, folders, sys.stdout, log, shadow)
    log(
        f"watching {args.watch} -> {args.url}/model/{args.model}/ -> {broker}; outbox {outbox.folder} "
        f"({len(outbox)} waiting; bounds {args.outbox_max_mb:g} MB and {args.outbox_max_hours:g} h, "
        "oldest dropped first)"
    )
    publisher.start()
    if shadow is not None and shadow_publisher is not None:
        shadow_publisher.start()
        shadow.start()
    try:
        service.run(stopping)
    except BrokerRefused as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.stop()
        if shadow is not None and shadow_publisher is not None:
            shadow.stop()
            shadow_publisher.stop()
        log(f"stopped: {service.counters.line(publisher, outbox)}")
    return 0
