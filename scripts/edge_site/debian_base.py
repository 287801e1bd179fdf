"""A base image for the server made from Debian's own packages, for hosts that reach no image registry.

``mmdebstrap`` writes a minimal Debian bookworm root (python3 3.11 and its venv module) as a tarball
from a Debian mirror (or the host's apt proxy); buildah (or podman) imports it as an image. The
recipe (models/server/Containerfile) then builds on it exactly as on python:3.10-slim-bookworm.
The image is labelled with the hash of what made it, so it is built once per host.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .server_image import image_label, storage_args
from .shell import StepFailed, run

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
REFERENCE = f"localhost/defect-server-base:{SUITE}"
LABEL = "io.github.edge-mlops.defect-server-base.inputs-sha256"
# Docs, man pages and translations are of no use in a server image (about 30 MB).
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")


def inputs_sha256(mirror: str = MIRROR) -> str:
    text = "\n".join([SUITE, mirror, *PACKAGES, *DPKG_EXCLUDES])
    return hashlib.sha256(text.encode()).hexdigest()


def packages() -> list[str]:
    """Debian/Ubuntu packages this needs on the host (beside buildah or podman)."""
    return ["mmdebstrap", "debian-archive-keyring"]


def build_base(builder: str = "buildah", say: Callable[[str], object] = print, mirror: str = MIRROR) -> str:
    """Make (once) and return the Debian base image's reference."""
    if builder not in ("buildah", "podman"):
        raise StepFailed(f"a Debian base is imported with buildah or podman, not {builder}")
    if not shutil.which("mmdebstrap"):
        raise StepFailed("mmdebstrap is not installed: sudo apt-get install " + " ".join(packages()))
    inputs = inputs_sha256(mirror)
    if image_label(builder, REFERENCE, LABEL) == inputs:
        say(f"{REFERENCE} is up to date; not rebuilding")
        return REFERENCE
    say(f"making {REFERENCE} from Debian {SUITE} packages ({', '.join(PACKAGES)}) with mmdebstrap")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="defect-server-base-") as tmp:
        tarball = Path(tmp) / "root.tar"
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", "--aptopt=Acquire::Languages none"]
        cmd += [f"--dpkgopt=path-exclude={pattern}" for pattern in DPKG_EXCLUDES]
        cmd += [SUITE, str(tarball), f"deb {mirror} {SUITE} main", f"deb {SECURITY} {SUITE}-security main"]
        run(*cmd, timeout=1800)
        store = storage_args(builder)
        if builder == "buildah":
            container = run("buildah", *store, "from", "scratch").stdout.strip()
            try:
                run("buildah", *store, "add", container, str(tarball), "/")
                run("buildah", *store, "config", "--label", f"{LABEL}={inputs}", "--cmd", "/bin/bash", container)
                run("buildah", *store, "commit", "--rm", container, REFERENCE)
            except StepFailed:
                run("buildah", *store, "rm", container, check=False)
                raise
        else:
            run("podman", *store, "import", "--change", f"LABEL {LABEL}={inputs}", str(tarball), REFERENCE)
    say(f"made {REFERENCE} in {time.monotonic() - started:.0f}s")
    return REFERENCE
