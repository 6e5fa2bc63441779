#!/usr/bin/env bash
# Dev-only: network time per forward pass on the CPU, streamtrack (`bench --device cpu`)
# beside ONNX Runtime and, when installed, OpenVINO (scripts/peer_network.py), same models,
# same input size, 2 threads, in alternating rounds in one command; prints each round's
# medians and our time as a ratio of each peer's, then per model the median of each ratio
# over the rounds (on a machine whose speed drifts between phases, each round's ratio
# compares runs made seconds apart; more rounds, e.g. ROUNDS=9 FRAMES=15, steady the median).
# Needs a virtualenv with `pip install onnxruntime numpy` (and `openvino`): PYTHON=venv/bin/python3;
# a built streamtrack: STREAMTRACK=path/to/binary.
# With INT8_SUFFIX set (e.g. INT8_SUFFIX=-int8.bpk), a model `dir/name.onnx` whose
# `INT8_DIR/name$INT8_SUFFIX` exists (a `quantize --calibrate` record; INT8_DIR defaults to
# the model's folder) is timed too, with its ratio to our f32 time and to each peer's.
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
# Our median network time (ms) for one model.
network_ms() {
  "$STREAMTRACK" --log-level warn bench "$VIDEO" -m "$1" --device cpu \
    --frames "$FRAMES" --warmup 3 --json |
    "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin)[0]; print(next(s["median_ms"] for s in r["stages"] if s["stage"]=="network"))'
}
ratios=$(mktemp)
trap 'rm -f "$ratios"' EXIT
for model in "${models[@]}"; do
  : > "$ratios"
  int8=""
  if [ -n "${INT8_SUFFIX:-}" ]; then
    candidate="${INT8_DIR:-$(dirname "$model")}/$(basename "$model" .onnx)$INT8_SUFFIX"
    [ -e "$candidate" ] && int8=$candidate
  fi
  for round in $(seq "$ROUNDS"); do
    ours=$(network_ms "$model")
    ours_int8=$([ -n "$int8" ] && network_ms "$int8" || echo 0)
    peers=$("$PYTHON" "$here/peer_network.py" "$model" --frames "$FRAMES" --threads 2)
    "$PYTHON" - "$model" "$round" "$ours" "$ours_int8" "$peers" "$ratios" <<'PY'
import json, sys
model, round_, ours, int8, peers, log = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
line = [f"{model.split('/')[-1]} round {round_}: streamtrack {ours:.1f} ms"]
record = {}
if int8:
    line.append(f"streamtrack INT8 {int8:.1f} ms ({int8 / ours:.2f}x our f32)")
    record["INT8 / our f32"] = int8 / ours
for peer in map(json.loads, peers.splitlines()):
    ratios = f"ours {ours / peer['median_ms']:.2f}x"
    record[f"ours / {peer['runtime'].split()[0]}"] = ours / peer["median_ms"]
    if int8:
        ratios += f", INT8 {int8 / peer['median_ms']:.2f}x"
    line.append(f"{peer['runtime']} {peer['median_ms']:.1f} ms ({ratios})")
print("; ".join(line))
with open(log, "a") as f:
    f.write(json.dumps(record) + "\n")
PY
  done
  "$PYTHON" - "$model" "$ratios" <<'PY'
import json, statistics, sys
model, log = sys.argv[1], sys.argv[2]
rounds = [json.loads(line) for line in open(log)]
medians = [f"{name} {statistics.median(r[name] for r in rounds):.3f}x" for name in rounds[0]]
print(f"{model.split('/')[-1]} median over {len(rounds)} rounds: " + ", ".join(medians))
PY
done
