"""Bring a fresh Ubuntu host to a serving edge site, one checked step at a time.

Each step first checks whether it is already done (then it says so and
changes nothing); otherwise it acts, then checks again. A step that fails
stops the run with the command, its output and what to do.

Runs as root (sudo: snaps, apt, MicroK8s); the Juju steps run as the user who called sudo
($SUDO_USER), because Juju keeps its controllers in that user's ~/.local/share/juju: so that
user's own `juju status` sees the site afterwards.

How Juju reaches MicroK8s. Juju 3.6's built-in `microk8s` cloud only reads the credentials
that *strictly confined* MicroK8s shares with the juju snap (juju/juju 3.6,
caas/kubernetes/provider/builtin.go: "can only work with strictly confined microk8s";
canonical/bundle-kubeflow#830), so `juju bootstrap microk8s` fails on classic MicroK8s. We keep
classic MicroK8s 1.28, which the Charmed Kubeflow 1.8 set (our bundle's channels) is installed
on, and register it the way the Charmed Kubeflow 1.8 install guide does:
`microk8s config | juju add-k8s <cloud> --client`, then `juju bootstrap <cloud>`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import airgap, server_image, snaps
from .overlays import first_problem
from .shell import REGISTRY, ROOT, StepFailed, run, succeeds
from .stage import STAGE_DIR, Stage, plan

CHARM_DIR = ROOT / "charms" / "onnx-model"
CHARM_SOURCES = ("charmcraft.yaml", "requirements.txt", "src")  # what the packed charm is made of
CHARM = ROOT / "build" / "onnx-model.charm"
SERVER_ARCHIVE = ROOT / "build" / "defect-server.tar"
CLOUD = CONTROLLER = "edge-microk8s"
MODEL = "kubeflow"  # the gateway lives in this namespace: the bundle requires this name
# Classic MicroK8s' group (canonical/microk8s 1.28, microk8s-resources/actions/common/utils.sh,
# get_microk8s_group: "snap_microk8s" only when strictly confined); its configure hook creates it.
MICROK8S_GROUP = "microk8s"
BUILDERS = ("buildah", "podman", "docker")  # any of them builds the server image
# The Charmhub charms are published for amd64 only: their charmcraft.yaml (track/1.17) name no
# architectures, and istio-pilot bundles istioctl-1.17.3-linux-amd64 (canonical/istio-operators,
# track/1.17, charms/istio-pilot/charmcraft.yaml).
SITE_ARCHES = ("x86_64", "amd64")
# The Juju controller's MongoDB: on Kubernetes bootstrap writes mongod's arguments into the
# controller pod, and only the "low" profile adds --wiredTigerCacheSizeGB=mongo.LowCacheSize
# (juju/juju caas/kubernetes/provider/bootstrap.go controllerContainers, read at 001c63e7; the 3.6
# branch is too large to fetch here, main's internal/provider/kubernetes/bootstrap.go dropped it);
# the default profile leaves MongoDB's own cache size, the larger of 50% of (RAM - 1 GB) and 256 MB.
MONGO_PROFILE = "mongo-memory-profile=low"
# A pod's default service account, which may read no secrets once the API server authorizes with
# RBAC; under MicroK8s 1.28's default --authorization-mode=AlwaysAllow (canonical/microk8s 1.28
# microk8s-resources/default-args/kube-apiserver) everyone may. `microk8s enable rbac` sets
# RBAC,Node and restarts the API server (canonical/microk8s-core-addons 1.28 addons/rbac/enable).
# `kubectl auth can-i` prints yes/no (k8s.io/kubectl v0.28 pkg/cmd/auth/cani.go).
RBAC_PROBE = ("auth", "can-i", "list", "secrets", "--all-namespaces", "--as=system:serviceaccount:default:default")


@dataclass
class Step:
    name: str
    done: Callable[[], bool]
    act: Callable[[], None]
    hint: str


def host_base(os_release: Path) -> str:
    """ubuntu@24.04 from /etc/os-release, as charmcraft.yaml writes a base."""
    fields = dict(
        line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    return f"{fields.get('ID', '').strip(chr(34))}@{fields.get('VERSION_ID', '').strip(chr(34))}"


def charm_base() -> str:
    return yaml.safe_load((CHARM_DIR / "charmcraft.yaml").read_text())["base"]


def preflight(euid: int, machine: str) -> str | None:
    """Why this host cannot run bootstrap at all, or None."""
    if euid != 0:
        return "run it with sudo: it installs snaps and packages (the Juju steps run as you)"
    if machine not in SITE_ARCHES:
        return (
            f"this host is {machine}; the site runs on amd64 only: istio-pilot, istio-gateway and "
            "seldon-core 1.17 from Charmhub are published for amd64 only (istio-pilot ships an amd64 istioctl)"
        )
    return None


class Bootstrap:
    """The steps from a fresh host to a serving site.

    ``airgap``: a folder from ``airgap-images export``; ``user``: who runs the Juju client;
    ``server_archive``: a prebuilt server image (docker-archive) instead of building it here.
    """

    def __init__(
        self,
        overlays: list[Path],
        airgap: Path | None = None,
        say=print,
        charm: Path = CHARM,
        user: str = "root",
        os_release: Path = Path("/etc/os-release"),
        server_archive: Path | None = None,
        builder_path: str | None = None,
        refresh_snaps: bool = False,
    ) -> None:
        self.airgap, self.say, self.charm, self.user = airgap, say, charm, user
        self.os_release, self.server_archive, self.builder_path = os_release, server_archive, builder_path
        self.refresh_snaps = refresh_snaps
        self.overlays = list(overlays)
        if airgap is not None:  # Charmhub images from the registry, charms from the folder
            for extra in (ROOT / "overlays" / "airgapped.yaml", airgap / "charms.yaml"):
                if extra.resolve() not in {o.resolve() for o in self.overlays}:
                    self.overlays.append(extra)
        self.addons = ["dns", "hostpath-storage"] + (["registry"] if airgap is not None else [])
        self._home: Path | None = None

    def juju(self, *args: str, check: bool = True, stdin: str | None = None):
        return run("juju", *args, check=check, user=self.user, stdin=stdin)

    def juju_ok(self, *args: str) -> bool:
        return succeeds("juju", *args, user=self.user)

    # --- what each step checks ----------------------------------------------------

    def enabled_addons(self) -> set[str]:
        out = run("microk8s", "status", "--format", "yaml", check=False)
        if out.returncode != 0:
            return set()
        data = yaml.safe_load(out.stdout) or {}
        return {a["name"] for a in data.get("addons", []) if a.get("status") == "enabled"}

    def in_group(self) -> bool:
        out = run("id", "-nG", self.user, check=False)
        return out.returncode == 0 and MICROK8S_GROUP in out.stdout.split()

    def snap_ready(self, name: str) -> bool:
        """Installed as the site needs it; the wrong release or confinement stops the run with the
        command that fixes it (or, with --refresh-snaps, is left to act() where that is safe)."""
        snap = snaps.installed(name)
        if snap is None:
            return False
        wrong = snaps.problem(snaps.WANTED[name], snap)
        if wrong is None:
            return True
        text, refresh = snaps.fix(snaps.WANTED[name])
        if refresh is not None and self.refresh_snaps:
            return False
        also = " (or rerun bootstrap with --refresh-snaps)" if refresh is not None else ""
        raise StepFailed(f"{wrong}. Fix: {text}{also}")

    def rbac_enforced(self) -> bool:
        out = run("microk8s", "kubectl", *RBAC_PROBE, check=False)
        return out.stdout.strip().startswith("no")

    def home(self) -> Path:
        """The Juju user's home, where the juju snap may read files (sudo -H sets HOME)."""
        if self._home is None:
            self._home = Path(run("sh", "-c", 'printf %s "$HOME"', user=self.user).stdout)
        return self._home

    def stage(self) -> Stage:
        """The bundle, overlays and charms as `juju deploy` will read them (stage.py says why)."""
        return plan(ROOT / "bundle.yaml", self.overlays, self.home() / STAGE_DIR, {CHARM.resolve(): self.charm})

    def staged(self) -> bool:
        stage = self.stage()
        if not stage.current():
            return False
        owners = run("stat", "-c", "%U", *map(str, stage.files)).stdout.split()
        return owners == [self.user] * len(stage.files)

    def write_stage(self) -> None:
        stage = self.stage()
        stage.write()
        run("chown", "-R", f"{self.user}:", str(stage.root))

    def has_local_share(self) -> bool:
        return succeeds("sh", "-c", 'test -d "$HOME/.local/share"', user=self.user)

    def bundle_apps(self) -> set[str]:
        apps = set(yaml.safe_load((ROOT / "bundle.yaml").read_text())["applications"])
        for overlay in self.overlays:
            for name, spec in (yaml.safe_load(overlay.read_text()).get("applications") or {}).items():
                (apps.discard if spec is None else apps.add)(name)
        return apps

    def model_status(self) -> dict:
        out = self.juju("status", "-m", f"{CONTROLLER}:{MODEL}", "--format", "json", check=False)
        return json.loads(out.stdout or "{}") if out.returncode == 0 else {}

    def deployed(self) -> bool:
        return self.bundle_apps() <= set(self.model_status().get("applications", {}))

    def all_active(self) -> bool:
        apps = self.model_status().get("applications", {})
        return bool(apps) and all(a.get("application-status", {}).get("current") == "active" for a in apps.values())

    def charm_fresh(self) -> bool:
        if not self.charm.exists():
            return False
        built = self.charm.stat().st_mtime
        sources = [CHARM_DIR / s for s in CHARM_SOURCES]
        files = [p for s in sources for p in ([s] if s.is_file() else s.rglob("*"))]
        return all(p.stat().st_mtime <= built for p in files if p.is_file() and "__pycache__" not in p.parts)

    def lxd_initialised(self) -> bool:
        """craft-providers' own test: the default profile has a disk device at / (lxd/installer.py)."""
        out = run("lxc", "profile", "show", "default", check=False)
        if out.returncode != 0:
            return False
        devices = (yaml.safe_load(out.stdout) or {}).get("devices") or {}
        return any(d.get("type") == "disk" and d.get("path") == "/" for d in devices.values())

    def server_image_loaded(self) -> bool:
        return server_image.reference() in airgap.containerd_images()

    def has_builder(self) -> bool:
        return any(shutil.which(b, path=self.builder_path) for b in BUILDERS)

    # --- what each step does --------------------------------------------------------

    def bootstrap_config(self) -> list[str]:
        """A capped controller database; air-gapped, Juju's own images from the local registry too."""
        config = ["--config", MONGO_PROFILE]
        if self.airgap is not None:
            config += ["--config", f"caas-image-repo={REGISTRY}/jujusolutions"]
        return config

    def install_snap(self, name: str) -> None:
        """From the store, or on an air-gapped host from the snap the export downloaded; an installed
        snap of the wrong release is refreshed (only with --refresh-snaps: snap_ready)."""
        wanted = snaps.WANTED[name]
        if snaps.installed(name) is not None:
            _, refresh = snaps.fix(wanted)
            if refresh is None:
                raise StepFailed(f"{name} is installed but not as the site needs it; bootstrap will not replace it")
            run(*refresh)
            return
        channel, classic = wanted.channel, bool(wanted.classic)
        flags = ["--classic"] if classic else []
        local = airgap.local_snap(self.airgap, name) if self.airgap is not None else None
        if local is None:
            run("snap", "install", name, *flags, f"--channel={channel}")
            return
        snap, assertion = local
        run("snap", "ack", str(assertion))
        run("snap", "install", str(snap), *flags)

    def add_cloud(self) -> None:
        """The Charmed Kubeflow 1.8 guide's `microk8s config | juju add-k8s <cloud> --client`."""
        kubeconfig = run("microk8s", "config").stdout
        self.juju("add-k8s", CLOUD, "--client", stdin=kubeconfig)

    def make_local_share(self) -> None:
        # The strictly confined juju snap may write ~/.local/share/juju but cannot create its
        # parent (Juju 3.6 / Charmed Kubeflow 1.8 install guides: `mkdir -p ~/.local/share`).
        run("sh", "-c", 'mkdir -p "$HOME/.local/share"', user=self.user)

    def charm_ready(self) -> bool:
        if self.airgap is None:
            return self.charm_fresh()
        shipped = self.airgap / airgap.CHARM_NAME
        return self.charm.exists() and shipped.exists() and self.charm.read_bytes() == shipped.read_bytes()

    def take_charm(self) -> None:
        """Air-gapped: charmcraft cannot fetch its build dependencies; the export brought the charm."""
        shipped = self.airgap / airgap.CHARM_NAME
        if not shipped.exists():
            raise StepFailed(f"{shipped} is missing: pack the charm before `airgap-images export`")
        self.charm.parent.mkdir(exist_ok=True)
        shutil.copyfile(shipped, self.charm)

    def destructive(self) -> bool:
        """Pack on the host itself when it is the charm's base (craft-application refuses any other:
        services/lifecycle.py _validate_build_plan, IncompatibleBaseError); else in LXD."""
        return host_base(self.os_release) == charm_base()

    def pack(self) -> None:
        run("charmcraft", "pack", *(["--destructive-mode"] if self.destructive() else []), cwd=CHARM_DIR)
        packed = sorted(CHARM_DIR.glob("onnx-model_*.charm"), key=lambda p: p.stat().st_mtime)
        if not packed:
            raise StepFailed("charmcraft pack produced no onnx-model_*.charm")
        self.charm.parent.mkdir(exist_ok=True)
        shutil.move(str(packed[-1]), self.charm)

    def load_server_image(self) -> None:
        """Build (or take the given archive), then import into the kubelet's containerd."""
        archive = self.server_archive
        if self.airgap is not None:  # never built offline: the export carries it
            archive = self.airgap / airgap.archive_name(server_image.reference())
        elif archive is None:
            reference = server_image.build(say=self.say)
            archive = server_image.save(reference, SERVER_ARCHIVE)
        run("microk8s", "ctr", "image", "import", str(archive))

    def deploy(self) -> None:
        stage = self.stage()
        cmd = ["deploy", "-m", f"{CONTROLLER}:{MODEL}", str(stage.bundle), "--trust"]
        for overlay in stage.overlays:
            cmd += ["--overlay", str(overlay)]
        self.juju(*cmd)

    def enable_addons(self) -> None:
        for addon in self.addons:
            if addon not in self.enabled_addons():
                run("microk8s", "enable", addon)

    def steps(self) -> list[Step]:
        user = self.user
        return [
            Step("snapd", lambda: succeeds("snap", "version"), lambda: None, "install snapd: apt install snapd"),
            Step(
                f"MicroK8s {snaps.WANTED['microk8s'].channel} (classic)",
                lambda: self.snap_ready("microk8s"),
                lambda: self.install_snap("microk8s"),
                "check `snap changes`",
            ),
            Step(
                "MicroK8s ready",
                lambda: succeeds("microk8s", "status", "--wait-ready", "--timeout", "30"),
                lambda: run("microk8s", "status", "--wait-ready", "--timeout", "600"),
                "see `microk8s inspect`",
            ),
            *self.side_load_steps(),
            *(
                [
                    Step(
                        f"{user} in group {MICROK8S_GROUP}",
                        self.in_group,
                        lambda: run("usermod", "-a", "-G", MICROK8S_GROUP, user),
                        f"`getent group {MICROK8S_GROUP}`; {user} must log in again to use `microk8s` without sudo",
                    )
                ]
                if user != "root"
                else []
            ),
            Step(
                "addons " + " ".join(self.addons),
                lambda: set(self.addons) <= self.enabled_addons(),
                self.enable_addons,
                "see `microk8s status` and `microk8s inspect`",
            ),
            Step(
                "RBAC: a pod's service account may read no secrets (microk8s enable rbac)",
                self.rbac_enforced,
                lambda: run("microk8s", "enable", "rbac"),
                "`microk8s kubectl " + " ".join(RBAC_PROBE) + "` must answer no; see `microk8s inspect`",
            ),
            *self.push_steps(),
            Step(
                f"Juju {snaps.WANTED['juju'].channel}",
                lambda: self.snap_ready("juju"),
                lambda: self.install_snap("juju"),
                "check `snap changes`",
            ),
            Step(
                f"~{user}/.local/share",
                self.has_local_share,
                self.make_local_share,
                f"create it as {user}: mkdir -p ~/.local/share",
            ),
            Step(
                f"cloud {CLOUD} (juju add-k8s, as {user})",
                lambda: self.juju_ok("show-cloud", CLOUD, "--client"),
                self.add_cloud,
                "`microk8s config` must work, and Juju needs the hostpath-storage add-on's default storage class",
            ),
            Step(
                f"controller {CONTROLLER} (as {user})",
                lambda: self.juju_ok("show-controller", CONTROLLER),
                lambda: self.juju("bootstrap", CLOUD, CONTROLLER, *self.bootstrap_config()),
                f"`microk8s kubectl -n controller-{CONTROLLER} get pods`; "
                f"retry after `juju kill-controller {CONTROLLER}`",
            ),
            Step(
                f"model {MODEL}",
                lambda: self.juju_ok("show-model", f"{CONTROLLER}:{MODEL}"),
                lambda: self.juju("add-model", MODEL, "-c", CONTROLLER),
                f"`juju models -c {CONTROLLER}`; the model must be named {MODEL}",
            ),
            *self.server_image_steps(),
            *self.pack_steps(),
            Step(
                f"bundle, overlays and charms staged in ~{user}/{STAGE_DIR}, owned by {user}",
                self.staged,
                self.write_stage,
                f"the strictly confined juju snap reads only files {user} owns under ~{user} "
                "(snapd's home interface); that home must be under /home",
            ),
            Step(
                "bundle deployed",
                self.deployed,
                self.deploy,
                f"`juju status -m {MODEL}` and `juju debug-log -m {MODEL}`",
            ),
            Step(
                "every application active",
                self.all_active,
                lambda: self.juju(
                    "wait-for",
                    "model",
                    MODEL,
                    "--query",
                    'forEach(applications, app => app.status == "active")',
                    "--timeout",
                    "45m",
                ),  # fmt: skip
                f"`juju status -m {MODEL}`: a blocked or waiting unit says what it needs",
            ),
        ]

    def side_load_steps(self) -> list[Step]:
        """Air-gapped: MicroK8s' own images (calico is applied at install) before any add-on starts."""
        if self.airgap is None:
            return []
        return [
            Step(
                "images side-loaded into MicroK8s (microk8s ctr image import)",
                lambda: not airgap.not_side_loaded(self.airgap),
                lambda: airgap.side_load(self.airgap, say=self.say),
                f"`airgap-images export` on a connected machine, copy the folder to {self.airgap}",
            )
        ]

    def push_steps(self) -> list[Step]:
        if self.airgap is None:
            return []
        return [
            Step(
                f"images in {REGISTRY}",
                lambda: not airgap.not_pushed(self.airgap),
                lambda: airgap.push(self.airgap, say=self.say),
                f"`microk8s kubectl -n container-registry get pods` (needs {REGISTRY} up)",
            )
        ]

    def server_image_steps(self) -> list[Step]:
        reference = server_image.reference()
        steps = []
        if self.airgap is None and self.server_archive is None:
            steps.append(
                Step(
                    "image builder (" + " or ".join(BUILDERS) + ")",
                    self.has_builder,
                    lambda: (
                        run("apt-get", "update"),
                        run("apt-get", "install", "-y", *server_image.builder_packages()),
                    ),
                    "apt-get install " + " ".join(server_image.builder_packages()),
                )
            )
        source = "from the export" if self.airgap else (str(self.server_archive) if self.server_archive else "built")
        steps.append(
            Step(
                f"server image {reference} in MicroK8s ({source})",
                self.server_image_loaded,
                self.load_server_image,
                f"`microk8s ctr images ls -q | grep defect-server`: the archive must hold {reference}",
            )
        )
        return steps

    def pack_steps(self) -> list[Step]:
        if self.airgap is not None:
            return [
                Step(
                    "onnx-model charm (from the export)",
                    self.charm_ready,
                    self.take_charm,
                    "pack the charm before `airgap-images export`",
                )
            ]
        steps = [
            Step(
                f"charmcraft {snaps.WANTED['charmcraft'].channel}",
                lambda: self.snap_ready("charmcraft"),
                lambda: self.install_snap("charmcraft"),
                "check `snap changes`",
            )
        ]
        how = f"on this {charm_base()} host (--destructive-mode)"
        if not self.destructive():
            how = "in LXD"
            steps += [
                Step(
                    "LXD",
                    lambda: succeeds("snap", "list", "lxd"),
                    lambda: run("snap", "install", "lxd"),
                    "check `snap changes`",
                ),
                Step(
                    "LXD initialised",
                    self.lxd_initialised,
                    lambda: run("lxd", "init", "--auto"),
                    "`lxc profile show default` must have a disk device at /",
                ),
            ]
        steps.append(
            Step(
                f"onnx-model charm packed {how}",
                self.charm_ready,
                self.pack,
                "or pack elsewhere and copy it to build/onnx-model.charm",
            )
        )
        return steps

    def gateway_url(self) -> str:
        out = run(
            "microk8s", "kubectl", "-n", MODEL, "get", "svc", "istio-ingressgateway-workload", "-o", "json"
        )  # fmt: skip
        ports = json.loads(out.stdout)["spec"]["ports"]
        port = next(p["nodePort"] for p in ports if p.get("port") == 80 or p.get("name") == "http2")
        return f"http://127.0.0.1:{port}"

    def run(self) -> int:
        changed = 0
        for step in self.steps():
            try:
                if step.done():
                    self.say(f"ok       {step.name} (already)")
                    continue
                self.say(f"doing    {step.name}")
                step.act()
                if not step.done():
                    raise StepFailed(f"{step.name} is still not done after acting")
                changed += 1
                self.say(f"done     {step.name}")
            except StepFailed as exc:
                self.say(f"FAILED   {step.name}: {exc}\n         what to do: {step.hint}")
                return 1
        try:
            url = self.gateway_url()
        except (StepFailed, KeyError, StopIteration, ValueError) as exc:
            self.say(f"FAILED   gateway NodePort: {exc}\n         what to do: `microk8s kubectl -n {MODEL} get svc`")
            return 1
        self.say("nothing to change: the site was already up" if changed == 0 else f"{changed} step(s) done")
        sample = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
        self.say(
            f"serving at {url}/model/scratch/api/v0.1/predictions\n"
            f"  curl -s {url}/model/scratch/api/v0.1/predictions -H 'Content-Type: application/json' "
            f'-d "{{\\"binData\\": \\"$(base64 -w0 {sample})\\"}}"'
        )
        return 0


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="bootstrap-edge-site", description=__doc__.splitlines()[0])
    p.add_argument("--overlay", type=Path, action="append", default=[], help="as juju deploy --overlay")
    p.add_argument(
        "--airgapped",
        type=Path,
        metavar="DIR",
        help="no internet: snaps, images and charms from DIR (made by `scripts/airgap-images export DIR`)",
    )
    p.add_argument(
        "--refresh-snaps",
        action="store_true",
        help="refresh an installed juju or charmcraft snap of the wrong release instead of stopping "
        "(MicroK8s is never replaced: that would delete its cluster)",
    )
    p.add_argument(
        "--server-image-archive",
        type=Path,
        metavar="FILE",
        help=f"a prebuilt server image (docker-archive holding {server_image.reference()}) instead of building it",
    )
    args = p.parse_args(argv)
    problem = first_problem(args.overlay)
    if problem:
        print(f"bootstrap-edge-site: {problem}", file=sys.stderr)
        return 2
    if args.airgapped is not None and not (args.airgapped / "images.json").is_file():
        print(
            f"bootstrap-edge-site: --airgapped {args.airgapped}: not a folder from `airgap-images export`",
            file=sys.stderr,
        )
        return 2
    if args.server_image_archive is not None and not args.server_image_archive.is_file():
        print(f"bootstrap-edge-site: --server-image-archive {args.server_image_archive}: no such file", file=sys.stderr)
        return 2
    problem = preflight(os.geteuid(), platform.machine())
    if problem:
        print(f"bootstrap-edge-site: {problem}", file=sys.stderr)
        return 2
    return Bootstrap(
        args.overlay,
        args.airgapped,
        say=lambda line: print(line, flush=True),
        user=os.environ.get("SUDO_USER") or "root",
        server_archive=args.server_image_archive.resolve() if args.server_image_archive else None,
        refresh_snaps=args.refresh_snaps,
    ).run()
