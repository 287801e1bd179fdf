"""A canary on a real site: juju config, the weighted split at the gateway, promote and abort under load.

Needs what tests/integration/test_bundle.py sets up (scripts/bootstrap-edge-site: MicroK8s,
Istio and Seldon from the bundle, model `kubeflow`, the scratch application serving the int8
model); deploys the scratch application again if it is missing. Each test starts from the
stable model without a canary and leaves it so: its changes are made inside `kept()`, and the
faster update-status it needs is put back too. Run: tox -e integration -- --model kubeflow
"""

from __future__ import annotations

import math
import sys
from contextlib import asynccontextmanager

import pytest
import yaml
from test_bundle import (
    APP,
    PHOTO,
    ROOT,
    VARIANTS,
    deploy_scratch,
    gateway_url,
    in_thread,
    kubectl,
    predict,
    steady_client,
)

from support.app_state import kept

sys.path.insert(0, str(ROOT / "scripts"))
from edge_site.roll import OK, abort, canary, promote  # noqa: E402

pytestmark = pytest.mark.asyncio
STABLE, CANARY = VARIANTS["int8"], VARIANTS["fp32"]
WEIGHT = 20


def uri(variant: dict) -> str:
    return f"file:///opt/models/scratch-detector/{variant['file']}"


@asynccontextmanager
async def stable_site(ops_test):
    """The scratch application serving the stable model, update-status every 30 s (a canary's
    weight takes effect at the first reconcile after its pods are Ready); all put back after."""
    assert ops_test.model_name == "kubeflow", "run with --model kubeflow"
    if APP not in ops_test.model.applications:
        await deploy_scratch(ops_test.model)
    model = ops_test.model
    interval = (await model.get_config())["update-status-hook-interval"].value
    await model.set_config({"update-status-hook-interval": "30s"})
    try:
        async with kept(model.applications[APP]) as app:
            assert app.units[0].workload_status_message.endswith(f"sha {STABLE['sha256'][:7]}")
            yield app
    finally:
        await model.set_config({"update-status-hook-interval": interval})


async def test_a_canary_takes_its_share_of_the_requests(ops_test):
    async with stable_site(ops_test) as app:
        outcome = await canary(
            ops_test.model, APP, uri(CANARY), CANARY["sha256"], WEIGHT, gateway_url(), PHOTO, timeout=900, poll=5
        )
        assert outcome.code == OK, outcome.message
        status = app.units[0].workload_status_message
        assert status.endswith(f"sha {STABLE['sha256'][:7]}, canary {CANARY['sha256'][:7]} at {WEIGHT}%")
        shas = [predict(gateway_url()).json()["jsonData"]["model"]["sha256"] for _ in range(400)]
    share = shas.count(CANARY["sha256"])
    sd = math.sqrt(400 * WEIGHT / 100 * (1 - WEIGHT / 100))
    assert abs(share - 400 * WEIGHT / 100) <= 3.3 * sd, share  # 99.9% (normal approximation)
    assert set(shas) == {STABLE["sha256"], CANARY["sha256"]}


async def test_abort_under_load_drops_nothing(ops_test):
    async with stable_site(ops_test):
        outcome = await canary(
            ops_test.model, APP, uri(CANARY), CANARY["sha256"], WEIGHT, gateway_url(), PHOTO, timeout=900, poll=5
        )
        assert outcome.code == OK, outcome.message
        with steady_client() as client:
            outcome = await abort(ops_test.model, APP, timeout=900, poll=5)
            await in_thread(client.wait_for_run, STABLE["sha256"], 200, 600)
    assert outcome.code == OK, outcome.message
    assert client.failures == []


async def test_promote_under_load_drops_nothing(ops_test):
    async with stable_site(ops_test):
        outcome = await canary(
            ops_test.model, APP, uri(CANARY), CANARY["sha256"], WEIGHT, gateway_url(), PHOTO, timeout=900, poll=5
        )
        assert outcome.code == OK, outcome.message
        with steady_client() as client:
            outcome = await promote(ops_test.model, APP, gateway_url(), PHOTO, timeout=900, poll=5)
            await in_thread(client.wait_for_run, CANARY["sha256"], 200, 600)
        assert outcome.code == OK, outcome.message
        sdeps = yaml.safe_load(kubectl("-n", "kubeflow", "get", "sdep", "-o", "yaml"))["items"]
        assert f"{APP}-canary" not in {s["metadata"]["name"] for s in sdeps}
    assert client.failures == []


async def test_a_tampered_canary_never_takes_a_request(ops_test):
    async with stable_site(ops_test) as app:
        await app.set_config(
            {"canary-model-uri": uri(STABLE), "canary-model-sha256": CANARY["sha256"], "canary-weight": "50"}
        )
        await ops_test.model.block_until(
            lambda: "not Ready" in app.units[0].workload_status_message, timeout=600, wait_period=5
        )
        shas = {predict(gateway_url()).json()["jsonData"]["model"]["sha256"] for _ in range(100)}
        assert shas == {STABLE["sha256"]}  # the stable model answers all; the wrong-sha canary none
