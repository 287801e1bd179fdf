"""The whole bundle on a real MicroK8s: deploy, predict through the gateway, roll, remove.

Run on a host set up by `sudo scripts/bootstrap-edge-site`, as the user who ran it:
    tox -e integration -- --model kubeflow
(the gateway lives in the `kubeflow` namespace, so the Juju model must be named kubeflow).
After the first test deploys the bundle, each test leaves the model as it found it: options are
changed inside `kept()` (tests/support/app_state.py), which puts them back and waits until the
unit serves as before; what a test adds it removes, what it removes it deploys again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from support.app_state import kept
from support.steady_client import SteadyClient

ROOT = Path(__file__).resolve().parents[2]
APP = "scratch"
CARD = yaml.safe_load((ROOT / "models/scratch-detector/model.yaml").read_text())
VARIANTS = {v["name"]: v for v in CARD["variants"]}
PHOTO = ROOT / "tests/data/metal-tags/images/image-2020-04-22-10-51-51-85-cropped-right-bottom.jpg"
BODY = json.dumps({"binData": base64.b64encode(PHOTO.read_bytes()).decode()})
pytestmark = pytest.mark.asyncio


def kubectl(*args: str) -> str:
    cmd = ["microk8s", "kubectl"] if shutil.which("microk8s") else ["kubectl"]
    return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout


def gateway_url() -> str:
    svc = json.loads(kubectl("-n", "kubeflow", "get", "svc", "istio-ingressgateway-workload", "-o", "json"))
    port = next(p["nodePort"] for p in svc["spec"]["ports"] if p["port"] == 80)
    return f"http://127.0.0.1:{port}"


def predict(url: str) -> requests.Response:
    return requests.post(
        f"{url}/model/{APP}/api/v0.1/predictions", data=BODY, headers={"Content-Type": "application/json"}, timeout=30
    )


def steady_client() -> SteadyClient:
    """A camera line calling through the gateway in a loop: which model answered, every failure."""
    url = gateway_url()
    return SteadyClient(lambda: predict(url), max_requests=50000)


async def in_thread(wait, *args):
    """A blocking wait (the client's) without stalling libjuju's connection on this event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, wait, *args)


def serving_sha(model, sha: str) -> bool:
    unit = model.applications[APP].units[0]
    return unit.workload_status == "active" and f"sha {sha[:7]}" in unit.workload_status_message


async def deploy_scratch(model) -> None:
    """The scratch application as the bundle deploys it, serving int8 (libjuju uploads the
    packed charm itself), related to istio-pilot's gateway-info; waits until it serves."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from local_site import bundle as site_bundle

    (app,) = [a for a in site_bundle.load(ROOT / "bundle.yaml", []) if a.name == APP]
    await model.deploy(
        str(ROOT / "build" / "onnx-model.charm"),
        application_name=APP,
        trust=True,
        config=dict(app.options),
    )
    await model.integrate(f"{APP}:gateway-info", "istio-pilot:gateway-info")
    await model.wait_for_idle(apps=[APP], status="active", timeout=20 * 60)


@pytest.mark.abort_on_fail
async def test_deploy_the_bundle(ops_test):
    assert ops_test.model_name == "kubeflow", "run with --model kubeflow"
    # build/onnx-model.charm and the server image come from scripts/bootstrap-edge-site (conftest).
    # The bundle serves int8, so that rolling to fp32 below is a real change of model.
    await ops_test.juju("deploy", str(ROOT / "bundle.yaml"), "--trust", check=True)
    await ops_test.model.wait_for_idle(status="active", timeout=45 * 60, idle_period=30, raise_on_error=False)
    status = ops_test.model.applications[APP].units[0].workload_status_message
    assert status == f"serving /model/{APP}/ sha {VARIANTS['int8']['sha256'][:7]}"


async def test_prediction_through_the_gateway(ops_test):
    resp = predict(gateway_url())
    assert resp.status_code == 200, resp.text
    body = resp.json()["jsonData"]
    assert body["model"]["sha256"] == VARIANTS["int8"]["sha256"]
    assert body["detections"]


async def test_seldon_rolls_with_max_unavailable_zero(ops_test):
    deploys = json.loads(kubectl("-n", "kubeflow", "get", "deploy", "-l", f"seldon-deployment-id={APP}", "-o", "json"))
    (dep,) = deploys["items"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] in (0, "0", "0%")


async def test_roll_with_juju_config_loses_no_request(ops_test):
    fp32 = VARIANTS["fp32"]
    async with kept(ops_test.model.applications[APP]) as app:
        with steady_client() as client:
            await app.set_config(
                {"model-uri": f"file:///opt/models/scratch-detector/{fp32['file']}", "model-sha256": fp32["sha256"]}
            )
            await ops_test.model.block_until(
                lambda: serving_sha(ops_test.model, fp32["sha256"]), timeout=15 * 60, wait_period=5
            )
            # The old pods leave after the new ones are Ready: keep calling through that.
            await in_thread(client.wait_for_run, fp32["sha256"], 200, 10 * 60)
    assert client.failures == []


async def test_tampered_model_never_serves(ops_test):
    serving = predict(gateway_url()).json()["jsonData"]["model"]["sha256"]
    async with kept(ops_test.model.applications[APP]) as app:
        await app.set_config({"model-sha256": "0" * 64})
        await ops_test.model.block_until(
            lambda: "still serving" in app.units[0].workload_status_message, timeout=600, wait_period=5
        )
        assert predict(gateway_url()).json()["jsonData"]["model"]["sha256"] == serving


async def test_every_model_pod_is_scraped_through_metrics_endpoint(ops_test):
    """A Grafana Agent related to the charm gets a target per model pod, and each target answers."""
    await ops_test.model.deploy("grafana-agent-k8s", application_name="grafana-agent", channel="latest/stable")
    try:
        await ops_test.model.integrate(f"{APP}:metrics-endpoint", "grafana-agent:metrics-endpoint")
        await ops_test.model.wait_for_idle(apps=[APP], status="active", timeout=600)
        pods = json.loads(kubectl("-n", "kubeflow", "get", "pods", "-l", f"seldon-deployment-id={APP}", "-o", "json"))
        ips = {p["status"]["podIP"] for p in pods["items"] if p["status"].get("phase") == "Running"}
        _, out, _ = await ops_test.juju("show-unit", "grafana-agent/0", "--format", "json", check=True)
        relations = json.loads(out)["grafana-agent/0"]["relation-info"]
        (scrape,) = [r for r in relations if r["endpoint"] == "metrics-endpoint"]
        jobs = json.loads(scrape["application-data"]["scrape_jobs"])
        (server_job,) = [j for j in jobs if j["job_name"] == "onnx-model-server"]
        targets = {t for sc in server_job["static_configs"] for t in sc["targets"]}
        assert targets == {f"{ip}:6000" for ip in ips}
        for target in targets:  # the node reaches pod IPs directly
            metrics = requests.get(f"http://{target}/prometheus", timeout=10).text
            assert "defect_images_total" in metrics
    finally:
        await ops_test.model.remove_application("grafana-agent", block_until_done=True)


async def test_remove_leaves_nothing_behind(ops_test):
    await ops_test.model.remove_application(APP, block_until_done=True)
    try:
        for kind in ("seldondeployments", "virtualservices", "secrets"):
            selector = f"app.juju.is/created-by={APP}"
            left = json.loads(kubectl("-n", "kubeflow", "get", kind, "-l", selector, "-o", "json"))
            assert left["items"] == [], kind
    finally:
        await deploy_scratch(ops_test.model)  # as the bundle had it, for whatever runs next
