"""A shadow on a real site: juju config, its own path at the Istio gateway, a tampered one never answers.

Needs what tests/integration/test_bundle.py sets up (scripts/bootstrap-edge-site); the scratch
application serves the int8 model there, so the fp32 variant is the shadow. Each test leaves the
application as it found it (test_canary.stable_site, support.app_state.kept).
Run: tox -e integration -- --model kubeflow
"""

from __future__ import annotations

import pytest
import requests
from test_bundle import APP, BODY, VARIANTS, gateway_url, kubectl, predict
from test_canary import STABLE, stable_site, uri

pytestmark = pytest.mark.asyncio
SHADOW = VARIANTS["fp32"]  # the site serves int8 (STABLE)


def ask_shadow(url: str) -> requests.Response:
    return requests.post(
        f"{url}/model/{APP}/shadow/api/v0.1/predictions",
        data=BODY,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


async def test_a_shadow_answers_on_its_own_path_and_the_line_keeps_the_stable_model(ops_test):
    async with stable_site(ops_test) as app:
        await app.set_config({"shadow-model-uri": uri(SHADOW), "shadow-model-sha256": SHADOW["sha256"]})
        ready = f"shadow {SHADOW['sha256'][:7]} ready at /model/{APP}/shadow/"
        await ops_test.model.block_until(
            lambda: ready in app.units[0].workload_status_message, timeout=900, wait_period=5
        )
        assert app.units[0].workload_status == "active"
        assert f"scripts/shadow-report {APP}" in app.units[0].workload_status_message
        url = gateway_url()
        assert {ask_shadow(url).json()["jsonData"]["model"]["sha256"] for _ in range(20)} == {SHADOW["sha256"]}
        assert {predict(url).json()["jsonData"]["model"]["sha256"] for _ in range(100)} == {STABLE["sha256"]}
    sdeps = kubectl("-n", "kubeflow", "get", "sdep", "-o", "name")
    assert f"{APP}-shadow" not in sdeps  # reset options: pruned


async def test_a_tampered_shadow_never_answers(ops_test):
    async with stable_site(ops_test) as app:
        # the int8 file under the fp32 digest: its server refuses it, its pods never get Ready
        await app.set_config({"shadow-model-uri": uri(STABLE), "shadow-model-sha256": SHADOW["sha256"]})
        await ops_test.model.block_until(
            lambda: "sha256 mismatch" in app.units[0].workload_status_message, timeout=900, wait_period=5
        )
        message = app.units[0].workload_status_message
        assert app.units[0].workload_status == "blocked"
        assert f"shadow {SHADOW['sha256'][:7]} refused, the line is unaffected" in message
        url = gateway_url()
        assert all(ask_shadow(url).status_code != 200 for _ in range(10))
        assert {predict(url).json()["jsonData"]["model"]["sha256"] for _ in range(50)} == {STABLE["sha256"]}
