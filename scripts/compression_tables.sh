#!/bin/bash
# Dev-only: the INT8 and pruning tables of the README. For each model, writes the quantised
# and pruned copies, scores each against the float original on evenly spaced frames of both
# videos (`agree`), and times the network of each (`bench`, one run per model on the CPU).
# Usage: scripts/compression_tables.sh [MODEL...]   (STREAMTRACK=path/to/binary)
set -euo pipefail
BIN=${STREAMTRACK:-streamtrack}
DATA=../shared/data
VIDEOS=("$DATA/video/traffic-640x360.mp4" "$DATA/video/pedestrians-768x576.mp4")
OUT=${OUT:-/tmp/streamtrack-compression}
mkdir -p "$OUT"
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=("$DATA/models/yolov8n-coco-640.onnx" "$DATA/models/yolo11n-coco-320.onnx")
for model in "${MODELS[@]}"; do
    name=$(basename "$model" .onnx)
    variants=()
    "$BIN" quantize --quiet -m "$model" -o "$OUT/$name-q8.bpk" --min-map50 0
    variants+=("$OUT/$name-q8.bpk")
    for ratio in 0.01 0.02 0.05 0.1 0.25 0.5; do
        "$BIN" prune --quiet -m "$model" --ratio "$ratio" -o "$OUT/$name-p$ratio.bpk"
        variants+=("$OUT/$name-p$ratio.bpk")
    done
    for v in "${variants[@]}"; do
        "$BIN" agree --quiet --device cpu --frames 50 --min-map50 0 -m "$v" --reference "$model" \
            "${VIDEOS[@]}"
        ls -l "$v" | awk '{printf "  size %.2f MB\n", $5 / 1e6}'
    done
    bench_models=()
    for v in "$model" "${variants[@]}"; do bench_models+=(-m "$v"); done
    "$BIN" bench --quiet --device cpu --frames 20 --warmup 3 "${bench_models[@]}" \
        "$DATA/video/traffic-640x360.mp4" | grep -E "^\[|^network|^pipeline"
done
