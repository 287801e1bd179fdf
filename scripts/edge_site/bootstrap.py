"""Bring a fresh Ubuntu host to a serving edge site, one checked step at a time.

Each step first checks whether it is already done (then it says so and
changes nothing); otherwise it acts, then checks again. A step that fails
stops the run with the command, its output and what to do.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import airgap
from .shell import JUJU_CHANNEL, MICROK8S_CHANNEL, REGISTRY, ROOT, StepFailed, run, succeeds

CHARM_DIR = ROOT / "charms" / "onnx-model"
CHARM = ROOT / "build" / "onnx-model.charm"
CONTROLLER = "edge-microk8s"
MODEL = "kubeflow"  # the gateway lives in this namespace: the bundle requires this name


@dataclass
class Step:
    name: str
    done: Callable[[], bool]
    act: Callable[[], None]
    hint: str


class Bootstrap:
    """The steps from a fresh host to a serving site; ``airgap``: a folder from ``airgap-images export``."""

    def __init__(self, overlays: list[Path], airgap: Path | None = None, say=print, charm: Path = CHARM) -> None:
        self.airgap, self.say, self.charm = airgap, say, charm
        self.overlays = list(overlays)
        if airgap is not None:  # images from the registry, charms from the folder
            for extra in (ROOT / "overlays" / "airgapped.yaml", airgap / "charms.yaml"):
                if extra.resolve() not in {o.resolve() for o in self.overlays}:
                    self.overlays.append(extra)
        self.addons = ["dns", "hostpath-storage"] + (["registry"] if airgap is not None else [])

    # --- what each step checks ----------------------------------------------------

    def enabled_addons(self) -> set[str]:
        out = run("microk8s", "status", "--format", "yaml", check=False)
        if out.returncode != 0:
            return set()
        data = yaml.safe_load(out.stdout) or {}
        return {a["name"] for a in data.get("addons", []) if a.get("status") == "enabled"}

    def bundle_apps(self) -> set[str]:
        apps = set(yaml.safe_load((ROOT / "bundle.yaml").read_text())["applications"])
        for overlay in self.overlays:
            for name, spec in (yaml.safe_load(overlay.read_text()).get("applications") or {}).items():
                (apps.discard if spec is None else apps.add)(name)
        return apps

    def model_status(self) -> dict:
        out = run("juju", "status", "-m", f"{CONTROLLER}:{MODEL}", "--format", "json", check=False)
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
        return all(
            p.stat().st_mtime <= built for p in CHARM_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )

    # --- what each step does --------------------------------------------------------

    def bootstrap_config(self) -> list[str]:
        """Air-gapped: Juju's own images (controller, charm bases) from the local registry too."""
        return ["--config", f"caas-image-repo={REGISTRY}/jujusolutions"] if self.airgap is not None else []

    def install_snap(self, name: str, channel: str, classic: bool) -> None:
        """From the store, or on an air-gapped host from the snap the export downloaded."""
        flags = ["--classic"] if classic else []
        local = airgap.local_snap(self.airgap, name) if self.airgap is not None else None
        if local is None:
            run("snap", "install", name, *flags, f"--channel={channel}")
            return
        snap, assertion = local
        run("snap", "ack", str(assertion))
        run("snap", "install", str(snap), *flags)

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

    def pack(self) -> None:
        if not succeeds("snap", "list", "charmcraft"):
            run("snap", "install", "charmcraft", "--classic")
        run("charmcraft", "pack", cwd=CHARM_DIR)
        packed = sorted(CHARM_DIR.glob("onnx-model_*.charm"), key=lambda p: p.stat().st_mtime)
        if not packed:
            raise StepFailed("charmcraft pack produced no onnx-model_*.charm")
        self.charm.parent.mkdir(exist_ok=True)
        shutil.move(str(packed[-1]), self.charm)

    def deploy(self) -> None:
        if self.airgap is not None:
            airgap.localize_charm_paths(self.airgap)
        cmd = ["juju", "deploy", "-m", f"{CONTROLLER}:{MODEL}", str(ROOT / "bundle.yaml"), "--trust"]
        for overlay in self.overlays:
            cmd += ["--overlay", str(overlay)]
        run(*cmd, cwd=ROOT)

    def enable_addons(self) -> None:
        for addon in self.addons:
            if addon not in self.enabled_addons():
                run("microk8s", "enable", addon)

    def steps(self) -> list[Step]:
        return [
            Step("snapd", lambda: succeeds("snap", "version"), lambda: None, "install snapd: apt install snapd"),
            Step(
                f"MicroK8s {MICROK8S_CHANNEL}",
                lambda: succeeds("snap", "list", "microk8s"),
                lambda: self.install_snap("microk8s", MICROK8S_CHANNEL, classic=True),
                "run as root (sudo); check `snap changes`",
            ),
            Step(
                "MicroK8s ready",
                lambda: succeeds("microk8s", "status", "--wait-ready", "--timeout", "30"),
                lambda: run("microk8s", "status", "--wait-ready", "--timeout", "600"),
                "see `microk8s inspect`",
            ),
            Step(
                "addons " + " ".join(self.addons),
                lambda: set(self.addons) <= self.enabled_addons(),
                self.enable_addons,
                "see `microk8s status` and `microk8s inspect`",
            ),
            *self.airgap_steps(),
            Step(
                f"Juju {JUJU_CHANNEL}",
                lambda: succeeds("snap", "list", "juju"),
                lambda: self.install_snap("juju", JUJU_CHANNEL, classic=False),
                "run as root (sudo); check `snap changes`",
            ),
            Step(
                f"controller {CONTROLLER}",
                lambda: succeeds("juju", "show-controller", CONTROLLER),
                lambda: run("juju", "bootstrap", "microk8s", CONTROLLER, *self.bootstrap_config()),
                "the user running this must be in the microk8s group: usermod -a -G microk8s $USER, then log in again",
            ),
            Step(
                f"model {MODEL}",
                lambda: succeeds("juju", "show-model", f"{CONTROLLER}:{MODEL}"),
                lambda: run("juju", "add-model", MODEL, "-c", CONTROLLER),
                f"`juju models -c {CONTROLLER}`; the model must be named {MODEL}",
            ),
            Step(
                "onnx-model charm packed",
                self.charm_ready,
                self.pack if self.airgap is None else self.take_charm,
                "charmcraft needs LXD: `lxd init --auto`; or pack elsewhere and copy it to build/onnx-model.charm",
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
                lambda: run(
                    "juju",
                    "wait-for",
                    "model",
                    MODEL,
                    "--query",
                    'forEach(applications, app => app.status == "active")',
                    "--timeout",
                    "45m",
                ),  # fmt: skip
                f"`juju status -m {MODEL}`: a blocked unit says what it needs",
            ),
        ]

    def airgap_steps(self) -> list[Step]:
        if self.airgap is None:
            return []
        return [
            Step(
                f"images in {REGISTRY}",
                lambda: not airgap.missing_images(self.airgap),
                lambda: airgap.import_(self.airgap, say=self.say),
                f"`airgap-images export` on a connected machine, copy the folder to {self.airgap}",
            )
        ]

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
    args = p.parse_args(argv)
    for overlay in args.overlay:
        if not overlay.is_file():
            print(f"bootstrap-edge-site: --overlay {overlay}: no such file", file=sys.stderr)
            return 2
    if args.airgapped is not None and not (args.airgapped / "images.txt").is_file():
        print(
            f"bootstrap-edge-site: --airgapped {args.airgapped}: not a folder from `airgap-images export`",
            file=sys.stderr,
        )
        return 2
    return Bootstrap(args.overlay, args.airgapped, say=lambda line: print(line, flush=True)).run()
