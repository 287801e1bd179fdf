"""What the charm's ops.testing tests share: the Juju model and two model versions.

The fixtures (``k8s``: the fake cluster, ``ctx``: the charm's Context) are in tests/unit/conftest.py.
"""

from ops import testing

NS = "kubeflow"
APP = "scratch"
SHA1 = "1" * 64
SHA2 = "2" * 64
V1 = {"model-uri": "https://models.example/v1.onnx", "model-sha256": SHA1}
V2 = {"model-uri": "https://models.example/v2.onnx", "model-sha256": SHA2}
GATEWAY = "kubeflow-gateway"  # the Gateway the fake cluster holds in NS (support/fake_k8s.py)


def gateway_info(name: str = GATEWAY, namespace: str = NS, **kw) -> testing.Relation:
    """istio-pilot's end of gateway-info, with the data its lib writes (istio_gateway_info v0.3)."""
    data = {"gateway_name": name, "gateway_namespace": namespace, "gateway_up": "true"}
    return testing.Relation("gateway-info", remote_app_name="istio-pilot", remote_app_data=data, **kw)
