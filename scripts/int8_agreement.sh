#!/usr/bin/env bash
# Dev-only: INT8 accuracy held out. For each model, each range estimator and each number of
# convolutions kept in f32, calibrates on one shared video (100 frames) plus the shared
# images, then scores the INT8 model against the float one with `agree` on 105 frames of
# both videos: the other video is held out, the calibration video is in-sample (different
# frames). Both ways round; prints one line per run.
# Usage: STREAMTRACK=path/to/binary scripts/int8_agreement.sh [MODEL...]
#        (ESTIMATORS="minmax percentile mse" KEEP="0 4 8" by default)
set -euo pipefail
STREAMTRACK=${STREAMTRACK:-target/release/streamtrack}
DATA=${DATA:-../shared/data}
ESTIMATORS=${ESTIMATORS:-minmax percentile mse}
KEEP=${KEEP:-0 4 8}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=("$DATA/models/yolov8n-coco-640.onnx" "$DATA/models/yolo11n-coco-320.onnx")
fi
traffic=$DATA/video/traffic-640x360.mp4
pedestrians=$DATA/video/pedestrians-768x576.mp4
for model in "${models[@]}"; do
  for calibration in "$traffic" "$pedestrians"; do
    for estimator in $ESTIMATORS; do
      for keep in $KEEP; do
        "$STREAMTRACK" -q quantize -m "$model" -o "$out/int8.bpk" --calibrate "$calibration" \
          "$DATA/images" --calibration-frames 100 --estimator "$estimator" --keep-float "$keep" \
          >/dev/null
        for video in "$traffic" "$pedestrians"; do
          held=$([ "$video" = "$calibration" ] && echo in-sample || echo held-out)
          result=$("$STREAMTRACK" -q agree -m "$out/int8.bpk" --reference "$model" \
            --frames 105 "$video" | tail -1)
          echo "$(basename "$model") calibrated on $(basename "$calibration"), $estimator," \
            "keep $keep f32; $(basename "$video") ($held): $result"
        done
      done
    done
  done
done
