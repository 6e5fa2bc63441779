#!/usr/bin/env python3
"""Dev-only: the network time of one ONNX model in ONNX Runtime and (when installed) OpenVINO,
batch 1, on the CPU with a fixed number of threads, as `bench` times ours: warm-up runs,
then the median of timed runs. Prints one JSON object per runtime.

Usage: peer_network.py MODEL [--frames N] [--warmup N] [--threads N] [--input-size S]
Needs: pip install onnxruntime numpy (and openvino for the second runtime).
"""
import argparse
import json
import statistics
import time

import numpy as np


def timed(run, frames, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--input-size", type=int, default=0)
    args = parser.parse_args()

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    entry = session.get_inputs()[0]
    height, width = entry.shape[2], entry.shape[3]
    if args.input_size or not isinstance(height, int):
        height = width = args.input_size or 640
    # Values do not change a dense network's time; a fixed seed keeps runs identical.
    image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    median = timed(lambda: session.run(None, {entry.name: image}), args.frames, args.warmup)
    print(json.dumps({"runtime": f"onnxruntime {ort.__version__}", "median_ms": median}))

    try:
        import openvino as ov
    except ImportError:
        return
    core = ov.Core()
    compiled = core.compile_model(
        args.model,
        "CPU",
        # f32: on CPUs with AVX-512 BF16 OpenVINO otherwise computes in bf16 by default.
        {
            "INFERENCE_NUM_THREADS": args.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    request = compiled.create_infer_request()
    median = timed(lambda: request.infer({0: image}), args.frames, args.warmup)
    print(json.dumps({"runtime": f"openvino {ov.__version__}", "median_ms": median}))


if __name__ == "__main__":
    main()
