"""JPEG decoding cost: the package's strict decoder (simplejpeg, libjpeg warnings are errors) against OpenCV's
lenient one, on a camera-like frame at the sizes the robot's cameras send; medians over interleaved calls (both
decoders see the same machine load).

    .venv/bin/python bench/jpeg_decode.py [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pi0_ros.image_conversion import decode_compressed, encode_compressed  # noqa: E402

SIZES = {"224x224": (224, 224), "480x640": (480, 640), "720x1280": (720, 1280)}


def camera_like_frame(height: int, width: int) -> np.ndarray:
    """Smooth shading plus texture and edges: JPEG sizes in the range of a real scene at quality 90."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([np.sin(6 * x) * 80 + 120, np.cos(5 * y) * 70 + 110, (x + y) * 90 + 40], axis=-1)
    noise = cv2.GaussianBlur(rng.normal(0, 40, (height, width, 3)), (5, 5), 1.5)
    frame = np.clip(base + noise, 0, 255).astype(np.uint8)
    cv2.rectangle(frame, (width // 5, height // 4), (width // 2, height // 2), (200, 30, 60), -1)
    return frame


def opencv_decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # the node decodes on one inference thread
    for name, (height, width) in SIZES.items():
        data = encode_compressed(camera_like_frame(height, width), "jpeg")
        assert np.array_equal(decode_compressed(data), opencv_decode(data))  # same libjpeg-turbo result
        times = {"strict": [], "opencv": []}
        for _ in range(args.calls):
            for label, decode in (("strict", decode_compressed), ("opencv", opencv_decode)):
                start = time.perf_counter()
                decode(data)
                times[label].append(time.perf_counter() - start)
        print(json.dumps({"size": name, "jpeg_bytes": len(data),
                          **{f"{k}_ms_median": round(1e3 * statistics.median(v), 3) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
