"""The snaps a site is built from, checked as installed: the right release and confinement, or the fix.

`snap list NAME` prints a header and one row: Name, Version, Rev, Tracking, Publisher, Notes, where
Notes lists "classic" for a classically confined snap (snapcore/snapd cmd/snap/cmd_list.go and
cmd/snap/notes.go). The Version column is the check: Tracking is "-" for a snap installed from a
file, as on an air-gapped site (cmd_list.go fmtChannel).
"""

from __future__ import annotations

from dataclasses import dataclass

from .shell import CHARMCRAFT_CHANNEL, JUJU_CHANNEL, MICROK8S_CHANNEL, run


@dataclass(frozen=True)
class Wanted:
    """What the site needs of one snap: the channel bootstrap installs and what it must report."""

    name: str
    channel: str
    version: str  # the release `snap list` must show, as a prefix of Version (a leading "v" ignored)
    classic: bool | None  # required confinement; None: either
    why: str


WANTED = {
    w.name: w
    for w in (
        # MicroK8s' Version is the Kubernetes release, v1.28.x on track 1.28 (canonical/microk8s 1.28
        # build-scripts/components/kubernetes/version.sh); the 1.28 track is classic, 1.28-strict
        # strict (snap/snapcraft.yaml on each branch).
        Wanted(
            "microk8s",
            MICROK8S_CHANNEL,
            "1.28.",
            True,
            "the Charmed Kubeflow 1.8 set runs on classic MicroK8s 1.28, and Juju reaches it with "
            "`juju add-k8s` (README: Versions)",
        ),
        Wanted("juju", JUJU_CHANNEL, "3.6.", None, "the bundle and the charm assume Juju 3.6"),
        Wanted(
            "charmcraft", CHARMCRAFT_CHANNEL, "3.", True, "`base: ubuntu@24.04` in charmcraft.yaml needs charmcraft 3"
        ),
    )
}


@dataclass(frozen=True)
class Installed:
    name: str
    version: str
    tracking: str
    notes: tuple[str, ...]

    @property
    def classic(self) -> bool:
        return "classic" in self.notes

    def describe(self) -> str:
        confinement = "classic" if self.classic else "strict"
        return f"{self.name} {self.version} ({confinement}, tracking {self.tracking})"


def installed(name: str) -> Installed | None:
    """The installed snap as `snap list` reports it, or None when it is not installed."""
    out = run("snap", "list", name, check=False)
    if out.returncode != 0:
        return None
    for line in out.stdout.splitlines()[1:]:  # the first line is the header
        fields = line.split()
        if fields[:1] == [name] and len(fields) >= 5:
            notes = tuple(fields[5].split(",")) if len(fields) > 5 else ()
            return Installed(name, fields[1], fields[3], notes)
    return None


def problem(wanted: Wanted, snap: Installed) -> str | None:
    """Why the installed snap is not the one the site needs, or None."""
    if not snap.version.removeprefix("v").startswith(wanted.version):
        return f"{snap.describe()} is installed; the site needs {wanted.name} {wanted.version}x: {wanted.why}"
    if wanted.classic is not None and snap.classic != wanted.classic:
        needed = "classic" if wanted.classic else "strict"
        return f"{snap.describe()} is installed; the site needs the {needed} {wanted.name}: {wanted.why}"
    return None


def fix(wanted: Wanted) -> tuple[str, list[str] | None]:
    """The command that puts the wanted snap in place of the wrong one, and the one bootstrap may
    run itself (--refresh-snaps), if any.

    MicroK8s is never replaced for the user: another release or confinement is another cluster,
    and removing the snap deletes that cluster with its workloads. The Juju client and charmcraft
    hold nothing of the site's and are refreshed in place.
    """
    if wanted.name == "microk8s":
        flags = " --classic" if wanted.classic else ""
        return (
            f"sudo snap remove --purge microk8s && sudo snap install microk8s{flags} --channel={wanted.channel}"
            " (this deletes the cluster and everything running on it)",
            None,
        )
    refresh = ["snap", "refresh", wanted.name, f"--channel={wanted.channel}"]
    return "sudo " + " ".join(refresh), refresh
