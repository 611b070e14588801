"""Faces the video settings of a profile keep, against the default settings (issue 12, item 2).

    python -m bench.faces_kept [--profiles cpu,cpu-before,gpu] [--json PATH] [--no-save]

Deterministic (no timing): the speed side is ``python -m bench --clip 720p --profile cpu``.

Reference ("the faces the default settings find"): MTCNN with the built-in ``detection`` values
(``profile: default``: min face 20 px, detect width 640, pyramid factor 0.709, thresholds 0.6/0.7/0.7)
on every image and every frame.

Stills (adaface ``face_alignment/mtcnn_pytorch/images/office1-5.jpg``, insightface
``python-package/insightface/data/images/t1.jpg``, at their own size): the profile's *video*
detector (its ``detection`` section, the one ``run`` uses on frames) on each image. A reference
face is kept when a face of the profile pairs with it at IoU >= 0.5 (Hungarian pairing).
``kept`` = kept faces / reference faces, over all six images. (The still-image commands themselves
detect at full quality whatever the profile, so for them this is always 100 %.)

Video (facenet-pytorch ``examples/video.mp4``, 105 frames of 1080p25, resized to 1280x720 H.264 as
``python -m bench --clip 720p`` does): the profile's pipeline, replayed without threads: its
detector on the frames the batcher detects (``index % every_n_frames == 0``), its ``Tracker`` on
every frame (``None`` on skipped frames), time = the frame's pts. The faces a run shows on a frame
are its CONFIRMED and LOST tracks' boxes (what the recogniser labels and the overlay draws). A
reference face of a frame is covered when a shown box pairs with it at IoU >= 0.5.

- ``covered``: covered reference faces / reference faces, over all frames. Even the default
  settings do not reach 100 %: a new face is shown only once its track is confirmed (3 hits and
  0.2 s), and predicted boxes can drift under IoU 0.5.
- ``kept`` = ``covered`` of the profile / ``covered`` of the default settings' own pipeline: the
  share of the faces the default settings show that the profile shows too.

Variants: any profile name (``default``, ``cpu``, ``gpu``), and ``cpu-before``: the cpu profile and
tracker as they were before issue 12 (commit 49af991: detect width 480, min face 40, pyramid factor
0.6, thresholds 0.7, every 5th frame; tracker max_age 1 s, no centre pass, no size hold).

The MTCNN backend is "fast" everywhere (same networks and results as stock to float rounding,
parity-tested in tests/faces/test_fast_mtcnn.py), so the reference takes minutes, not tens of them.
Prints one JSON object and saves it as bench/results/faces-kept-<date>-<machine>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.baseline import BEFORE_CPU
from stream.config import AppConfig, DetectionConfig, parse_config
from stream.faces.detector import MtcnnDetector
from stream.faces.images import read_bgr
from stream.faces.models import detector_settings
from stream.pipeline.batcher import FaceMemory, detect_batch
from stream.pipeline.messages import Detected
from stream.types import FaceDetections, Frame
from trackers import Tracker, TrackerSettings, TrackState, associate, iou_matrix

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ADAFACE_SHARED_DATA", REPO.parent / "shared" / "data"))
STILLS = (
    *(f"adaface/face_alignment/mtcnn_pytorch/images/office{n}.jpg" for n in range(1, 6)),
    "insightface/python-package/insightface/data/images/t1.jpg",
)
VIDEO = "facenet-pytorch/examples/video.mp4"
MIN_IOU = 0.5
RESULTS = REPO / "bench/results"


@dataclass(frozen=True)
class Variant:
    """What decides which faces a run shows: the video detection settings and the tracker's."""

    name: str
    detection: DetectionConfig
    tracking: TrackerSettings


def variant(name: str) -> Variant:
    """``cpu-before``, or a profile name (its presets over the built-in values)."""
    config: AppConfig = parse_config(BEFORE_CPU if name == "cpu-before" else f"profile: {name}\n")
    return Variant(name, config.detection, config.tracking.tracker_settings())


REFERENCE = "default"


