"""What Juju 3.6 lets a charm's pod do in Kubernetes, with and without `juju trust`.

Juju gives every application a ServiceAccount named after it, bound to a Role in the model's
namespace and to a ClusterRole `<model>-<app>`; `juju trust` rewrites the rules of both
(juju/juju 3.6 caas/kubernetes/provider/application/trust.go: getDefaultApplicationNamespaceRules,
defaultApplicationClusterRules, fullAccessApplication{Namespace,Cluster}Rules). This module
makes the same objects in a real API server and returns a token for that account, so the charm's
client meets exactly the answers it would meet on a site.
"""

from __future__ import annotations

from typing import Any

ALL = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]


def namespace_rules(namespace: str, trusted: bool) -> list[dict[str, Any]]:
    if trusted:
        return ALL
    return [
        {"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [namespace], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
    ]


def cluster_rules(trusted: bool) -> list[dict[str, Any]]:
    return ALL if trusted else [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]


def application_token(api: Any, app: str, namespace: str, trusted: bool) -> str:
    """Create (or update) the application's account and roles; a fresh token for it (TokenRequest)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    cluster_role = f"{namespace}-{app}"
    subject = [{"kind": "ServiceAccount", "name": app, "namespace": namespace}]
    objects = [
        (
            core.create_namespaced_service_account,
            core.replace_namespaced_service_account,
            (namespace,),
            {"metadata": {"name": app}},
        ),
        (
            rbac.create_namespaced_role,
            rbac.replace_namespaced_role,
            (namespace,),
            {"metadata": {"name": app}, "rules": namespace_rules(namespace, trusted)},
        ),
        (
            rbac.create_namespaced_role_binding,
            rbac.replace_namespaced_role_binding,
            (namespace,),
            {
                "metadata": {"name": app},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": app},
                "subjects": subject,
            },
        ),
        (
            rbac.create_cluster_role,
            rbac.replace_cluster_role,
            (),
            {"metadata": {"name": cluster_role}, "rules": cluster_rules(trusted)},
        ),
        (
            rbac.create_cluster_role_binding,
            rbac.replace_cluster_role_binding,
            (),
            {
                "metadata": {"name": cluster_role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
                "subjects": subject,
            },
        ),
    ]
    for create, replace, scope, body in objects:
        try:
            create(*scope, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            replace(body["metadata"]["name"], *scope, body)
    token = core.create_namespaced_service_account_token(app, namespace, {"spec": {"expirationSeconds": 3600}})
    return token.status.token
