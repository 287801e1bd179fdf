"""What the whole edge site asks the scheduler for at a rollout peak: render() + the upstream table.

The table (tests/data/site-requests.yaml) records every non-model pod's requests with the
upstream file that decides them; the model pods are what render() makes of the bundle's options,
plus Seldon's executor container where the predictor does not opt out of it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "data" / "site-requests.yaml"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "charms" / "onnx-model" / "src"))

from local_site import bundle as site_bundle  # noqa: E402
from manifests import NO_ENGINE, render  # noqa: E402
from model_config import cpu_millis, memory_bytes  # noqa: E402

MI = 2**20


@dataclass(frozen=True)
class Requests:
    """CPU in millicores, memory in MiB."""

    cpu_m: int
    memory_mi: float

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.cpu_m + other.cpu_m, self.memory_mi + other.memory_mi)

    def __mul__(self, n: int) -> Requests:
        return Requests(self.cpu_m * n, self.memory_mi * n)

    def fits(self, box: Requests) -> bool:
        return self.cpu_m <= box.cpu_m and self.memory_mi <= box.memory_mi


def quantity(cpu: str, memory: str) -> Requests:
    return Requests(cpu_millis(str(cpu)), memory_bytes(_binary(str(memory))) / MI)


def _binary(memory: str) -> str:
    """3.8Gi -> bytes as a whole number (the config parser takes integers only)."""
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20)):
        if memory.endswith(unit) and "." in memory:
            return str(round(float(memory[: -len(unit)]) * factor))
    return memory


def table() -> dict[str, Any]:
    return yaml.safe_load(TABLE.read_text())


def eviction_reserve_mi() -> float:
    """What the kubelet keeps out of allocatable memory: MicroK8s' hard eviction threshold."""
    return quantity("0", table()["node"]["eviction_hard_memory"]).memory_mi


def allocatable(cpu: str, memtotal: str) -> Requests:
    """A node's allocatable CPU and memory under MicroK8s 1.28's kubelet (no reservations)."""
    node = quantity(cpu, memtotal)
    return Requests(node.cpu_m, node.memory_mi - eviction_reserve_mi())


def reference_box() -> Requests:
    """What the scheduler may place on the reference box."""
    box = table()["reference_box"]
    return allocatable(box["cpu"], box["memtotal"])


def platform() -> Requests:
    """MicroK8s, Istio and Juju's own pods: everything but the model applications."""
    total = Requests(0, 0)
    for pod in table()["pods"]:
        total += quantity(pod["cpu"], pod["memory"]) * int(pod["count"])
    return total


def charm_pod() -> Requests:
    """The Juju charm pod that each onnx-model application adds beside its model pods."""
    pod = table()["charm_pod"]
    return quantity(pod["cpu"], pod["memory"])


def model_pod(sdep: dict[str, Any]) -> Requests:
    """One pod of a rendered SeldonDeployment, as scheduled: its containers + the executor if any."""
    (predictor,) = sdep["spec"]["predictors"]
    total = Requests(0, 0)
    for container in predictor["componentSpecs"][0]["spec"]["containers"]:
        req = container["resources"]["requests"]
        total += quantity(req.get("cpu", "0"), req.get("memory", "0"))
    if (predictor.get("annotations") or {}).get(NO_ENGINE, "").lower() != "true":
        executor = table()["executor"]
        total += quantity(executor["cpu"], executor["memory"])
    return total


def rollout_peak(sdeps: list[dict[str, Any]], apps: int | None = None) -> Requests:
    """All models' pods, plus the surge pods of the one whose rollout adds the most.

    ``apps``: the number of onnx-model applications (one charm pod each); by default one per
    SeldonDeployment. A canary or a shadow is a SeldonDeployment of its application's own.
    """
    surge_percent = table()["rollout_max_surge_percent"]
    total, largest_surge = Requests(0, 0), Requests(0, 0)
    for sdep in sdeps:
        replicas = int(sdep["spec"]["predictors"][0]["replicas"])
        pod = model_pod(sdep)
        total += pod * replicas
        surge = pod * math.ceil(replicas * surge_percent / 100)
        if (surge.cpu_m, surge.memory_mi) > (largest_surge.cpu_m, largest_surge.memory_mi):
            largest_surge = surge
    return platform() + charm_pod() * (len(sdeps) if apps is None else apps) + total + largest_surge


def bundle_models(overlays: list[Path] = ()) -> list[dict[str, Any]]:
    """The SeldonDeployments the bundle (+ overlays) deploys, with the options it sets."""
    return [
        render(app.name, "any-model", {**app.options, "gateway": "any-model/gw"})[0]
        for app in site_bundle.load(ROOT / "bundle.yaml", list(overlays))
    ]


def bundle_apps(overlays: list[Path] = (), sets: list[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """Each application's SeldonDeployments (stable, and its canary or shadow), ``sets`` as `juju config`."""
    return {
        app.name: render(app.name, "any-model", {**app.options, "gateway": "any-model/gw"})[:-1]
        for app in site_bundle.load(ROOT / "bundle.yaml", list(overlays), list(sets))
    }


def smallest_box(models: int, pod: Requests) -> Requests:
    """Requests at a rollout peak of ``models`` identical one-replica model applications."""
    return platform() + (charm_pod() + pod) * models + pod


def memtotal_needed_mi(requests: Requests) -> float:
    """The MemTotal a node needs for ``requests`` to fit its allocatable memory."""
    return requests.memory_mi + eviction_reserve_mi()
