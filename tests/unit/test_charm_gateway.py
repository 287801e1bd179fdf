"""The gateway the route binds to (ops.testing): istio-pilot's gateway-info, or the `gateway` option.

istio-pilot writes gateway_name / gateway_namespace (its default-gateway option, its own model)
into its application data (canonical/istio-operators track/1.17, lib istio_gateway_info v0.3).
"""

from __future__ import annotations

from ops import testing

from support.charm_harness import APP, NS, V1, gateway_info


def state(*relations: testing.Relation, model: str = NS, config: dict | None = None) -> testing.State:
    return testing.State(leader=True, config=config or V1, model=testing.Model(name=model), relations=set(relations))


def vs_gateways(k8s, ns: str = NS) -> list[str]:
    return k8s.objects[("VirtualService", ns, APP)]["spec"]["gateways"]


def test_any_model_name_works_with_the_gateway_istio_pilot_names(ctx, k8s):
    k8s.existing.clear()
    k8s.existing[("Gateway", "edge", "istio-gateway")] = {"kind": "Gateway"}
    out = ctx.run(ctx.on.config_changed(), state(gateway_info("istio-gateway", "edge"), model="edge"))
    assert vs_gateways(k8s, "edge") == ["edge/istio-gateway"]
    assert "gateway" not in out.unit_status.message


def test_without_the_relation_or_the_option_it_blocks_naming_the_command_and_applies_nothing(ctx, k8s):
    out = ctx.run(ctx.on.config_changed(), state())
    assert out.unit_status == testing.BlockedStatus(
        f"no Istio gateway to route through: juju integrate {APP} istio-pilot:gateway-info "
        "(or set gateway=<namespace>/<name>)"
    )
    assert k8s.objects == {}


def test_a_relation_istio_pilot_has_not_filled_yet_waits(ctx, k8s):
    empty = testing.Relation("gateway-info", remote_app_name="istio-pilot")
    out = ctx.run(ctx.on.relation_changed(empty), state(empty))
    assert out.unit_status == testing.WaitingStatus("waiting for istio-pilot to publish its gateway on gateway-info")
    assert k8s.objects == {}


def test_the_relation_arriving_applies_the_route(ctx, k8s):
    rel = gateway_info()
    ctx.run(ctx.on.relation_changed(rel), state(rel))
    assert vs_gateways(k8s) == [f"{NS}/kubeflow-gateway"]


def test_the_option_overrides_the_relation(ctx, k8s):
    k8s.existing[("Gateway", "istio-system", "edge")] = {"kind": "Gateway"}
    ctx.run(ctx.on.config_changed(), state(gateway_info(), config={**V1, "gateway": "istio-system/edge"}))
    assert vs_gateways(k8s) == ["istio-system/edge"]


def test_an_option_naming_a_missing_gateway_blocks_saying_what_to_change(ctx, k8s):
    out = ctx.run(ctx.on.config_changed(), state(config={**V1, "gateway": "istio-system/nowhere"}))
    assert out.unit_status == testing.BlockedStatus(
        "Istio gateway istio-system/nowhere not found: correct gateway=<namespace>/<name>, or leave it "
        f"empty and juju integrate {APP} istio-pilot:gateway-info"
    )


def test_istio_pilots_gateway_not_created_yet_waits(ctx, k8s):
    k8s.existing.clear()
    out = ctx.run(ctx.on.config_changed(), state(gateway_info()))
    assert out.unit_status == testing.WaitingStatus(
        f"waiting for the Istio gateway {NS}/kubeflow-gateway (istio-pilot creates it)"
    )


def test_removing_the_relation_blocks_and_keeps_the_model_serving(ctx, k8s):
    rel = gateway_info()
    ctx.run(ctx.on.config_changed(), state(rel))
    before = dict(k8s.objects)
    out = ctx.run(ctx.on.relation_broken(rel), state(rel))  # ops leaves a broken relation out
    assert out.unit_status.name == "blocked" and "istio-pilot:gateway-info" in out.unit_status.message
    assert k8s.objects == before
