"""Install what `tox -e image` needs from Debian's archive, if missing: buildah, podman, mmdebstrap, skopeo.

Run by tox before the tests (as root, like CI); checks `apt-cache policy` that each package has an
install candidate (after `apt-get update`), so a missing archive is named instead of a vague apt error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

TOOLS = {  # command -> Debian package
    "buildah": "buildah",
    "podman": "podman",
    "mmdebstrap": "mmdebstrap",
    "skopeo": "skopeo",
    "newuidmap": "uidmap",
    "slirp4netns": "slirp4netns",
    "runc": "runc",
}


def candidate(package: str) -> str:
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split(":", 1)[1].strip()
    return "(none)"


def main() -> int:
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if not shutil.which(cmd)})
    if not missing:
        return 0
    if os.geteuid() != 0:  # the tests then skip, naming what is missing
        print(f"image: missing {' '.join(missing)}; install: sudo apt-get install {' '.join(missing)}", file=sys.stderr)
        return 0
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    unknown = [pkg for pkg in missing if candidate(pkg) == "(none)"]
    if unknown:
        print(f"image: the archive has no {' '.join(unknown)} (apt-cache policy: no candidate)", file=sys.stderr)
        return 1
    print(f"image: installing {' '.join(missing)} with apt-get", flush=True)
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
