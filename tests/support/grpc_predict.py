"""A gRPC client for the wrapper's Seldon service; runs under the server venv's python.

The tests' own venv cannot import seldon-core's protobuf 3 stubs (onnx needs
protobuf 4+), so the tests run this file with the server's interpreter:
    python grpc_predict.py PORT IMAGE   -> prints the response as JSON
"""

import json
import sys

import grpc
from google.protobuf import json_format
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc


def main() -> None:
    port, image = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = prediction_pb2_grpc.ModelStub(channel)
        with open(image, "rb") as f:
            request = prediction_pb2.SeldonMessage(binData=f.read())
        response = stub.Predict(request, timeout=30)
    print(json.dumps(json_format.MessageToDict(response)))


if __name__ == "__main__":
    main()
