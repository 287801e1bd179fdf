#!/usr/bin/env python3
"""The onnx-model charm: one Juju application per ONNX defect model, routed at /model/<name>/.

Every event leads to one idempotent reconcile: validate config, render the
objects, server-side apply them, prune what is no longer rendered, then
report what the cluster is really serving.
"""

from __future__ import annotations

import json
import logging

import gateway
import ops

import capacity
import observability
import pod_health
from cluster import Cluster, ClusterError, TrustRequired
from manifests import (
    ISTIO_API,
    PREDICTOR,
    S3_KEYS,
    SELDON_API,
    SHA_LABEL,
    canary_name,
    labels,
    render,
    s3_secret_name,
    service_host,
    shadow_name,
)
from model_config import ModelConfig
from serving_status import (
    Serving,
    assess,
    canary_is_ready,
    first_problem,
    is_unschedulable,
    pods_to_ask,
    routed_weight,
    with_canary,
    with_shadow,
)

log = logging.getLogger(__name__)

STATUS = {"active": ops.ActiveStatus, "waiting": ops.WaitingStatus, "blocked": ops.BlockedStatus}


class ConfigBlocked(Exception):
    """Config that passed type checks but cannot be acted on (e.g. a secret not granted)."""


class OnnxModelCharm(ops.CharmBase):
    """Keeps a SeldonDeployment and a VirtualService in step with the application's config."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.cluster = Cluster()
        for event in (
            self.on.install,
            self.on.config_changed,
            self.on.upgrade_charm,
            self.on.leader_elected,
            self.on.update_status,
            self.on.secret_changed,
            self.on.metrics_endpoint_relation_joined,
            self.on.grafana_dashboard_relation_joined,
            self.on[gateway.RELATION].relation_changed,
            self.on[gateway.RELATION].relation_broken,
        ):
            framework.observe(event, self._reconcile)
        framework.observe(self.on.remove, self._on_remove)

    @property
    def namespace(self) -> str:
        return self.model.name

    def _reconcile(self, _: ops.EventBase) -> None:
        config = self.load_config(ModelConfig, errors="blocked")
        try:
            gw = self._gateway(config)
        except gateway.NoGateway as exc:
            # Nothing is applied without a route; a model already serving keeps serving.
            self.unit.status = STATUS[exc.kind](exc.message)
            return
        try:
            if self.unit.is_leader():
                self._apply(config, gw)
            pods = self._report(config, gw)
            if self.unit.is_leader():
                self._publish_observability(pods, config.model_name or self.app.name)
        except TrustRequired:
            self.unit.status = ops.BlockedStatus(
                f"cannot reach the Kubernetes API (403): run juju trust {self.app.name} --scope=cluster"
            )
        except ConfigBlocked as exc:
            self.unit.status = ops.BlockedStatus(str(exc))
        except ClusterError as exc:
            # Applying is idempotent: the next event (at the latest update-status) finishes the job.
            log.warning("reconcile incomplete, retried on the next event: %s", exc)
            self.unit.status = ops.WaitingStatus(f"Kubernetes API: {exc}; retrying")

    def _gateway(self, config: ModelConfig) -> gateway.Gateway:
        """The `gateway` option, else what istio-pilot publishes on gateway-info."""
        remote = [dict(r.data[r.app]) for r in self.model.relations[gateway.RELATION] if r.app is not None]
        return gateway.resolve(self.app.name, config.gateway, remote)

    def _apply(self, config: ModelConfig, gw: gateway.Gateway) -> None:
        # The canary gets its weight once its pods are Ready (they verified its sha256): this
        # reconcile looks, so the first one after they are (update-status at the latest) routes it.
        ready = config.has_canary and canary_is_ready(config.canary_model_sha256, self._canary_pods(config))
        objects = render(self.app.name, self.namespace, {**_options(config), "gateway": gw.ref}, canary_ready=ready)
        if config.any_s3:
            objects.insert(0, self._s3_secret(config))
        keep = {(o["kind"], o["metadata"]["name"]) for o in objects} | self._still_routed(config)
        for obj in objects:
            self.cluster.apply(obj)
        self._prune(keep=keep)

    def _canary_pods(self, config: ModelConfig) -> list[dict]:
        canary = canary_name(config.model_name or self.app.name)
        return self.cluster.pods(
            self.namespace, {"seldon-deployment-id": canary, "seldon-app": f"{canary}-{PREDICTOR}"}
        )

    def _still_routed(self, config: ModelConfig) -> set[tuple[str, str]]:
        """A removed canary that the live route still sends requests to stays one more reconcile.

        Its share goes back to the stable model with this reconcile's VirtualService; its pods
        go at the next one, once the gateway no longer routes to them, so no request is lost.
        """
        name = config.model_name or self.app.name
        live = self.cluster.get(ISTIO_API, "VirtualService", name, self.namespace)
        if routed_weight(live, service_host(canary_name(name), self.namespace)) > 0:
            return {("SeldonDeployment", canary_name(name))}
        return set()

    def _s3_secret(self, config: ModelConfig) -> dict:
        """The s3 credentials as a Kubernetes Secret, read from the Juju secret named in config."""
        if config.s3_credentials is None:
            raise ConfigBlocked(
                "s3-credentials: model-uri is s3:// but no secret is set: juju add-secret, "
                f"juju grant-secret <id> {self.app.name}, juju config {self.app.name} s3-credentials=<id>"
            )
        try:
            content = config.s3_credentials.get_content(refresh=True)
        except (ops.SecretNotFoundError, ops.ModelError):
            raise ConfigBlocked(
                f"s3-credentials: secret not found or not granted: juju grant-secret <id> {self.app.name}"
            ) from None
        missing = [k for k in S3_KEYS if not content.get(k)]
        if missing:
            raise ConfigBlocked(f"s3-credentials: the secret lacks the key(s) {', '.join(missing)}")
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": s3_secret_name(self.app.name),
                "namespace": self.namespace,
                "labels": labels(self.app.name, self.namespace),
            },
            "type": "Opaque",
            "stringData": {k: content[k] for k in S3_KEYS},
        }

    def _prune(self, keep: set[tuple[str, str]]) -> None:
        for api_version, kind, name in self.cluster.owned(self.namespace, labels(self.app.name, self.namespace)):
            if (kind, name) not in keep:
                log.info("pruning %s %s, no longer rendered", kind, name)
                self.cluster.delete(api_version, kind, name, self.namespace)

    def _report(self, config: ModelConfig, gw: gateway.Gateway) -> list[dict]:
        """Set the status from what the cluster serves; return the model pods (for the scrape targets)."""
        name = config.model_name or self.app.name
        sdep = self.cluster.get("machinelearning.seldon.io/v1", "SeldonDeployment", name, self.namespace)
        pods = self.cluster.pods(self.namespace, {"seldon-deployment-id": name, "seldon-app": f"{name}-{PREDICTOR}"})
        diagnosis = self._diagnose(pods, config.effective_sha256)
        serving = assess(name, config.effective_sha256, sdep, pods, app=self.app.name, **diagnosis)
        if config.has_canary:
            serving, canary_pods = self._with_canary(config, name, serving)
            pods = pods + canary_pods
        if config.has_shadow:
            serving, shadow_pods = self._with_shadow(config, name, serving)
            pods = pods + shadow_pods
        kind, message = serving.kind, serving.message
        if self.cluster.get(ISTIO_API, "Gateway", gw.name, gw.namespace) is None:
            kind, message = gateway.missing(gw, self.app.name)
        self.unit.status = STATUS[kind](message)
        if kind == "active":
            self.unit.set_workload_version(config.effective_sha256[:12])
        return pods

    def _diagnose(self, pods: list[dict], wanted_sha: str) -> dict:
        """What explains pods that do not come up, beyond their own status (see serving_status.assess).

        The server's reason is asked only of started, unready pods of the wanted model (short
        timeouts, pod_health.py); the nodes' free room is read only when a pod is unschedulable.
        """
        reasons = pod_health.ask(pods_to_ask(pods, wanted_sha))
        room = None
        if any(is_unschedulable(p) for p in pods):
            try:
                room = capacity.room(self.cluster.nodes(), self.cluster.all_pods())
            except (TrustRequired, ClusterError, ValueError) as exc:  # the status just says less
                log.info("cannot read the nodes' free resources: %s", exc)
        return {"server_reasons": reasons, "room": room}

    def _with_canary(self, config: ModelConfig, name: str, stable: Serving) -> tuple[Serving, list[dict]]:
        """The canary's part of the status, from its SeldonDeployment, its pods and the live route."""
        canary = canary_name(name)
        sdep = self.cluster.get(SELDON_API, "SeldonDeployment", canary, self.namespace)
        pods = self._canary_pods(config)
        live = self.cluster.get(ISTIO_API, "VirtualService", name, self.namespace)
        routed = routed_weight(live, service_host(canary, self.namespace))
        weight = int(config.canary_weight or 0)
        return with_canary(stable, config.canary_model_sha256, weight, routed, sdep, pods), pods

    def _with_shadow(self, config: ModelConfig, name: str, stable: Serving) -> tuple[Serving, list[dict]]:
        """The shadow's part of the status: its pods and, when they do not come up, why.

        The same diagnosis as the stable model's pods (the server's own refusal, such as a sha256
        mismatch, an unschedulable pod), so a refused shadow is quoted, not just "not Ready".
        """
        shadow = shadow_name(name)
        sdep = self.cluster.get(SELDON_API, "SeldonDeployment", shadow, self.namespace)
        pods = self.cluster.pods(
            self.namespace, {"seldon-deployment-id": shadow, "seldon-app": f"{shadow}-{PREDICTOR}"}
        )
        sha = config.shadow_model_sha256
        diagnosis = self._diagnose(pods, sha)
        wanted = [p for p in pods if (p["metadata"].get("labels") or {}).get(SHA_LABEL) == sha[:16]]
        problem = first_problem(wanted, self.app.name, diagnosis["server_reasons"], diagnosis["room"])
        return with_shadow(stable, name, self.app.name, sha, sdep, pods, problem), pods

    def _publish_observability(self, pods: list[dict], model_name: str) -> None:
        """Scrape jobs, alert rules and the dashboard into every COS relation (leader only).

        Juju only signals the other side when a value really changes, so rewriting the same
        data on every event costs nothing.
        """
        topo = observability.topology(self.model.name, self.model.uuid, self.app.name, self.unit.name, self.meta.name)
        for relation in self.model.relations["metrics-endpoint"]:
            data = relation.data[self.app]
            data["scrape_metadata"] = json.dumps(topo)
            data["scrape_jobs"] = json.dumps(observability.scrape_jobs(pods, SHA_LABEL, model_name))
            data["alert_rules"] = json.dumps(observability.alert_rules(topo))
        for relation in self.model.relations["grafana-dashboard"]:
            relation.data[self.app]["dashboards"] = json.dumps(observability.dashboards(self.meta.name))

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        """Leave nothing behind; every unit may try, deletes are idempotent.

        When the API refuses, the hook still ends (Juju would retry it forever otherwise), but
        the user is told what may still be serving and the command that removes it: in the
        unit's status while it goes, and in `juju debug-log`."""
        try:
            self._prune(keep=set())
        except (TrustRequired, ClusterError) as exc:
            route = f"/model/{self.config.get('model-name') or self.app.name}/"
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels(self.app.name, self.namespace).items()))
            message = (
                f"could not delete what serves {route} ({exc}); it may still answer. Remove it with: "
                f"microk8s kubectl -n {self.namespace} delete "
                f"seldondeployments.machinelearning.seldon.io,virtualservices.networking.istio.io,secrets -l {selector}"
            )
            log.error("%s", message)
            self.unit.status = ops.BlockedStatus(message)


def _options(config: ModelConfig) -> dict:
    """The config as render() takes it; the secret never goes into rendered objects."""
    return {field: getattr(config, field) for field in config.__dataclass_fields__ if field != "s3_credentials"}


if __name__ == "__main__":  # pragma: nocover
    ops.main(OnnxModelCharm)
