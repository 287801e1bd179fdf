"""Does the site fit its box? Scheduler requests at a rollout peak, from render() and the upstream table.

On 2 cores a pod whose requests do not fit stays Pending forever ("Insufficient cpu"), so
the sum of requests, not use, decides whether a model comes up at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from manifests import NO_ENGINE
from support import site_requests as sr

ROOT = Path(__file__).resolve().parents[2]
SECOND = ROOT / "overlays" / "second-model.yaml"


@pytest.mark.parametrize("overlays", [[], [SECOND]], ids=["one model", "two models"])
def test_the_bundle_fits_the_reference_box_at_a_rollout_peak(overlays):
    sdeps = sr.bundle_models(overlays)
    assert len(sdeps) == 1 + len(overlays)
    peak, box = sr.rollout_peak(sdeps), sr.reference_box()
    assert peak.fits(box), f"{peak} exceeds the reference box {box}"


def test_every_model_pod_runs_without_the_executor():
    for sdep in sr.bundle_models([SECOND]):
        assert sdep["spec"]["predictors"][0]["annotations"][NO_ENGINE] == "true"


def test_a_third_model_does_not_fit_the_reference_box():
    """README: the reference box takes two models with the defaults; memory runs out first."""
    (sdep,) = sr.bundle_models()
    three = sr.rollout_peak([sdep, sdep, sdep])
    box = sr.reference_box()
    assert three.cpu_m <= box.cpu_m and three.memory_mi > box.memory_mi


def test_juju_asks_64mi_for_every_charm_pod():
    """Juju >= 3.6.9 requests 64Mi for each charm container: the controller's, the three Charmhub
    applications', and one per onnx-model application."""
    juju = [pod for pod in sr.table()["pods"] if "Juju" in pod["name"] or "charm pods" in pod["name"]]
    assert sum(sr.quantity(p["cpu"], p["memory"]).memory_mi * p["count"] for p in juju) == 4 * 64
    one, two = sr.rollout_peak(sr.bundle_models()), sr.rollout_peak(sr.bundle_models([SECOND]))
    (sdep,) = sr.bundle_models()
    assert two.memory_mi - one.memory_mi == sr.model_pod(sdep).memory_mi + 64


def test_allocatable_memory_is_memtotal_less_microk8s_eviction_threshold():
    assert sr.allocatable("2", "4096Mi") == sr.Requests(2000, 4096 - 100)


def test_the_previous_defaults_did_not_fit():
    """What the site asked for before: a 1 CPU / 1Gi server and Seldon's executor in each pod."""
    (sdep,) = sr.bundle_models()
    predictor = sdep["spec"]["predictors"][0]
    del predictor["annotations"][NO_ENGINE]
    (container,) = predictor["componentSpecs"][0]["spec"]["containers"]
    container["resources"]["requests"] = {"cpu": "1", "memory": "1Gi"}
    peak = sr.rollout_peak([sdep])
    # issue 11 counted 3860m / 5230 MiB ("about 3.9 CPU and 5.1 GiB"), without Juju's 320Mi
    assert (peak.cpu_m, peak.memory_mi) == (3860, 5550)
    assert not peak.fits(sr.reference_box())


def test_a_rollout_surges_one_pod_per_four_replicas():
    (sdep,) = sr.bundle_models()
    pod = sr.model_pod(sdep)
    sdep["spec"]["predictors"][0]["replicas"] = 5
    assert sr.rollout_peak([sdep]) == sr.platform() + sr.charm_pod() + pod * (5 + 2)


def test_every_table_entry_names_its_source():
    table = sr.table()
    for entry in [*table["pods"], table["executor"], table["charm_pod"], table["node"]]:
        assert re.search(r"[\w-]+/[\w.-]+@[\w./-]+ \S+", entry["source"]), entry


