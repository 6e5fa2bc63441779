#!/usr/bin/env python3
"""The Python stack streamtrack replaces, for speed comparisons (dev-only).

OpenCV decodes the video, letterboxes each frame (cv2.resize, grey 114 border) and writes an
annotated MP4; ONNX Runtime runs the YOLO export; boxes are decoded and suppressed per class
with NumPy/OpenCV (conf 0.25, IoU 0.7, 300 detections, as Ultralytics does); supervision's
ByteTrack (supervision 0.25; later releases dropped it) tracks them. This is the seed's
pipeline without the Ultralytics wrapper, which would pull in PyTorch. Prints one line:
frames, seconds, FPS.

    python3 scripts/reference_stack.py VIDEO MODEL.onnx [--out OUT.mp4]
"""
import argparse
import time

import cv2
import numpy as np
import onnxruntime as ort
import supervision as sv


def letterbox(frame, size):
    h, w = frame.shape[:2]
    scale = min(size / h, size / w)
    nh, nw = round(h * scale), round(w * scale)
    resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    padded = cv2.copyMakeBorder(resized, top, size - nh - top, left, size - nw - left,
                                cv2.BORDER_CONSTANT, value=(114, 114, 114))
    blob = padded[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(blob), scale, left, top


def detect(output, scale, left, top, conf=0.25, iou=0.7, max_det=300):
    pred = output[0].T  # [N, 4 + nc]
    scores = pred[:, 4:]
    classes = scores.argmax(1)
    best = scores[np.arange(len(classes)), classes]
    keep = best > conf
    pred, classes, best = pred[keep], classes[keep], best[keep]
    cx, cy, w, h = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], 1)
    idx = cv2.dnn.NMSBoxesBatched(boxes.tolist(), best.tolist(), classes.tolist(), conf, iou)
    idx = np.array(idx, dtype=int).reshape(-1)[:max_det]
    xyxy = np.stack([boxes[idx, 0], boxes[idx, 1],
                     boxes[idx, 0] + boxes[idx, 2], boxes[idx, 1] + boxes[idx, 3]], 1)
    xyxy = (xyxy - [left, top, left, top]) / scale
    return sv.Detections(xyxy=xyxy.reshape(-1, 4), confidence=best[idx],
                         class_id=classes[idx])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("model")
    parser.add_argument("--out", default="/tmp/reference_stack.mp4")
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    size = session.get_inputs()[0].shape[2]
    capture = cv2.VideoCapture(args.video)
    fps = capture.get(cv2.CAP_PROP_FPS)
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    tracker = sv.ByteTrack(frame_rate=int(round(fps)))
    frames, start = 0, time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        blob, scale, left, top = letterbox(frame, size)
        tracks = tracker.update_with_detections(
            detect(session.run(None, {name: blob})[0], scale, left, top))
        for (x1, y1, x2, y2), track_id in zip(tracks.xyxy.astype(int), tracks.tracker_id):
            cv2.rectangle(frame, (x1, y1), (x2, y2), (0, 255, 0), 2)
            cv2.putText(frame, f"#{track_id}", (x1, y1 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (0, 255, 0), 1)
        writer.write(frame)
        frames += 1
    writer.release()
    elapsed = time.perf_counter() - start
    print(f"reference stack: {frames} frames in {elapsed:.1f} s ({frames / elapsed:.1f} FPS)")


if __name__ == "__main__":
    main()
