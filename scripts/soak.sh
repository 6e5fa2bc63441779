#!/usr/bin/env bash
# Resource soak: runs `live` on the traffic video looped as fast as it decodes for a while,
# then `serve` with streams created and deleted in a loop, and samples the process's
# resident memory, open files and threads every few seconds. Flat figures after warm-up
# mean nothing leaks. Prints one line per sample: seconds, RSS MiB, open files, threads.
#
# Usage: scripts/soak.sh [streamtrack binary] [live seconds] [server cycles]
# (dev-only, not part of CI; binds 127.0.0.1:18080)
set -euo pipefail
bin=${1:-target/release/streamtrack}
seconds=${2:-1800}
cycles=${3:-30}
model=../shared/data/models/yolo11n-coco-320.onnx
video=../shared/data/video/traffic-640x360.mp4
interval=10

sample() { # pid start
  local rss files threads
  rss=$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status")
  files=$(ls "/proc/$1/fd" | wc -l)
  threads=$(awk '/Threads/ {print $2}' "/proc/$1/status")
  echo "$(( $(date +%s) - $2 )) s  rss ${rss} MiB  files ${files}  threads ${threads}"
}

echo "== live, ${seconds} s, looped file as fast as it decodes"
"$bin" --quiet live --source "$video" --loop --duration "$seconds" --device cpu -m "$model" \
  --input-size 256 --events /dev/null &
pid=$!
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  sample "$pid" "$start" || true
  sleep "$interval"
done
wait "$pid"

echo "== serve, ${cycles} cycles of 4 streams created, run 10 s, deleted"
media=$(dirname "$(realpath "$video")")
results=$(mktemp -d)
"$bin" --quiet serve --bind 127.0.0.1:18080 --media-root "$media" --results-dir "$results" \
  --device cpu -m "$model" --input-size 256 &
pid=$!
start=$(date +%s)
sleep 3
for cycle in $(seq "$cycles"); do
  ids=()
  for _ in 1 2 3 4; do
    ids+=("$(curl -s -H 'content-type: application/json' \
      -d '{"source": "traffic-640x360.mp4"}' 127.0.0.1:18080/v1/streams |
      sed -E 's/.*"id":"([^"]+)".*/\1/')")
  done
  sleep 10
  for id in "${ids[@]}"; do curl -s -X DELETE "127.0.0.1:18080/v1/streams/$id" >/dev/null; done
  echo -n "cycle $cycle: "
  sample "$pid" "$start"
done
kill -TERM "$pid"
wait "$pid" || true
rm -rf "$results"
