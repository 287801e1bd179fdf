"""The one place where a model's Kubernetes shape is decided.

``render()`` is pure: no ops, no cluster. The charm applies what it
returns; the local site translates the same objects into processes and
Envoy routes. Nothing else builds these objects.
"""

from __future__ import annotations

from typing import Any

from model_config import ModelConfig

SELDON_API = "machinelearning.seldon.io/v1"
ISTIO_API = "networking.istio.io/v1beta1"  # what Istio 1.17 (istio-pilot 1.17/stable) serves
PREDICTOR = "default"
CONTAINER = "model"
# The model container's ports, declared in render() so that nothing depends on the seldon-core
# charm's predictive-unit-*-port options. Seldon Core v1.17.1 keeps declared ones: the defaulting
# that the controller runs on every reconcile, SeldonDeployment.Default() (called from Reconcile in
# operator/controllers/seldondeployment_controller.go; the seldon-core charm installs only a
# *validating* webhook: canonical/seldon-core-operator track/1.17 src/templates/validate.yaml.j2),
# takes a container port named "http"/"grpc" as the unit's endpoint ports
# (operator/apis/machinelearning.seldon.io/v1/defaults.go, setContainerPredictiveUnitDefaults),
# adds a "metrics" port only where none exists (addMetricsPortAndIncrement), and the controller
# then sets PREDICTIVE_UNIT_HTTP_SERVICE_PORT etc. from them (operator/controllers/
# seldondeployment_controller.go, createContainerService). The wrapper serves REST, gRPC and
# /prometheus on them (python/seldon_core/microservice.py).
MODEL_PORT = 9000  # REST: /api/v0.1/predictions, /predict, /health/*
GRPC_PORT = 9500
METRICS_PORT = 6000
# Without the executor (seldon.io/no-engine), Seldon v1.17.1 still creates the predictor Service
# <sdep>-<predictor>, but on the model's own ports: createComponents() passes the container
# Service's ports (pu.Endpoint.HttpPort = 9000, GrpcPort) to createPredictorService, selecting
# the model pods by seldon-app=<sdep>-<predictor> (operator/controllers/
# seldondeployment_controller.go @ v1.17.1). The VirtualService routes there.
SERVICE_PORT = MODEL_PORT
NO_ENGINE = "seldon.io/no-engine"
SHA_LABEL = "onnx-model.juju.is/model-sha256"
APP_LABEL = "app.juju.is/created-by"
MODEL_LABEL = "app.juju.is/model"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "onnx-model-charm"
ROUTE_TIMEOUT = "30s"
S3_KEYS = ("access-key-id", "secret-access-key")
CANARY_SUFFIX = "-canary"
SHADOW_SUFFIX = "-shadow"
SHADOW_PATH = "shadow/"  # under the model's prefix: /model/<model-name>/shadow/


def prefix(model_name: str) -> str:
    """The URL prefix a model answers under."""
    return f"/model/{model_name}/"


def shadow_prefix(model_name: str) -> str:
    """The URL prefix the shadow model answers under; the line's watcher asks it beside the stable one."""
    return prefix(model_name) + SHADOW_PATH


def s3_secret_name(app: str) -> str:
    """The Kubernetes Secret holding an application's s3 credentials (created by the charm)."""
    return f"{app}-s3-credentials"


def labels(app: str, namespace: str) -> dict[str, str]:
    """Labels on every object of one application; pruning selects on them."""
    return {APP_LABEL: app, MODEL_LABEL: namespace, MANAGED_LABEL: MANAGER}


