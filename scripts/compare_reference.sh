#!/bin/bash
# Dev-only: the Python reference stack and `streamtrack process` on the same video and model,
# one after the other in one command, on the CPU. Needs a virtualenv with
#   pip install onnxruntime opencv-python-headless numpy "supervision==0.25.1"
# (PYTHON=path/to/venv/bin/python3) and a built streamtrack (STREAMTRACK=path/to/binary).
# Usage: scripts/compare_reference.sh [VIDEO] [MODEL]
set -euo pipefail
VIDEO=${1:-../shared/data/video/traffic-640x360.mp4}
MODEL=${2:-../shared/data/models/yolov8n-coco-640.onnx}
PYTHON=${PYTHON:-python3}
STREAMTRACK=${STREAMTRACK:-streamtrack}
ref=$("$PYTHON" "$(dirname "$0")/reference_stack.py" "$VIDEO" "$MODEL" | tail -1)
ours=$("$STREAMTRACK" process "$VIDEO" -m "$MODEL" --device cpu --quiet \
    -o /tmp/streamtrack_compare.mp4 2>&1 | grep ' FPS)' | tail -1)
echo "$ref"
echo "streamtrack: $ours"
ref_fps=$(sed -E 's/.*\(([0-9.]+) FPS\).*/\1/' <<<"$ref")
our_fps=$(sed -E 's/.*\(([0-9.]+) FPS\).*/\1/' <<<"$ours")
echo "ratio streamtrack / reference: $(python3 -c "print(f'{$our_fps / $ref_fps:.2f}x')")"
