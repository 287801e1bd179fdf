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
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", []))
    for metric in ("defect_inference_seconds_bucket", "defect_images_total", "defect_detections_total",
                   "defect_errors_total"):  # fmt: skip
        assert metric in exprs


def test_the_shadow_row_plots_the_watchers_figures_from_its_scrape_job():
    """The watcher's series carry no Juju topology of their own: the queries select its job
    (README, Observability: a static job ``defect-inspection``), as well as the dropdowns."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    (row,) = [p for p in panels if p["type"] == "row"]
    shadow = [p for p in panels if p["gridPos"]["y"] > row["gridPos"]["y"]]
    exprs = [t["expr"] for p in shadow for t in p["targets"]]
    for metric in ("defect_shadow_agreement_ratio", "defect_shadow_agreement_ci95_low",
                   "defect_shadow_agreement_ci95_high", "defect_shadow_disagreements_total",
                   "defect_shadow_failures_total", "defect_shadow_dropped_total",
                   "defect_shadow_request_seconds_bucket"):  # fmt: skip
        assert any(metric in e for e in exprs), metric
    assert all('job=~".*defect-inspection.*"' in e for e in exprs)
    assert not any("defect_shadow" in t["expr"] for p in panels if p not in shadow for t in p.get("targets", []))


def test_alert_rules_are_complete_and_scoped():
    rules = observability.alert_rules(TOPO)
    source = yaml.safe_load(RULES.read_text())
    assert len(rules["groups"][0]["rules"]) == len(source["groups"][0]["rules"])
    for rule in rules["groups"][0]["rules"]:
        assert rule["for"] and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert 'juju_model="kubeflow",juju_model_uuid="8a6c-uuid",juju_application="scratch"' in rule["expr"]


def test_scrape_jobs_one_target_per_running_pod():
    def pod(name: str, deployment: str, sha: str, ip: str) -> dict:
        labels = {"sha": sha, "seldon-deployment-id": deployment}
        return {"metadata": {"name": name, "labels": labels}, "status": {"phase": "Running", "podIP": ip}}

    pods = [
        pod("b", "scratch", "x", "10.0.0.2"),
        pod("a", "scratch", "y", "10.0.0.1"),
        {"metadata": {"name": "c"}, "status": {"phase": "Pending"}},
        pod("d", "scratch-canary", "z", "10.0.0.4"),
        pod("e", "scratch-shadow", "z", "10.0.0.5"),
    ]
    (model_job,) = observability.scrape_jobs(pods, "sha", "scratch")
    assert model_job["static_configs"] == [
        {"targets": ["10.0.0.1:6000"], "labels": {"pod": "a", "model_sha256": "y", "role": "stable"}},
        {"targets": ["10.0.0.2:6000"], "labels": {"pod": "b", "model_sha256": "x", "role": "stable"}},
        {"targets": ["10.0.0.4:6000"], "labels": {"pod": "d", "model_sha256": "z", "role": "canary"}},
        {"targets": ["10.0.0.5:6000"], "labels": {"pod": "e", "model_sha256": "z", "role": "shadow"}},
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
