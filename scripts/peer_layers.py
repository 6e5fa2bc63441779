#!/usr/bin/env python3
"""Dev-only: where a peer runtime's time goes, node by node, for one ONNX model on the CPU,
batch 1, a fixed number of threads: OpenVINO's per-node times (`PERF_COUNT`) or ONNX
Runtime's (`enable_profiling`), the median over timed inferences after warm-up ones, in the
order the nodes ran, with each node's type and kernel (OpenVINO) or execution provider (ONNX
Runtime); then the totals per type and kernel. Set beside
`streamtrack bench --layers` (ours, per layer in the order they ran) to see which layers a
peer runs faster, e.g. `peer_layers.py yolo11n-coco-320.onnx --runtime openvino`.

Usage: peer_layers.py MODEL [--runtime openvino|onnxruntime] [--frames N] [--warmup N]
                             [--threads N]
Needs: pip install numpy openvino (or onnxruntime).
"""
import argparse
import collections
import json
import os
import statistics
import tempfile

import numpy as np


def openvino_times(args, image_shape):
    """Per-node milliseconds of each timed inference, and each node's (type, kernel)."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        args.model,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": args.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "PERF_COUNT": True,
        },
    )
    request = compiled.create_infer_request()
    image = image_shape(compiled.inputs[0].get_partial_shape())
    times, kinds = collections.defaultdict(list), {}
    for i in range(args.warmup + args.frames):
        request.infer({0: image})
        if i < args.warmup:
            continue
        for node in request.profiling_info:
            if node.status == ov.ProfilingInfo.Status.EXECUTED:
                times[node.node_name].append(node.real_time.total_seconds() * 1e3)
                kinds[node.node_name] = (node.node_type, node.exec_type)
    return times, kinds


def onnxruntime_times(args, image_shape):
    """As `openvino_times`, from ONNX Runtime's profile (one event per node and run)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "peer_layers")
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    entry = session.get_inputs()[0]
    image = image_shape(entry.shape)
    for _ in range(args.warmup + args.frames):
        session.run(None, {entry.name: image})
    with open(session.end_profiling()) as f:
        events = [e for e in json.load(f) if e.get("cat") == "Node"]
    suffix = "_kernel_time"
    runs = [e for e in events if e["name"].endswith(suffix)]
    per_run = len(runs) // (args.warmup + args.frames)
    times, kinds = collections.defaultdict(list), {}
    for event in runs[args.warmup * per_run :]:
        name = event["name"][: -len(suffix)]
        times[name].append(event["dur"] / 1e3)
        kinds[name] = (event["args"].get("op_name", "?"), event["args"].get("provider", "?"))
    return times, kinds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--runtime", choices=["openvino", "onnxruntime"], default="openvino")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    # Values do not change a dense network's time; a fixed seed keeps runs identical.
    def image_shape(shape):
        dims = [d if isinstance(d, int) else getattr(d, "get_length", lambda: 640)() for d in shape]
        return np.random.default_rng(0).random(dims, dtype=np.float32)

    measure = openvino_times if args.runtime == "openvino" else onnxruntime_times
    times, kinds = measure(args, image_shape)
    per_kind = collections.defaultdict(float)
    total = 0.0
    for name, node_times in times.items():
        median = statistics.median(node_times)
        node_type, kernel = kinds[name]
        total += median
        per_kind[f"{node_type:18s} {kernel}"] += median
        print(f"{median:8.3f} ms  {node_type:18s} {kernel:28s} {name}")
    print(f"{total:8.3f} ms  all nodes")
    for kind, ms in sorted(per_kind.items(), key=lambda item: -item[1]):
        print(f"{ms:8.3f} ms  {kind}")


if __name__ == "__main__":
    main()
