#!/usr/bin/env bash
# Dev-only: network time per forward pass on the CPU, streamtrack (`bench --device cpu`)
# beside ONNX Runtime and, when installed, OpenVINO (scripts/peer_network.py), same models,
# same input size, 2 threads, in alternating rounds in one command; prints each round's
# medians and our time as a ratio of each peer's.
# Needs a virtualenv with `pip install onnxruntime numpy` (and `openvino`): PYTHON=venv/bin/python3;
# a built streamtrack: STREAMTRACK=path/to/binary.
# Usage: scripts/compare_network.sh [MODEL...]   (ROUNDS=3 FRAMES=30 by default)
set -euo pipefail
here=$(dirname "$0")
PYTHON=${PYTHON:-python3}
STREAMTRACK=${STREAMTRACK:-target/release/streamtrack}
ROUNDS=${ROUNDS:-3}
FRAMES=${FRAMES:-30}
VIDEO=${VIDEO:-../shared/data/video/traffic-640x360.mp4}
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=(../shared/data/models/yolov8n-coco-640.onnx ../shared/data/models/yolo11n-coco-320.onnx)
fi
for model in "${models[@]}"; do
  for round in $(seq "$ROUNDS"); do
    ours=$("$STREAMTRACK" --log-level warn bench "$VIDEO" -m "$model" --device cpu \
      --frames "$FRAMES" --warmup 3 --json |
      "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin)[0]; print(next(s["median_ms"] for s in r["stages"] if s["stage"]=="network"))')
    peers=$("$PYTHON" "$here/peer_network.py" "$model" --frames "$FRAMES" --threads 2)
    "$PYTHON" - "$model" "$round" "$ours" "$peers" <<'PY'
import json, sys
model, round_, ours, peers = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
line = [f"{model.split('/')[-1]} round {round_}: streamtrack {ours:.1f} ms"]
for peer in map(json.loads, peers.splitlines()):
    line.append(f"{peer['runtime']} {peer['median_ms']:.1f} ms (ours {ours / peer['median_ms']:.2f}x)")
print("; ".join(line))
PY
  done
done
