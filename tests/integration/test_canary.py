"""A canary on a real site: juju config, the weighted split at the gateway, promote and abort under load.

Needs what tests/integration/test_bundle.py sets up (scripts/bootstrap-edge-site: MicroK8s,
Istio and Seldon from the bundle, model `kubeflow`); deploys the onnx-model charm again if that
module removed it. Run: tox -e integration -- --model kubeflow
"""

from __future__ import annotations

import asyncio
import math
import sys

import pytest
import yaml
from test_bundle import APP, PHOTO, ROOT, VARIANTS, gateway_url, kubectl, predict

from support.steady_client import SteadyClient

sys.path.insert(0, str(ROOT / "scripts"))
from edge_site.roll import OK, abort, canary, promote  # noqa: E402

pytestmark = pytest.mark.asyncio
STABLE, CANARY = VARIANTS["int8"], VARIANTS["fp32"]
WEIGHT = 20


def uri(variant: dict) -> str:
    return f"file:///opt/models/scratch-detector/{variant['file']}"


def steady_client() -> SteadyClient:
    """A camera line calling through the gateway in a loop: which model answered, every failure."""
    url = gateway_url()
    return SteadyClient(lambda: predict(url), max_requests=50000)


@pytest.mark.abort_on_fail
async def test_the_charm_serves_the_stable_model(ops_test):
    assert ops_test.model_name == "kubeflow", "run with --model kubeflow"
    # The canary's weight takes effect at the first reconcile after its pods are Ready.
    await ops_test.model.set_config({"update-status-hook-interval": "30s"})
    if APP not in ops_test.model.applications:
        charm = await ops_test.build_charm(ROOT / "charms" / "onnx-model")
        options = yaml.safe_load((ROOT / "bundle.yaml").read_text())["applications"][APP]["options"]
        await ops_test.model.deploy(charm, application_name=APP, trust=True, config=options)
    await ops_test.model.applications[APP].set_config({"model-uri": uri(STABLE), "model-sha256": STABLE["sha256"]})
    await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=20 * 60)


async def test_a_canary_takes_its_share_of_the_requests(ops_test):
    outcome = await canary(
        ops_test.model, APP, uri(CANARY), CANARY["sha256"], WEIGHT, gateway_url(), PHOTO, timeout=900, poll=5
    )
    assert outcome.code == OK, outcome.message
    status = ops_test.model.applications[APP].units[0].workload_status_message
    assert status.endswith(f"sha {STABLE['sha256'][:7]}, canary {CANARY['sha256'][:7]} at {WEIGHT}%")
    shas = [predict(gateway_url()).json()["jsonData"]["model"]["sha256"] for _ in range(400)]
    share = shas.count(CANARY["sha256"])
    sd = math.sqrt(400 * WEIGHT / 100 * (1 - WEIGHT / 100))
    assert abs(share - 400 * WEIGHT / 100) <= 3.3 * sd, share  # 99.9% (normal approximation)
    assert set(shas) == {STABLE["sha256"], CANARY["sha256"]}


async def test_abort_under_load_drops_nothing(ops_test):
    with steady_client() as client:
        await asyncio.sleep(5)
        outcome = await abort(ops_test.model, APP, timeout=900, poll=5)
        await asyncio.sleep(20)
    assert outcome.code == OK, outcome.message
    assert client.failures == []
    assert client.shas[-1] == STABLE["sha256"]


async def test_promote_under_load_drops_nothing(ops_test):
    outcome = await canary(
        ops_test.model, APP, uri(CANARY), CANARY["sha256"], WEIGHT, gateway_url(), PHOTO, timeout=900, poll=5
    )
    assert outcome.code == OK, outcome.message
    with steady_client() as client:
        await asyncio.sleep(5)
        outcome = await promote(ops_test.model, APP, gateway_url(), PHOTO, timeout=900, poll=5)
        await asyncio.sleep(20)
    assert outcome.code == OK, outcome.message
    assert client.failures == []
    assert set(client.shas[-50:]) == {CANARY["sha256"]}
    sdeps = yaml.safe_load(kubectl("-n", "kubeflow", "get", "sdep", "-o", "yaml"))["items"]
    assert f"{APP}-canary" not in {s["metadata"]["name"] for s in sdeps}


async def test_a_tampered_canary_never_takes_a_request(ops_test):
    app = ops_test.model.applications[APP]
    await app.set_config(
        {"canary-model-uri": uri(STABLE), "canary-model-sha256": CANARY["sha256"], "canary-weight": "50"}
    )
    await ops_test.model.block_until(lambda: "not Ready" in app.units[0].workload_status_message, timeout=600)
    shas = {predict(gateway_url()).json()["jsonData"]["model"]["sha256"] for _ in range(100)}
    assert shas == {CANARY["sha256"]}  # the promoted model answers all; the wrong-sha canary none
    assert (await abort(ops_test.model, APP, timeout=900, poll=5)).code == OK
