"""The scrape jobs, alert rules and dashboard the charm ships, checked alone (pure functions).

What the queries and rules do is tested for real in tests/e2e/test_observability.py: a real
Prometheus scrapes the real server and answers every dashboard query; promtool tests every alert.
"""

from __future__ import annotations

import base64
import json
import lzma

import yaml

import observability

DASHBOARD = observability.DASHBOARDS / "onnx-model.json"
RULES = observability.ALERT_RULES / "onnx-model.rules"
TOPO = observability.topology("kubeflow", "8a6c-uuid", "scratch", "scratch/0", "onnx-model")


def test_the_dashboard_is_one_grafana_dashboard_on_the_cos_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"prometheusds", "juju_model", "juju_application"} <= names
    for panel in dashboard["panels"]:
        if panel["type"] == "row":  # a heading: no query of its own
            continue
        assert panel["datasource"]["uid"] == "${prometheusds}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # Every query follows the model and application dropdowns, or it shows other sites' data.
            assert '"$juju_model"' in target["expr"] and '"$juju_application"' in target["expr"], panel["title"]


def test_panels_do_not_overlap():
    cells = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        assert g["x"] + g["w"] <= 24
        cells |= area


def test_the_dashboard_covers_latency_throughput_detections_and_errors():
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"])
    for metric in ("defect_inference_seconds_bucket", "defect_images_total", "defect_detections_total",
                   "defect_errors_total"):  # fmt: skip
        assert metric in exprs


def test_alert_rules_are_complete_and_scoped():
    rules = observability.alert_rules(TOPO)
    source = yaml.safe_load(RULES.read_text())
    assert len(rules["groups"][0]["rules"]) == len(source["groups"][0]["rules"])
    for rule in rules["groups"][0]["rules"]:
        assert rule["for"] and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert 'juju_model="kubeflow",juju_model_uuid="8a6c-uuid",juju_application="scratch"' in rule["expr"]


def test_scrape_jobs_one_target_per_running_pod():
    pods = [
        {"metadata": {"name": "b", "labels": {"sha": "x"}}, "status": {"phase": "Running", "podIP": "10.0.0.2"}},
        {"metadata": {"name": "a", "labels": {"sha": "y"}}, "status": {"phase": "Running", "podIP": "10.0.0.1"}},
        {"metadata": {"name": "c"}, "status": {"phase": "Pending"}},
    ]
    (model_job,) = observability.scrape_jobs(pods, "sha")
    assert model_job["static_configs"] == [
        {"targets": ["10.0.0.1:6000"], "labels": {"pod": "a", "model_sha256": "y"}},
        {"targets": ["10.0.0.2:6000"], "labels": {"pod": "b", "model_sha256": "x"}},
    ]


def test_dashboard_payload_round_trips_and_is_stable():
    first, second = observability.dashboards("onnx-model"), observability.dashboards("onnx-model")
    assert first == second  # same uuid: no relation-changed storm on every update-status
    content = first["templates"]["file:onnx-model"]["content"]
    assert json.loads(lzma.decompress(base64.b64decode(content))) == json.loads(DASHBOARD.read_text())


def test_stable_and_canary_are_side_by_side_in_the_model_panels():
    """A canary's pods carry their own model_sha256 target label: these panels keep the two apart."""
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    for title in (
        "Throughput (images/s)",
        "Inference time (s)",
        "Detections per image",
        "Refused requests by reason (/s)",
    ):
        for target in panels[title]["targets"]:
            assert target["expr"].count("model_sha256") == target["expr"].count("sum by"), title
            assert "{{model_sha256}}" in target["legendFormat"], title
