"""Bring a fresh Ubuntu host to a serving edge site, one checked step at a time.

Each step first checks whether it is already done (then it says so and
changes nothing); otherwise it acts, then checks again. A step that fails
stops the run with the command, its output and what to do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARM_DIR = ROOT / "charms" / "onnx-model"
CHARM = ROOT / "build" / "onnx-model.charm"
MICROK8S_CHANNEL = "1.28/stable"
JUJU_CHANNEL = "3.6/stable"
CONTROLLER = "edge-microk8s"
MODEL = "kubeflow"  # the gateway lives in this namespace: the bundle requires this name
REGISTRY = "localhost:32000"  # MicroK8s' registry add-on


class StepFailed(RuntimeError):
    """A step could not be completed; the message says what to do."""


@dataclass
class Step:
    name: str
    done: Callable[[], bool]
    act: Callable[[], None]
    hint: str


def run(*cmd: str, cwd: Path | None = None, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise StepFailed(f"`{cmd[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"`{' '.join(cmd)}` did not finish in {timeout:g}s") from None
    if check and proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()[-800:]
        raise StepFailed(f"`{' '.join(cmd)}` exited {proc.returncode}: {output}")
    return proc


def succeeds(*cmd: str) -> bool:
    try:
        return run(*cmd, check=False, timeout=120).returncode == 0
    except StepFailed:
        return False


class Bootstrap:
    def __init__(self, overlays: list[Path], airgapped: bool, say=print, charm: Path = CHARM) -> None:
        self.overlays, self.airgapped, self.say, self.charm = overlays, airgapped, say, charm
        self.addons = ["dns", "hostpath-storage"] + (["registry"] if airgapped else [])

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
        return ["--config", f"caas-image-repo={REGISTRY}/jujusolutions"] if self.airgapped else []

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
                lambda: run("snap", "install", "microk8s", "--classic", f"--channel={MICROK8S_CHANNEL}"),
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
            Step(
                f"Juju {JUJU_CHANNEL}",
                lambda: succeeds("snap", "list", "juju"),
                lambda: run("snap", "install", "juju", f"--channel={JUJU_CHANNEL}"),
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
                self.charm_fresh,
                self.pack,
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
        action="store_true",
        help="enable MicroK8s' registry add-on and take Juju's images from it (see scripts/airgap-images)",
    )
    args = p.parse_args(argv)
    for overlay in args.overlay:
        if not overlay.is_file():
            print(f"bootstrap-edge-site: --overlay {overlay}: no such file", file=sys.stderr)
            return 2
    return Bootstrap(args.overlay, args.airgapped, say=lambda line: print(line, flush=True)).run()