def render(name: str, namespace: str, config: dict[str, Any], canary_ready: bool = False) -> list[dict[str, Any]]:
    """Render [SeldonDeployment, (canary or shadow SeldonDeployment,) VirtualService] for application ``name``.

    ``config`` holds Juju option names (``model-uri``) or field names
    (``model_uri``); defaults are applied here and invalid values raise
    ValueError naming the option. ``canary_ready``: the canary's pods are
    Ready (the caller looked); until then it gets no traffic, since a
    destination without a Ready endpoint would answer 503 for its share.
    A shadow needs no such flag: its route is rendered whenever it is
    configured (see shadow_route()).
    """
    cfg = ModelConfig.from_options({k.replace("_", "-"): v for k, v in config.items()})
    model_name = cfg.model_name or name
    if len(model_name) > 40:
        raise ValueError(f"model-name: {model_name!r} is longer than 40 characters; set model-name")
    meta_labels = labels(name, namespace)
    objects = [seldon_deployment(name, model_name, namespace, cfg, meta_labels)]
    destinations = [(service_host(model_name, namespace), 100)]
    if cfg.has_canary:
        # Its own SeldonDeployment, not a second predictor: Seldon 1.17.1 judges a SeldonDeployment
        # as a whole (Reconcile: Available only when every predictor's Deployment is; Failed when
        # one stops progressing; removed predictors are cleaned up only once all the others are
        # ready), so a refused canary inside the stable one would mark the stable model Failed and
        # hold up Seldon's own clean-up. Apart, each has its own state, Service and pods.
        canary = canary_name(model_name)
        objects.append(seldon_deployment(name, model_name, namespace, cfg.as_canary(), meta_labels, sdep_name=canary))
        weight = int(cfg.canary_weight or 0) if canary_ready else 0
        destinations = [(service_host(model_name, namespace), 100 - weight), (service_host(canary, namespace), weight)]
    shadow_host = None
    if cfg.has_shadow:
        # Its own SeldonDeployment for the same reasons as the canary: a refused shadow (say, a
        # sha256 mismatch) must leave the stable SeldonDeployment Available and its pods alone.
        shadow = shadow_name(model_name)
        objects.append(seldon_deployment(name, model_name, namespace, cfg.as_shadow(), meta_labels, sdep_name=shadow))
        shadow_host = service_host(shadow, namespace)
    objects.append(virtual_service(model_name, namespace, cfg, meta_labels, destinations, shadow_host=shadow_host))
    return objects


def canary_name(model_name: str) -> str:
    """The canary's SeldonDeployment; Seldon names its Service <this>-<predictor>."""
    return f"{model_name}{CANARY_SUFFIX}"


def shadow_name(model_name: str) -> str:
    """The shadow's SeldonDeployment; Seldon names its Service <this>-<predictor>."""
    return f"{model_name}{SHADOW_SUFFIX}"


def service_host(sdep_name: str, namespace: str) -> str:
    """The Service Seldon creates per predictor (GetPredictorKey: <sdep>-<predictor>)."""
    return f"{sdep_name}-{PREDICTOR}.{namespace}.svc.cluster.local"


def seldon_deployment(
    app: str,
    model_name: str,
    namespace: str,
    cfg: ModelConfig,
    meta_labels: dict[str, str],
    sdep_name: str = "",
) -> dict[str, Any]:
    """A SeldonDeployment named ``sdep_name`` (default: the model name) serving ``cfg``'s model."""
    sdep_name = sdep_name or model_name
    return {
        "apiVersion": SELDON_API,
        "kind": "SeldonDeployment",
        "metadata": {"name": sdep_name, "namespace": namespace, "labels": dict(meta_labels)},
        "spec": {
            "name": sdep_name,
            "annotations": {"seldon.io/rest-timeout": "30000"},
            "predictors": [predictor(app, model_name, cfg, meta_labels)],
        },
    }


