#!/bin/bash
# Dev-only: the GPU figures the README reports, in one run on a machine with a GPU, so a
# short loan of one is enough. Needs a streamtrack binary (STREAMTRACK=path; a release build
# made elsewhere runs as long as the machine has a Vulkan driver) and the shared data
# (DATA=path, default ../shared/data).
#
# 1. `bench --compare-backends` on the 1080p video with yolov8n-640: per-stage decode vs
#    network (is the pipeline decode-bound?), the GPU with the CPU letterbox and with the
#    GPU letterbox in the same run, and the CPU backends beside them.
# 2. The same with yolo11n-320 (is the GPU network stage dispatch-bound?).
# 3. `process` of the 1080p video twice in a row with a fresh cache: the first run tunes the
#    kernels, the second reuses the stored autotune results (start-up cost per process).
# Usage: scripts/gpu_check.sh [FRAMES]
set -euo pipefail
STREAMTRACK=${STREAMTRACK:-streamtrack}
DATA=${DATA:-../shared/data}
FRAMES=${1:-100}
VIDEO=$DATA/video/pedestrians-1920x1080.mp4
export STREAMTRACK_CACHE=${STREAMTRACK_CACHE:-$(mktemp -d)}
for model in yolov8n-coco-640 yolo11n-coco-320; do
    echo "== bench $model"
    "$STREAMTRACK" bench "$VIDEO" -m "$DATA/models/$model.onnx" --compare-backends \
        --frames "$FRAMES" --warmup 10
done
for run in first second; do
    echo "== process, $run run (cache $STREAMTRACK_CACHE)"
    start=$(date +%s.%N)
    "$STREAMTRACK" process "$VIDEO" -m "$DATA/models/yolov8n-coco-640.onnx" --device gpu \
        --quiet -o "$STREAMTRACK_CACHE/out.mp4" --events "$STREAMTRACK_CACHE/events.jsonl"
    echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s"
done
