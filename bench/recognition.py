"""CPU (or GPU) speed of the recognition core: faces/s per backbone, detection frames/s.

    python -m bench.recognition [--device cpu] [--faces 32] [--json PATH]

Backbones run with random weights (speed does not depend on them); FaceNet uses the real
converted weights. Detection runs on frames of ../shared/data/facenet-pytorch/examples/video.mp4
resized to 640x360 and 1280x720. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from stream.faces.adaface import ARCHS, AdaFaceEmbedder, build_backbone
from stream.faces.detector import DetectorSettings, MtcnnDetector
from stream.faces.facenet import FaceNetEmbedder

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared/data/facenet-pytorch/examples/video.mp4"


def _rate(count: int, fn, repeats: int = 2) -> float:
    """Best-of-``repeats`` items per second of ``fn`` (after one warm-up call)."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return count / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def embed_rates(device: str, faces: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    out = {}
    for arch in ARCHS:
        emb = AdaFaceEmbedder(arch, build_backbone(arch), device=device, batch_size=faces)
        crops = rng.integers(0, 256, (faces, 112, 112, 3), dtype=np.uint8)
        out[f"adaface_{arch}"] = round(_rate(faces, lambda e=emb, c=crops: e.embed(c)), 2)
    facenet = FaceNetEmbedder(REPO / "checkpoints", device=device, batch_size=faces)
    crops = rng.integers(0, 256, (faces, 160, 160, 3), dtype=np.uint8)
    out["facenet"] = round(_rate(faces, lambda: facenet.embed(crops)), 2)
    return out


def clip_frames(count: int) -> list[np.ndarray]:
    with av.open(str(CLIP)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


def detect_rates(device: str, frames: list[np.ndarray]) -> dict[str, float]:
    detector = MtcnnDetector(DetectorSettings(device=device))
    out = {}
    for width, height in ((640, 360), (1280, 720)):
        resized = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]
        out[f"detect_fps_{width}x{height}"] = round(
            _rate(len(resized), lambda r=resized: [detector.detect_one(x) for x in r], 1), 2
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--faces", type=int, default=16, help="crops per embedding batch")
    parser.add_argument("--frames", type=int, default=10, help="video frames per detection size")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "machine": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
        "faces_per_s": embed_rates(args.device, args.faces),
        **detect_rates(args.device, clip_frames(args.frames)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