def test_the_readme_states_the_smallest_box_the_table_gives():
    """README "Sizing": the rows of its table are this computation, to the MiB."""
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) models? \| (\d+)m \| (\d+) MiB \| (\d+) MiB \|", readme, flags=re.M)
    assert [int(n) for n, *_ in rows] == [1, 2, 3, 4]
    (sdep,) = sr.bundle_models()
    pod = sr.model_pod(sdep)
    for n, cpu, memory, memtotal in rows:
        box = sr.smallest_box(int(n), pod)
        needed = round(sr.memtotal_needed_mi(box))
        assert (int(cpu), int(memory), int(memtotal)) == (box.cpu_m, round(box.memory_mi), needed), f"row {n}"
    platform = sr.platform()
    assert f"{platform.cpu_m}m and {round(platform.memory_mi)} MiB" in readme
    per_model = sr.charm_pod() + pod
    assert f"{per_model.cpu_m}m and {round(per_model.memory_mi)} MiB per model" in readme


FP32 = yaml.safe_load((ROOT / "overlays/fp32.yaml").read_text())["applications"]["scratch"]["options"]
SHADOW_SETS = [  # the fp32 variant shadowing the bundle's int8
    f"scratch.shadow-model-uri={FP32['model-uri']}",
    f"scratch.shadow-model-sha256={FP32['model-sha256']}",
]
CANARY_SETS = [
    "scratch.canary-model-uri=https://models.example/v6.onnx",
    f"scratch.canary-model-sha256={'6' * 64}",
    "scratch.canary-weight=10",
]


def peak_of(apps: dict[str, list[dict]]) -> sr.Requests:
    return sr.rollout_peak([sdep for sdeps in apps.values() for sdep in sdeps], apps=len(apps))


def test_a_shadow_is_one_more_model_pod_and_fits_beside_one_model():
    """README "Sizing": a shadow adds its model pod (same requests as the stable one), no charm pod."""
    plain, shadowed = sr.bundle_apps(), sr.bundle_apps(sets=SHADOW_SETS)
    stable, shadow = shadowed["scratch"]
    assert shadow["metadata"]["name"] == "scratch-shadow"
    assert sr.model_pod(shadow) == sr.model_pod(stable)
    assert peak_of(shadowed) == peak_of(plain) + sr.model_pod(shadow)
    assert peak_of(shadowed).fits(sr.reference_box())


def test_beside_a_second_model_a_shadow_does_not_fit_the_reference_box():
    shadowed = sr.bundle_apps([SECOND], SHADOW_SETS)
    peak, box = peak_of(shadowed), sr.reference_box()
    assert len(shadowed) == 2 and peak.cpu_m <= box.cpu_m and peak.memory_mi > box.memory_mi


def test_the_readme_states_what_a_shadow_costs():
    """The numbers of README "Sizing" on shadows, and of the shadow-beside-a-canary refusal."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    box = sr.reference_box()
    one = peak_of(sr.bundle_apps(sets=SHADOW_SETS))
    two = peak_of(sr.bundle_apps([SECOND], SHADOW_SETS))
    # What a canary and a shadow together would ask (render() refuses it, so summed by hand).
    (stable,) = sr.bundle_apps()["scratch"]
    both = sr.rollout_peak([stable, stable, stable], apps=1)
    assert f"one model with its shadow asks {one.cpu_m}m and {round(one.memory_mi)} MiB" in readme
    assert f"beside a second model, {two.cpu_m}m and {round(two.memory_mi)} MiB" in readme
    assert f"{round(two.memory_mi - box.memory_mi)} MiB more than the reference box" in readme
    assert f"A canary and a shadow together would ask {round(both.memory_mi)} MiB" in readme
    assert f"leaving {round(box.memory_mi - both.memory_mi)} MiB" in readme
    # The refusal's "barely" rests on this.
    with pytest.raises(ValueError, match="shadow-model-uri: cannot run beside a canary"):
        sr.bundle_apps(sets=SHADOW_SETS + CANARY_SETS)
