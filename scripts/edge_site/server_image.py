"""Build, find and save the model server image from models/server/Containerfile.

One recipe, one reference (``localhost/defect-server:<server version>``, the charm's default
``server-image``) for bootstrap, air-gap export and the tests. Builders, in order: buildah, podman
(both daemonless, in Ubuntu's and Debian's archives), then docker where its daemon answers.

A build is skipped when an image with the same reference was built from the same inputs: the
image carries a label with the sha256 of the build context (the recipe, models/server and the
model files) and of the base, so a rerun with an unchanged models/server rebuilds nothing.

Environment (for hosts whose container storage needs them, e.g. a build inside a container):
``DEFECT_IMAGE_STORAGE_DRIVER`` (buildah/podman ``--storage-driver``, e.g. ``vfs``) and
``BUILDAH_ISOLATION`` (buildah's own variable, e.g. ``chroot``). pip inside the build trusts the
CA bundle the host's pip does (``DEFECT_IMAGE_CA_BUNDLE``, else ``PIP_CERT``: a TLS-intercepting
proxy) and uses ``PIP_INDEX_URL`` when set (a local mirror); buildah/podman only.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .shell import ROOT, StepFailed, run

NAME = "localhost/defect-server"
SERVER = ROOT / "models" / "server"
RECIPE = SERVER / "Containerfile"
MODEL_DIR = ROOT / "models" / "scratch-detector"
MODEL_FILES = ("model-int8.onnx", "model-fp32.onnx", "model.yaml")
DEFAULT_BASE = "docker.io/library/python:3.10-slim-bookworm"
INPUTS_LABEL = "io.github.edge-mlops.defect-server.inputs-sha256"
BUILDERS = ("buildah", "podman", "docker")
BUILD_TIMEOUT_S = 3600.0


def version() -> str:
    """The server's version, from models/server/pyproject.toml (the image's tag)."""
    match = re.search(r'^version\s*=\s*"([^"]+)"', (SERVER / "pyproject.toml").read_text(), re.MULTILINE)
    if not match:
        raise StepFailed(f"no version in {SERVER / 'pyproject.toml'}")
    return match.group(1)


def reference() -> str:
    """The image every site runs by default: ``localhost/defect-server:<version>``."""
    return f"{NAME}:{version()}"


def builder_packages() -> list[str]:
    """Debian/Ubuntu packages that give a host a daemonless builder (and `save`)."""
    return ["buildah", "podman", "uidmap", "fuse-overlayfs", "slirp4netns"]


def context_files() -> list[tuple[str, Path]]:
    """(path in the build context, file here): exactly what the recipe may COPY."""
    files = [("models/server/Containerfile", RECIPE)]
    for name in ("requirements.txt", "pyproject.toml", "openapi.yaml"):
        files.append((f"models/server/{name}", SERVER / name))
    for path in sorted((SERVER / "defect_server").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((str(path.relative_to(ROOT)), path))
    files += [(f"models/scratch-detector/{name}", MODEL_DIR / name) for name in MODEL_FILES]
    return files


def inputs_sha256(base: str, base_id: str = "") -> str:
    """Hash of the build's inputs: every context file (path and bytes) and the base image."""
    digest = hashlib.sha256()
    for rel, path in context_files():
        digest.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    digest.update(f"base={base}@{base_id}".encode())
    return digest.hexdigest()


def storage_args(builder: str) -> list[str]:
    driver = os.environ.get("DEFECT_IMAGE_STORAGE_DRIVER", "")
    return ["--storage-driver", driver] if driver and builder in ("buildah", "podman") else []


def choose_builder(builder: str | None = None) -> str:
    """The builder named, or the first of buildah, podman, docker (with a daemon) on this host."""
    if builder:
        if builder not in BUILDERS:
            raise StepFailed(f"builder {builder!r}: use one of {', '.join(BUILDERS)}")
        if not shutil.which(builder):
            raise StepFailed(f"builder {builder!r} is not installed; apt-get install {builder}")
        if builder == "docker" and run("docker", "info", check=False, timeout=60).returncode != 0:
            raise StepFailed("docker is installed but its daemon does not answer (`docker info`); use buildah/podman")
        return builder
    for name in BUILDERS:
        if not shutil.which(name):
            continue
        if name == "docker" and run("docker", "info", check=False, timeout=60).returncode != 0:
            continue  # a docker CLI without a daemon cannot build
        return name
    raise StepFailed(
        "no image builder: install one with `sudo apt-get install " + " ".join(builder_packages()) + "` (or docker)"
    )


def image_label(builder: str, ref: str, label: str) -> str | None:
    """A label of a local image, or None when there is no such image."""
    if builder == "buildah":
        cmd = ["buildah", *storage_args(builder), "inspect", "--type", "image", "--format",
               f'{{{{index .OCIv1.Config.Labels "{label}"}}}}', ref]  # fmt: skip
    else:
        cmd = [builder, *storage_args(builder), "image", "inspect", "--format",
               f'{{{{index .Config.Labels "{label}"}}}}', ref]  # fmt: skip
    proc = run(*cmd, check=False, timeout=120)
    if proc.returncode != 0:
        return None
    value = proc.stdout.strip()
    return "" if value in ("", "<no value>") else value


