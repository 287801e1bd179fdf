"""Closed-loop gRPC load against the wrapper; runs under the server's python (protobuf 3 stubs).

python grpc_load.py PORT IMAGE CONCURRENCY REQUESTS WARMUP  -> JSON on stdout
"""

import json
import sys

import grpc
from harness import closed_loop
from seldon_core.proto import prediction_pb2, prediction_pb2_grpc


def main() -> None:
    port, image, concurrency, requests, warmup = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    with open(image, "rb") as f:
        message = prediction_pb2.SeldonMessage(binData=f.read())
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(concurrency)]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)
    stubs = [prediction_pb2_grpc.ModelStub(c) for c in channels]

    def call(index: int) -> bool:
        try:
            response = stubs[index].Predict(message, timeout=60)
        except grpc.RpcError:
            return False
        return response.WhichOneof("data_oneof") == "jsonData"

    latencies, failures, seconds = closed_loop(call, concurrency, requests, warmup)
    print(json.dumps({"latencies": latencies, "failures": failures, "seconds": seconds}))


if __name__ == "__main__":
    main()
