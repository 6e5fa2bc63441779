#!/usr/bin/env bash
# Holds `live` against a simulated 25 fps camera (the traffic video played in real time, looped)
# for one and for five minutes on the CPU at a reduced input size (256 by default), and prints each run's
# summary: frames processed, dropped, skipped, and end-to-end latency p50/p99/max. Bounded
# latency shows as equal percentiles in the short and the long run.
#
# Usage: scripts/live_soak.sh [streamtrack binary] [model] [input size] [durations...]
# (dev-only, not part of CI)
set -euo pipefail
bin=${1:-target/release/streamtrack}
model=${2:-../shared/data/models/yolo11n-coco-320.onnx}
size=${3:-256}
shift $(( $# < 3 ? $# : 3 ))
durations=${*:-60 300}
video=../shared/data/video/traffic-640x360.mp4
for seconds in $durations; do
  echo "== ${seconds} s"
  "$bin" --log-level warn live --source "$video" --realtime --loop --duration "$seconds" \
    --device cpu -m "$model" --input-size "$size" --events /tmp/streamtrack-soak.jsonl 2>&1 |
    grep -E "frames in|latency"
done
rm -f /tmp/streamtrack-soak.jsonl