def image_id(builder: str, ref: str) -> str:
    """A local image's id, or "" when absent (a base that will be pulled)."""
    if builder == "buildah":
        cmd = ["buildah", *storage_args(builder), "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref]
    else:
        cmd = [builder, *storage_args(builder), "image", "inspect", "--format", "{{.Id}}", ref]
    proc = run(*cmd, check=False, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def build(base: str | None = None, builder: str | None = None, say: Callable[[str], object] = print) -> str:
    """Build the image (unless one from the same inputs exists) and return its reference."""
    base = base or DEFAULT_BASE
    tool = choose_builder(builder)
    ref = reference()
    inputs = inputs_sha256(base, image_id(tool, base))
    if image_label(tool, ref, INPUTS_LABEL) == inputs:
        say(f"{ref} is up to date (built from these inputs: {inputs[:12]}); not rebuilding")
        return ref
    say(f"building {ref} with {tool} on {base} (the first build takes minutes)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="defect-server-context-") as tmp:
        context = Path(tmp)
        for rel, path in context_files():
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, context / rel)
        labels = {
            INPUTS_LABEL: inputs,
            "org.opencontainers.image.title": "defect-server",
            "org.opencontainers.image.version": version(),
            "org.opencontainers.image.base.name": base,
        }
        cmd = [tool, *storage_args(tool)]
        cmd += ["bud"] if tool == "buildah" else ["build"]
        if tool != "docker" and os.environ.get("DEFECT_IMAGE_STORAGE_DRIVER") != "vfs":
            # Reuse the dependency layer when only the code changed. Not on vfs, where every
            # step's layer is a full copy of the tree (minutes each); pip's cache still applies.
            cmd += ["--layers"]
        cmd += ["--build-arg", f"BASE={base}", "-f", str(context / "models/server/Containerfile"), "-t", ref]
        for key, value in labels.items():
            cmd += ["--label", f"{key}={value}"]
        cmd += pip_args(tool)
        cmd.append(str(context))
        proc = _stream(cmd, say)
    if proc != 0:
        raise StepFailed(f"building {ref} failed (`{' '.join(cmd[:3])} ...` exited {proc}); see its output above")
    say(f"built {ref} in {time.monotonic() - started:.0f}s")
    return ref


def pip_args(tool: str) -> list[str]:
    """The host's pip CA bundle and index, passed to the recipe's pip (build args, a read-only mount)."""
    if tool == "docker":
        return []  # docker build mounts no host files; its hosts reach PyPI directly
    args = []
    bundle = os.environ.get("DEFECT_IMAGE_CA_BUNDLE") or os.environ.get("PIP_CERT")
    if bundle:
        if not Path(bundle).is_file():
            raise StepFailed(f"CA bundle {bundle} (DEFECT_IMAGE_CA_BUNDLE or PIP_CERT) is not a file")
        args += [
            "--volume",
            f"{Path(bundle).resolve()}:/run/host-ca.pem:ro",
            "--build-arg",
            "PIP_CERT=/run/host-ca.pem",
        ]
    if os.environ.get("PIP_INDEX_URL"):
        args += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    return args


def _stream(cmd: list[str], say: Callable[[str], object], timeout: float = BUILD_TIMEOUT_S) -> int:
    """Run a long build, passing its output on line by line (a build is minutes of silence otherwise).

    The deadline holds whether or not the build prints: lines are read on a thread, and the
    wait for the next one ends at the deadline, so a build hung in silence is killed too.
    """
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}  # docker: the recipe's RUN --mount needs BuildKit
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    except FileNotFoundError:
        raise StepFailed(f"`{cmd[0]}` is not installed") from None
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(out) -> None:
        for line in out:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while (line := lines.get(timeout=max(0.0, deadline - time.monotonic()))) is not None:
            say(f"  {line.rstrip()}")
        return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (queue.Empty, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
        raise StepFailed(f"`{' '.join(cmd[:3])} ...` did not finish in {timeout:g}s") from None


def save(reference: str, archive: Path, builder: str | None = None) -> Path:
    """Write ``reference`` as a docker-archive (what `microk8s ctr image import` takes) to ``archive``."""
    tool = choose_builder(builder)
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)  # buildah and podman refuse to overwrite
    if tool == "buildah":
        run("buildah", *storage_args(tool), "push", reference, f"docker-archive:{archive}:{reference}")
    elif tool == "podman":
        run("podman", *storage_args(tool), "save", "--format", "docker-archive", "-o", str(archive), reference)
    else:
        run("docker", "save", "-o", str(archive), reference)
    return archive


def size_bytes(reference: str, builder: str | None = None) -> int:
    """The image's unpacked size, as the builder reports it."""
    tool = choose_builder(builder)
    if tool == "buildah":
        tool = "podman" if shutil.which("podman") else tool
    if tool == "buildah":
        raise StepFailed("the image size needs podman or docker")
    proc = run(tool, *storage_args(tool), "image", "inspect", "--format", "{{.Size}}", reference)
    return int(proc.stdout.strip())
