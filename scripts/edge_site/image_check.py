"""Start the built server image as a pod would and get predictions from it (podman).

The container gets what Seldon gives the model container: PREDICTIVE_UNIT_PARAMETERS and the ports
as environment, the SeldonDeployment's annotations at /etc/podinfo/annotations (the downward-API
volume the operator mounts), a read-only root with a writable /tmp, all capabilities dropped. It
runs the image's own entrypoint and user; the model file is the one inside the image. Host
networking: the ports are chosen free on loopback, as the pod's would be its own.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .server_image import storage_args
from .shell import ROOT, StepFailed, run

PHOTOS = ROOT / "tests" / "data" / "metal-tags" / "images"
CARD = ROOT / "models" / "scratch-detector" / "model.yaml"
PODINFO_MOUNT = ("/etc", "/etc/podinfo")  # the mount point and its parent, made by the runtime
DEFAULT_ANNOTATIONS = {"seldon.io/rest-timeout": "30000"}  # the charm's (manifests.py)


def default_parameters(variant: str = "int8") -> list[dict[str, str]]:
    """The graph parameters the charm gives by default: the model inside the image, its card's sha256."""
    import yaml

    card = yaml.safe_load(CARD.read_text())
    chosen = next(v for v in card["variants"] if v["name"] == variant)
    values = {
        "model_uri": f"file:///opt/models/scratch-detector/{chosen['file']}",
        "model_sha256": chosen["sha256"],
        "model_name": "scratch",
    }
    return [{"name": k, "type": "STRING", "value": v} for k, v in values.items()]


def scratched_photo() -> Path:
    """The dataset's photo with the most labelled scratches (tests/data/metal-tags, COCO)."""
    coco = json.loads((PHOTOS.parent / "annotations.json").read_text())
    counts: dict[int, int] = {}
    for a in coco["annotations"]:
        counts[a["image_id"]] = counts.get(a["image_id"], 0) + 1
    best = max(coco["images"], key=lambda i: (counts.get(i["id"], 0), i["file_name"]))
    return PHOTOS / best["file_name"]


def runtime_args() -> list[str]:
    """podman's global options from DEFECT_IMAGE_RUNTIME / DEFECT_IMAGE_CGROUP_MANAGER.

    crun refuses a host with hybrid cgroups (v1 controllers beside an empty v2 tree: some VMs
    and CI containers); runc with the cgroupfs manager runs there.
    """
    args = []
    if os.environ.get("DEFECT_IMAGE_RUNTIME"):
        args += ["--runtime", os.environ["DEFECT_IMAGE_RUNTIME"]]
    if os.environ.get("DEFECT_IMAGE_CGROUP_MANAGER"):
        args += ["--cgroup-manager", os.environ["DEFECT_IMAGE_CGROUP_MANAGER"]]
    return args