class Detectors:
    """One fast-backend MTCNN per distinct set of detection settings, and a cache of full detections."""

    def __init__(self) -> None:
        self._detectors: dict[tuple[Any, ...], MtcnnDetector] = {}
        self._results: dict[tuple[Any, ...], FaceDetections] = {}

    @staticmethod
    def _key(det: DetectionConfig) -> tuple[Any, ...]:
        return (det.min_face_px, det.thresholds, det.pyramid_factor, det.detect_width, det.edge_pad)

    def detector(self, det: DetectionConfig) -> MtcnnDetector:
        key = (*self._key(det), det.refine_thresholds)
        detector = self._detectors.get(key)
        if detector is None:
            fast = det.model_copy(update={"backend": "fast"})
            detector = self._detectors[key] = MtcnnDetector(detector_settings(fast, "cpu"))
        return detector

    def detect(self, det: DetectionConfig, image_key: str, image: np.ndarray) -> FaceDetections:
        key = (*self._key(det), image_key)
        found = self._results.get(key)
        if found is None:
            found = self._results[key] = self.detector(det).detect_one(image)
        return found


def paired(reference: np.ndarray, boxes: np.ndarray, min_iou: float = MIN_IOU) -> int:
    """How many reference boxes pair (Hungarian on IoU) with a box at IoU >= ``min_iou``."""
    if len(reference) == 0 or len(boxes) == 0:
        return 0
    matches, _, _ = associate(iou_matrix(reference, boxes), min_iou)
    return len(matches)


# ---------------------------------------------------------------- stills


def stills_kept(variants: Sequence[Variant], detectors: Detectors, shared: Path = SHARED) -> dict[str, Any]:
    """Per image and in total: reference faces, and per variant its faces and the reference faces kept."""
    ref_cfg = variant(REFERENCE).detection
    rows, totals = [], {v.name: [0, 0] for v in variants}
    reference_total = 0
    for relative in STILLS:
        image = read_bgr(shared / relative)
        ref = detectors.detect(ref_cfg, relative, image)
        row: dict[str, Any] = {"image": relative, "size": f"{image.shape[1]}x{image.shape[0]}", "reference": len(ref)}
        reference_total += len(ref)
        for v in variants:
            found = detectors.detect(v.detection, relative, image)
            kept = paired(ref.boxes, found.boxes)
            row[v.name] = {"faces": len(found), "kept": kept}
            totals[v.name][0] += len(found)
            totals[v.name][1] += kept
        rows.append(row)
    summary = {
        v.name: {
            "faces": totals[v.name][0],
            "kept_faces": totals[v.name][1],
            "kept": round(totals[v.name][1] / reference_total, 4) if reference_total else None,
        }
        for v in variants
    }
    return {"reference_faces": reference_total, "images": rows, "by_variant": summary}


# ---------------------------------------------------------------- video


def decode(path: Path, size: tuple[int, int] | None) -> tuple[list[np.ndarray], list[float]]:
    """Every frame (BGR) and its pts in seconds."""
    import av

    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        for index, frame in enumerate(container.decode(stream)):
            if size is not None and (frame.width, frame.height) != size:
                frame = frame.reformat(width=size[0], height=size[1])
            frames.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.time) if frame.time is not None else index / rate)
    return frames, times


@dataclass(frozen=True)
class Replay:
    """What a variant's pipeline shows on each frame, and how often it detected."""

    shown: list[np.ndarray]  # per frame: (N, 4) boxes of CONFIRMED and LOST tracks
    detector_calls: int
    tracks: int


