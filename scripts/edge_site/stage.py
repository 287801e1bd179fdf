"""What `juju deploy` reads, staged where the strictly confined juju snap can read it.

The Juju 3 client is a strictly confined snap. Outside its own folders it reads a user's files
through snapd's `home` interface, whose AppArmor rules allow only files the calling user owns,
under that user's home, and not in a top-level hidden folder or ~/snap (snapcore/snapd
interfaces/builtin/home.go: `owner @{HOME}/[^s.]** rwkl`, ...; @{HOME} is /home/*/ or /root/,
interfaces/apparmor/backend.go including AppArmor's tunables/home). A checkout in /opt, in
~/.cache, or a charm that root packed, it cannot open. So bootstrap copies the bundle, the
overlays and every local charm they name into ~USER/edge-site-deploy, points the copies at each
other by absolute path, and gives them to that user (`chown -R USER:`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .shell import StepFailed

STAGE_DIR = "edge-site-deploy"  # under the user's home: not hidden, not ~/snap


@dataclass
class Stage:
    """The staged files (path -> content) and the bundle and overlays to pass to `juju deploy`."""

    root: Path
    files: dict[Path, bytes] = field(default_factory=dict)
    bundle: Path | None = None
    overlays: list[Path] = field(default_factory=list)

    def current(self) -> bool:
        """Every staged file is on disk with its content."""
        return all(p.is_file() and p.read_bytes() == data for p, data in self.files.items())

    def write(self) -> None:
        """Replace the stage folder with these files (it holds nothing else of anyone's)."""
        shutil.rmtree(self.root, ignore_errors=True)
        for path, data in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def local_charm(spec: dict[str, Any] | None) -> str | None:
    """A bundle application's charm when it is a local path (Juju: one that starts with . or /)."""
    charm = str((spec or {}).get("charm") or "")
    return charm if charm.startswith((".", "/")) else None


def plan(bundle: Path, overlays: list[Path], root: Path, charm_sources: dict[Path, Path]) -> Stage:
    """The stage for ``bundle`` and ``overlays``; ``charm_sources`` maps a path a bundle names to
    where that charm really is (the packed charm, when bootstrap packs it elsewhere)."""
    stage = Stage(root)

    def copy(source: Path, dest: Path) -> None:
        data = yaml.safe_load(source.read_text()) or {}
        for app, spec in (data.get("applications") or {}).items():
            path = local_charm(spec)
            if path is None:
                continue
            charm = (source.parent / path).resolve()
            charm = charm_sources.get(charm, charm)
            if not charm.is_file():
                raise StepFailed(f"{source} deploys {app} from {path}, but {charm} does not exist")
            target = root / "charms" / charm.name
            content = charm.read_bytes()
            if stage.files.setdefault(target, content) != content:
                raise StepFailed(f"two different charms are named {charm.name}; rename one")
            spec["charm"] = str(target)
        stage.files[dest] = yaml.safe_dump(data, sort_keys=False).encode()

    stage.bundle = root / bundle.name
    copy(bundle, stage.bundle)
    for i, overlay in enumerate(overlays, start=1):
        dest = root / "overlays" / f"{i}-{overlay.name}"
        copy(overlay, dest)
        stage.overlays.append(dest)
    return stage