def predictor(app: str, model_name: str, cfg: ModelConfig, meta_labels: dict[str, str]) -> dict[str, Any]:
    """The one predictor of a model (stable or canary): its pods, labelled with the model's sha256."""
    sha = cfg.effective_sha256
    return {
        "name": PREDICTOR,
        # A single-node graph needs no executor: Gateway -> Service -> the wrapper,
        # which serves the same /api/v0.1/predictions path itself. Saves the executor
        # container's requests in every pod (seldon-core charm: 500m / 512Mi) and one
        # proxy hop. Seldon reads it from the predictor's annotations only
        # (controllers/seldondeployment_controller.go, webhook ValidateSeldonDeployment
        # refuses it on multi-node graphs; doc/source/graph/svcorch.md, v1.17.1).
        "annotations": {NO_ENGINE: "true"},
        "replicas": cfg.replicas,
        "labels": {**meta_labels, SHA_LABEL: sha[:16]},
        "componentSpecs": [{"spec": _pod_spec(app, model_name, cfg)}],
        "graph": {
            "name": CONTAINER,
            "type": "MODEL",
            "endpoint": {"type": "REST"},
            "parameters": _parameters(model_name, cfg),
            "children": [],
        },
    }


def _parameters(model_name: str, cfg: ModelConfig) -> list[dict[str, str]]:
    """Graph parameters: the wrapper passes them to DefectModel(**kwargs)."""
    params = [
        ("model_uri", "STRING", cfg.effective_uri),
        ("model_sha256", "STRING", cfg.effective_sha256),
        ("model_name", "STRING", model_name),
        ("model_version", "STRING", cfg.model_version or cfg.effective_sha256[:12]),
        ("confidence_threshold", "FLOAT", repr(float(cfg.confidence_threshold))),
        ("iou_threshold", "FLOAT", repr(float(cfg.iou_threshold))),
        ("input_size", "INT", str(int(cfg.input_size))),
        ("max_pixels", "INT", str(int(cfg.max_image_pixels))),
    ]
    return [{"name": n, "type": t, "value": v} for n, t, v in params]


def _pod_spec(app: str, model_name: str, cfg: ModelConfig) -> dict[str, Any]:
    env = [
        {"name": "GUNICORN_WORKERS", "value": str(cfg.workers)},
        {"name": "GUNICORN_THREADS", "value": "1"},
        {"name": "INCLUDE_METRICS_IN_CLIENT_RESPONSE", "value": "false"},
    ]
    if cfg.uses_s3:
        secret = s3_secret_name(app)
        env += [
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": secret, "key": S3_KEYS[0]}}},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": S3_KEYS[1]}}},
        ]
        if cfg.s3_endpoint:
            env.append({"name": "S3_ENDPOINT_URL", "value": cfg.s3_endpoint})
    requests = {"cpu": cfg.cpu_request, "memory": cfg.memory_request}
    limits = {"cpu": cfg.cpu, "memory": cfg.memory}
    return {
        # The model server never calls the Kubernetes API, so its pods get no service account
        # token: with MicroK8s' rbac add-on the default account may do nothing anyway, and without
        # it (AlwaysAllow) a token would make the pod cluster-admin. Seldon copies the pod spec
        # whole into the Deployment (v1.17.1 operator/controllers/seldondeployment_controller.go
        # createDeploymentWithoutEngine: deploy.Spec.Template.Spec = seldonPodSpec.Spec).
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                "name": CONTAINER,
                "image": cfg.server_image,
                "imagePullPolicy": "IfNotPresent",
                # A crash's last log lines become the termination message, which the charm's
                # status quotes (serving_status: CrashLoopBackOff); core/v1 Container.
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "env": env,
                "ports": [
                    {"name": "http", "containerPort": MODEL_PORT, "protocol": "TCP"},
                    {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                ],
                # Requests: what the scheduler reserves (measured use, see README "Sizing");
                # limits: what a busy pod may burst to.
                "resources": {"requests": requests, "limits": limits},
                # Ready = verified, loaded and warmed up (DefectModel.health_status).
                "readinessProbe": _http_probe("/health/status", period=5, failures=3),
                # Alive = the wrapper answers; a model that is refused stays alive and unready.
                "livenessProbe": _http_probe("/health/ping", period=10, failures=6),
                # A slow download on a bad link must not be killed by the liveness probe.
                "startupProbe": _http_probe("/health/ping", period=5, failures=60),
                # Keep serving while the endpoint removal reaches the gateway.
                "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
    }


def _http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def virtual_service(
    model_name: str,
    namespace: str,
    cfg: ModelConfig,
    meta_labels: dict[str, str],
    destinations: list[tuple[str, int]] | None = None,
    shadow_host: str | None = None,
) -> dict[str, Any]:
    """The route of /model/<name>/; ``destinations``: (Service host, weight), default the stable one.

    ``shadow_host``: the shadow's Service, routed at /model/<name>/shadow/ ahead of the main route.
    """
    if not cfg.gateway:
        raise ValueError(
            "gateway: no Istio gateway to bind the route to: relate gateway-info to istio-pilot "
            "or set gateway=<namespace>/<name>"
        )
    destinations = destinations or [(service_host(model_name, namespace), 100)]
    main = {
        "name": model_name,
        "match": [{"uri": {"prefix": prefix(model_name)}}],
        "rewrite": {"uri": "/"},
        "route": route(destinations),
        "timeout": ROUTE_TIMEOUT,
        # A pod leaving during a rollout resets its connections; retry those, not 4xx.
        "retries": {
            "attempts": 2,
            "perTryTimeout": "15s",
            "retryOn": "connect-failure,refused-stream,reset,unavailable",
        },
    }
    http = [main] if shadow_host is None else [shadow_route(model_name, shadow_host), main]
    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": {"name": model_name, "namespace": namespace, "labels": dict(meta_labels)},
        "spec": {
            "gateways": [cfg.gateway],
            "hosts": ["*"],
            "http": http,
        },
    }