def replay(v: Variant, frames: Sequence[np.ndarray], times: Sequence[float], detectors: Detectors, clip: str) -> Replay:
    """The pipeline without threads: one-frame batches through the batcher's ``detect_batch`` (its
    cadence, ``index % every_n_frames``, and re-finding known faces in between with
    ``refine_between``), then the recogniser's tracker."""
    det = v.detection
    tracker = Tracker(v.tracking)
    detector = detectors.detector(det)
    refine = detector.refine if det.refine_between and det.every_n_frames > 1 else None
    memory = FaceMemory() if refine is not None else None
    shown, calls, ids = [], 0, set()

    def needs_detection(frame: Frame) -> bool:
        return frame.index % det.every_n_frames == 0

    for index, (image, t) in enumerate(zip(frames, times, strict=True)):
        frame = Frame(clip, index, 0, t, t, image)
        detect = functools.partial(_cached_detect, detectors, det, f"{clip}#{index}")
        (item,) = detect_batch([frame], detect, needs_detection, refine, memory)
        assert isinstance(item, Detected)
        calls += needs_detection(frame)
        dets = item.detections
        snaps = tracker.update(None, None, t) if dets is None else tracker.update(dets.boxes, dets.scores, t)
        boxes = [s.box for s in snaps if s.state in (TrackState.CONFIRMED, TrackState.LOST) and s.track_id > 0]
        ids |= {s.track_id for s in snaps if s.track_id > 0}
        shown.append(np.stack(boxes) if boxes else np.zeros((0, 4), np.float32))
    return Replay(shown, calls, len(ids))


def _cached_detect(
    detectors: Detectors, det: DetectionConfig, key: str, images: Sequence[np.ndarray]
) -> list[FaceDetections]:
    return [detectors.detect(det, key, images[0])]


def video_kept(
    variants: Sequence[Variant],
    detectors: Detectors,
    frames: Sequence[np.ndarray],
    times: Sequence[float],
    clip: str,
) -> dict[str, Any]:
    ref_cfg = variant(REFERENCE).detection
    reference = [detectors.detect(ref_cfg, f"{clip}#{i}", image).boxes for i, image in enumerate(frames)]
    total = sum(len(r) for r in reference)
    out: dict[str, Any] = {"frames": len(frames), "reference_faces": total}
    baseline = None
    for v in [variant(REFERENCE), *[v for v in variants if v.name != REFERENCE]]:
        run = replay(v, frames, times, detectors, clip)
        covered = sum(paired(r, s) for r, s in zip(reference, run.shown, strict=True))
        share = covered / total if total else 0.0
        baseline = share if v.name == REFERENCE else baseline
        out[v.name] = {
            "covered_faces": covered,
            "covered": round(share, 4),
            "kept": round(share / baseline, 4) if baseline else None,
            "detector_calls": run.detector_calls,
            "tracks": run.tracks,
            "every_n_frames": v.detection.every_n_frames,
        }
    return out


# ---------------------------------------------------------------- main


def machine_tag() -> str:
    return f"cpu{os.cpu_count()}" if not torch.cuda.is_available() else "gpu"


def publish(result: dict[str, Any], stem: str, *, save: bool, json_path: Path | None) -> None:
    """Print ``result`` as JSON; save it as bench/results/<stem>-<date>-<machine>.json unless ``save`` is
    off; also write it to ``json_path`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if save:
        path = RESULTS / f"{stem}-{result['date']}-{machine_tag()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        print(f"saved {path}")
    if json_path is not None:
        json_path.write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import make_720p_clip

    parser = argparse.ArgumentParser(prog="python -m bench.faces_kept", description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default="cpu,cpu-before", help="comma-separated variants (see the docstring)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = [variant(name) for name in args.profiles.split(",") if name]
    detectors = Detectors()
    stills = stills_kept(variants, detectors)
    with tempfile.TemporaryDirectory(prefix="faces-kept-") as tmp:
        clip = make_720p_clip(Path(tmp), SHARED / VIDEO)
        frames, times = decode(clip, None)
    video = video_kept(variants, detectors, frames, times, "video.mp4@720p")
    result = {
        "date": dt.date.today().isoformat(),
        "variants": {
            v.name: {"detection": v.detection.model_dump(mode="json"), "tracking": dataclasses.asdict(v.tracking)}
            for v in variants
        },
        "reference": "profile default (built-in detection values), every image and frame",
        "min_iou": MIN_IOU,
        "stills": stills,
        "video": {"clip": f"{VIDEO} resized to 1280x720 (as python -m bench --clip 720p)", **video},
        "machine": {"host": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
    }
    publish(result, "faces-kept", save=not args.no_save, json_path=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
