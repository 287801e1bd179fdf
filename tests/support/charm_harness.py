"""What the charm's ops.testing tests share: the Juju model and two model versions.

The fixtures (``k8s``: the fake cluster, ``ctx``: the charm's Context) are in tests/unit/conftest.py.
"""

NS = "kubeflow"
APP = "scratch"
SHA1 = "1" * 64
SHA2 = "2" * 64
V1 = {"model-uri": "https://models.example/v1.onnx", "model-sha256": SHA1}
V2 = {"model-uri": "https://models.example/v2.onnx", "model-sha256": SHA2}