def ulimit_args() -> list[str]:
    """Limits at or below this process's own: podman's defaults (nofile 1048576, nproc) need
    CAP_SYS_RESOURCE, which a VM or CI container may not grant (crun: setrlimit not permitted)."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 16384)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 4096)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Container:
    """One running container of the image; ``url`` is its REST root."""

    reference: str
    parameters: list[dict[str, str]]
    env: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ANNOTATIONS))
    read_only: bool = True
    name: str = field(default_factory=lambda: f"defect-server-check-{uuid.uuid4().hex[:8]}")
    http_port: int = field(default_factory=_free_port)
    grpc_port: int = field(default_factory=_free_port)
    metrics_port: int = field(default_factory=_free_port)
    _podinfo: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def podman(self, *args: str, check: bool = True, timeout: float = 300):
        return run("podman", *storage_args("podman"), *runtime_args(), *args, check=check, timeout=timeout)

    def start(self) -> Container:
        self._podinfo = tempfile.TemporaryDirectory(prefix="podinfo-")
        lines = "".join(f"{k}={json.dumps(v)}\n" for k, v in self.annotations.items())
        Path(self._podinfo.name, "annotations").write_text(lines)
        os.chmod(self._podinfo.name, 0o755)
        env = {
            "PREDICTIVE_UNIT_PARAMETERS": json.dumps(self.parameters),
            "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(self.http_port),
            "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(self.grpc_port),
            "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(self.metrics_port),
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "1",
            "INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false",
            **self.env,
        }
        cmd = ["run", "--detach", "--name", self.name, "--network", "host", *ulimit_args(), "--cap-drop", "ALL"]
        cmd += ["--security-opt", "no-new-privileges", "-v", f"{self._podinfo.name}:/etc/podinfo:ro"]
        if self.read_only:
            cmd += ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m,mode=1777"]
        for key, value in env.items():
            cmd += ["--env", f"{key}={value}"]
        self.podman(*cmd, self.reference)
        return self

    def logs(self) -> str:
        proc = self.podman("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    def wait_ready(self, timeout: float = 180) -> float:
        """Seconds until /health/status says ready; raises with the server's reason if it never is."""
        started = time.monotonic()
        reason = "no answer"
        while time.monotonic() - started < timeout:
            state = self.podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
            if state != "true":
                raise StepFailed(f"the container stopped: {self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/status", timeout=5) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            except urllib.error.HTTPError as exc:
                reason = exc.read().decode(errors="replace")[:300]
            except OSError as exc:
                reason = str(exc)
            time.sleep(1)
        raise StepFailed(f"not ready after {timeout:g}s: {reason}; log: {self.logs()}")

    def predict(self, photo: Path) -> dict:
        body = json.dumps({"binData": base64.b64encode(photo.read_bytes()).decode()}).encode()
        req = urllib.request.Request(
            f"{self.url}/api/v0.1/predictions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def processes(self) -> list[tuple[int, str]]:
        """(uid, command) of every process in the container, read from the host's /proc.

        The container's processes are those in its pid namespace; `podman top` would need `ps`
        inside the image with some runtimes, and the image has none.
        """
        pid = self.podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip()
        namespace = os.readlink(f"/proc/{pid}/ns/pid")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                    continue
                status = Path(f"/proc/{entry}/status").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue  # gone meanwhile
            uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
            found.append((uid, command))
        return found

    def changed_paths(self) -> list[str]:
        """What the container changed in its image's filesystem (`podman diff`), less the mount
        point the runtime itself creates for /etc/podinfo (as the kubelet does in a pod)."""
        out = self.podman("diff", self.name).stdout.splitlines()
        return [p for p in (line.split(None, 1)[1] for line in out if line.strip()) if p not in PODINFO_MOUNT]

    def stop(self) -> None:
        self.podman("rm", "--force", "--time", "5", self.name, check=False)
        if self._podinfo is not None:
            self._podinfo.cleanup()

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class CheckResult:
    reference: str
    ready_s: float
    photo: str
    prediction: dict
    uids: list[int]
    changed: list[str]

    def summary(self) -> str:
        model = self.prediction["jsonData"]["model"]
        dets = self.prediction["jsonData"]["detections"]
        return (
            f"{self.reference}: ready in {self.ready_s:.1f}s, model {model['name']} sha256 {model['sha256']}, "
            f"processes as uid {sorted(set(self.uids))}, files changed outside tmpfs: {self.changed or 'none'}\n"
            f"{self.photo}: {json.dumps(dets)}"
        )


def run_check(reference: str, photo: Path | None = None, parameters: list[dict[str, str]] | None = None) -> CheckResult:
    """Start the image as a pod would, wait until ready, predict one photo; StepFailed says what failed."""
    photo = photo or scratched_photo()
    with Container(reference, parameters or default_parameters()) as box:
        ready_s = box.wait_ready()
        prediction = box.predict(photo)
        return CheckResult(
            reference, ready_s, photo.name, prediction, [u for u, _ in box.processes()], box.changed_paths()
        )
