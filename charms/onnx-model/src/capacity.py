"""How much CPU and memory a pod asks for and a node still has: pure arithmetic on API objects.

Used only to explain an unschedulable pod ("requests 1 CPU, 350m free"); the
scheduler itself decides. Its rule is followed closely enough for that: a node's
room is ``status.allocatable`` minus the requests of every pod bound to it that
has not finished (kubernetes pkg/scheduler/framework/types.go ``NodeInfo``
counts non-terminal pods; plugins/noderesources/fit.go compares requests with
allocatable and reports ``Insufficient <resource>``), a pod's request is the
sum of its containers' requests, or its largest init container's if that is more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

# apimachinery pkg/api/resource/quantity.go: binary (Ki..Ei) and decimal (n..E) suffixes.
_SUFFIX = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_FINISHED = ("Succeeded", "Failed")


def quantity(value: str | int | float) -> Decimal:
    """A Kubernetes quantity ('250m', '1', '3920000Ki', '1.5Gi', '129e6') as a number of base units."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from None
    return number * Decimal(_SUFFIX[match.group(2) or ""])


@dataclass(frozen=True)
class Amount:
    """CPU in millicores, memory in bytes."""

    cpu_m: int = 0
    memory: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.cpu_m + other.cpu_m, self.memory + other.memory)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.cpu_m - other.cpu_m, self.memory - other.memory)


def amount(resources: dict[str, Any] | None) -> Amount:
    resources = resources or {}
    cpu = quantity(resources["cpu"]) * 1000 if "cpu" in resources else Decimal(0)
    memory = quantity(resources["memory"]) if "memory" in resources else Decimal(0)
    return Amount(int(cpu.to_integral_value("ROUND_CEILING")), int(memory))


def container_requests(container: dict[str, Any]) -> Amount:
    """A container's requests; the API server copies limits into missing requests, so requests are enough."""
    return amount((container.get("resources") or {}).get("requests"))


def pod_requests(pod: dict[str, Any]) -> Amount:
    spec = pod.get("spec") or {}
    total = Amount()
    for container in spec.get("containers") or []:
        total += container_requests(container)
    for init in spec.get("initContainers") or []:
        req = container_requests(init)
        total = Amount(max(total.cpu_m, req.cpu_m), max(total.memory, req.memory))
    return total + amount(spec.get("overhead"))


def room(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, Amount]:
    """Each node's allocatable minus the requests of the unfinished pods bound to it."""
    free = {n["metadata"]["name"]: amount((n.get("status") or {}).get("allocatable")) for n in nodes}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in free and (pod.get("status") or {}).get("phase") not in _FINISHED:
            free[node] -= pod_requests(pod)
    return free


def cpu_text(millicores: int) -> str:
    """As a user writes it in `juju config ... cpu=`: '1', '1.5' or '350m'."""
    if millicores % 1000 == 0:
        return str(millicores // 1000)
    if millicores % 100 == 0 and millicores > 1000:
        return f"{millicores / 1000:g}"
    return f"{millicores}m"


def memory_text(size: int) -> str:
    """As a user writes it in `juju config ... memory=`: '1Gi', '1.5Gi' or '700Mi'."""
    if size >= 2**30 and size % (2**29) == 0:
        return f"{size / 2**30:g}Gi"
    return f"{max(size, 0) // 2**20}Mi"
