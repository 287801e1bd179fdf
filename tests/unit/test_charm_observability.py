"""The charm's COS relations (ops.testing): what Prometheus and Grafana receive.

The assertions read the relation data the way the consumers do: scrape jobs
whose targets are the model pods, rules scoped to this application, and a
dashboard that decompresses to the file the charm ships.
"""

from __future__ import annotations

import base64
import json
import lzma

import pytest
from ops import testing

from support.charm_harness import APP, NS, SHA1, SHA2, V1, V2, gateway_info
from support.fake_k8s import api_error


def state(*relations: testing.Relation, config: dict | None = None, leader: bool = True) -> testing.State:
    return testing.State(
        leader=leader, config=config or V1, model=testing.Model(name=NS), relations={gateway_info(), *relations}
    )


def targets(app_data: dict, job_suffix: str) -> dict[str, dict]:
    """{target: labels} of one job, as Prometheus would scrape it."""
    (job,) = [j for j in json.loads(app_data["scrape_jobs"]) if j["job_name"].endswith(job_suffix)]
    assert job["metrics_path"] == "/prometheus"
    return {t: sc["labels"] for sc in job["static_configs"] for t in sc["targets"]}


def test_every_model_pod_is_a_scrape_target_with_its_model_version(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state())
    k8s.add_pod(NS, APP, SHA1, ready=True, pod="scratch-a", ip="10.1.0.7")
    k8s.add_pod(NS, APP, SHA1, ready=True, pod="scratch-b", ip="10.1.0.8")
    rel = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.relation_joined(rel), state(rel))
    data = out.get_relation(rel.id).local_app_data
    assert targets(data, "onnx-model-server") == {
        "10.1.0.7:6000": {"pod": "scratch-a", "model_sha256": SHA1[:16], "role": "stable"},
        "10.1.0.8:6000": {"pod": "scratch-b", "model_sha256": SHA1[:16], "role": "stable"},
    }
    # The pods run without Seldon's executor: a target on its port would only ever be down.
    assert [job["job_name"] for job in json.loads(data["scrape_jobs"])] == ["onnx-model-server"]
    meta = json.loads(data["scrape_metadata"])
    assert (meta["model"], meta["application"], meta["charm_name"]) == (NS, APP, "onnx-model")


def test_a_rollout_moves_the_targets_on_the_next_event(ctx, k8s):
    rel = testing.Relation("metrics-endpoint")
    ctx.run(ctx.on.config_changed(), state(rel))
    k8s.add_pod(NS, APP, SHA1, ready=True, pod="old", ip="10.1.0.7")
    ctx.run(ctx.on.config_changed(), state(rel, config=V2))
    k8s.add_pod(NS, APP, SHA2, ready=True, pod="new", ip="10.1.0.9")
    k8s.remove_pods(NS, SHA1)
    out = ctx.run(ctx.on.update_status(), state(rel, config=V2))
    assert targets(out.get_relation(rel.id).local_app_data, "onnx-model-server") == {
        "10.1.0.9:6000": {"pod": "new", "model_sha256": SHA2[:16], "role": "stable"}
    }


CANARY = {**V1, "canary-model-uri": V2["model-uri"], "canary-model-sha256": SHA2, "canary-weight": 10}
SHADOW = {**V1, "shadow-model-uri": V2["model-uri"], "shadow-model-sha256": SHA2}


@pytest.mark.parametrize(("config", "role"), [(CANARY, "canary"), (SHADOW, "shadow")])
def test_the_canary_and_shadow_pods_are_scraped_labelled_by_role(ctx, k8s, config, role):
    """Each is its own SeldonDeployment: its pods are targets too, told apart from the stable ones by ``role``."""
    ctx.run(ctx.on.config_changed(), state(config=config))
    k8s.add_pod(NS, APP, SHA1, ready=True, pod="stable", ip="10.1.0.7")
    k8s.add_pod(NS, f"{APP}-{role}", SHA2, ready=True, pod=role, ip="10.1.0.9")
    rel = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.update_status(), state(rel, config=config))
    assert targets(out.get_relation(rel.id).local_app_data, "onnx-model-server") == {
        "10.1.0.7:6000": {"pod": "stable", "model_sha256": SHA1[:16], "role": "stable"},
        "10.1.0.9:6000": {"pod": role, "model_sha256": SHA2[:16], "role": role},
    }


def test_terminating_and_pending_pods_are_not_scraped(ctx, k8s):
    ctx.run(ctx.on.config_changed(), state())
    k8s.add_pod(NS, APP, SHA1, ready=True, pod="leaving", ip="10.1.0.7", terminating=True)
    k8s.add_pod(NS, APP, SHA1, ready=False, pod="pending", ip="10.1.0.8")
    k8s.objects[("Pod", NS, "pending")]["status"].update(phase="Pending", podIP="")
    rel = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.update_status(), state(rel))
    assert targets(out.get_relation(rel.id).local_app_data, "onnx-model-server") == {}


def test_alert_rules_are_scoped_to_this_application(ctx, k8s):
    rel = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.relation_joined(rel), state(rel))
    rules = json.loads(out.get_relation(rel.id).local_app_data["alert_rules"])
    all_rules = [r for g in rules["groups"] for r in g["rules"]]
    assert {r["alert"] for r in all_rules} >= {"DefectModelNoServer", "DefectModelBadInput"}
    for rule in all_rules:
        assert f'juju_application="{APP}"' in rule["expr"]
        assert "%%" not in rule["expr"]
        assert rule["labels"]["juju_application"] == APP


def test_the_dashboard_reaches_grafana_intact(ctx, k8s):
    rel = testing.Relation("grafana-dashboard")
    out = ctx.run(ctx.on.relation_joined(rel), state(rel))
    payload = json.loads(out.get_relation(rel.id).local_app_data["dashboards"])
    (template,) = payload["templates"].values()
    dashboard = json.loads(lzma.decompress(base64.b64decode(template["content"])))
    assert dashboard["title"] == "ONNX defect models"
    assert template["inject_dropdowns"] is False  # model pods carry no juju_unit label to match


def test_republishing_unchanged_data_changes_nothing(ctx, k8s):
    """Rewriting identical values on every update-status must not wake the consumers."""
    metrics, dash = testing.Relation("metrics-endpoint"), testing.Relation("grafana-dashboard")
    first = ctx.run(ctx.on.update_status(), state(metrics, dash))
    second = ctx.run(ctx.on.update_status(), first)
    for rel in (metrics, dash):
        assert first.get_relation(rel.id).local_app_data == second.get_relation(rel.id).local_app_data


def test_only_the_leader_publishes(ctx, k8s):
    rel = testing.Relation("metrics-endpoint")
    out = ctx.run(ctx.on.relation_joined(rel), state(rel, leader=False))
    assert out.get_relation(rel.id).local_app_data == {}


def test_an_api_outage_keeps_the_last_published_targets(ctx, k8s):
    rel = testing.Relation("metrics-endpoint", local_app_data={"scrape_jobs": '["kept"]'})
    k8s.fail[("get", "Pod")] = api_error(503, "unavailable")
    out = ctx.run(ctx.on.update_status(), state(rel))
    assert out.unit_status.name == "waiting"
    assert out.get_relation(rel.id).local_app_data["scrape_jobs"] == '["kept"]'