def shadow_route(model_name: str, shadow_host: str) -> dict[str, Any]:
    """/model/<name>/shadow/ -> the shadow's Service, whole; placed *before* the main route.

    Order matters: Istio 1.17 evaluates a VirtualService's http routes in order and the first
    match wins (istio/api release-1.17 networking/v1beta1/virtual_service.proto, VirtualService.http:
    "The first rule matching an incoming request is used"; istiod keeps that order in the Envoy
    route list, and Envoy checks routes "in order", first match used: envoyproxy/envoy
    docs/root/intro/arch_overview/http/http_routing.rst, "Route matching"). The main route's
    prefix /model/<name>/ also matches /model/<name>/shadow/..., so after it this route would
    never be reached.

    Rendered whenever a shadow is configured, Ready or not (unlike a canary's weight): no line
    request depends on this path, and a shadow that is not Ready answers 503 from the gateway
    ("no healthy upstream": the Service has no Ready endpoint, or no cluster yet) without
    touching the stable pods, which the watcher counts as "shadow unavailable". Routed only when
    Ready, the path would fall through to the main route and reach the *stable* server as
    /shadow/api/v0.1/predictions (a 404 from the wrong model), and the route would have to be
    re-applied when the shadow became Ready. No retries: a missed shadow answer costs nothing
    but one comparison, and a retry would add load beside the line's model.
    """
    return {
        "name": shadow_name(model_name),
        "match": [{"uri": {"prefix": shadow_prefix(model_name)}}],
        "rewrite": {"uri": "/"},
        "route": route([(shadow_host, 100)]),
        "timeout": ROUTE_TIMEOUT,
    }


def route(destinations: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Istio route destinations for (host, weight) pairs; a 0% destination is left out.

    Leaving it out (rather than weight 0) means a canary whose Service does not exist yet, or
    has no Ready pod, is not in the route at all, and one model alone is routed as before.
    """
    kept = [(host, weight) for host, weight in destinations if weight > 0]
    if sum(weight for _, weight in kept) != 100:
        raise ValueError(f"route weights must add up to 100, got {destinations}")
    return [
        {"destination": {"host": host, "port": {"number": SERVICE_PORT}}, "weight": weight} for host, weight in kept
    ]
