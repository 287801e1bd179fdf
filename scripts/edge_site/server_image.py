"""The model server image: build it from models/server, save it for `microk8s ctr image import`.

PLACEHOLDER with the agreed API only, so that bootstrap and air-gap can call it: the h/image
branch owns this module (recipe, base images, tests) and its version replaces this file.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .shell import ROOT, StepFailed, run

NAME = "localhost/defect-server"
VERSION = "0.2.0"  # the server's version; the h/image branch reads it from models/server
RECIPE = ROOT / "models" / "server" / "Dockerfile"
BUILDERS = ("buildah", "podman", "docker")


def reference() -> str:
    """The charm's default server-image: what bootstrap builds and imports."""
    return f"{NAME}:{VERSION}"


def builder_packages() -> list[str]:
    """Debian/Ubuntu packages a fresh host needs to build the image."""
    return ["buildah"]


def _inputs_digest() -> str:
    files = [
        RECIPE,
        *sorted((ROOT / "models" / "server").rglob("*")),
        *sorted((ROOT / "models" / "scratch-detector").glob("*")),
    ]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _builder(builder: str | None) -> str:
    found = builder or next((b for b in BUILDERS if shutil.which(b)), None)
    if found is None:
        raise StepFailed(f"no image builder: apt-get install {' '.join(builder_packages())}")
    return found


def build(base: str | None = None, builder: str | None = None, say=print) -> str:
    """Build the image unless one of the same inputs exists; return its reference."""
    tool = _builder(builder)
    ref, stamp = reference(), f"{NAME}:inputs-{_inputs_digest()}"
    if run(tool, "inspect", "--type", "image", stamp, check=False).returncode == 0:
        say(f"image    {ref}: already built from these inputs")
        return ref
    say(f"image    building {ref} with {tool}")
    args = ["--build-arg", f"BASE={base}"] if base else []
    run(tool, "build", "-f", str(RECIPE), "-t", ref, "-t", stamp, *args, str(ROOT), timeout=3 * 3600)
    return ref


def save(reference: str, archive: Path) -> Path:
    """A docker-archive of ``reference``: what `microk8s ctr image import` reads."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    run(_builder(None), "push", reference, f"docker-archive:{archive}:{reference}")
    return archive
