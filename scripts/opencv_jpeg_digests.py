"""Prints the FNV-1a 64-bit digest of OpenCV's RGB decode of each shared test image.

The digests in `src/video/jpeg/mod.rs` (test `shared_images_decode_exactly_as_opencv`) came
from this script with opencv-python 5.0.0.93 (bundled libjpeg-turbo 3.1.2):
    python3 scripts/opencv_jpeg_digests.py ../shared/data/images/*.jpg
"""

import sys

import cv2


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


for path in sys.argv[1:]:
    rgb = cv2.imread(path)[:, :, ::-1].copy()
    print(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} 0x{fnv1a64(rgb.tobytes()):016x}")
