"""Tiny and occluded faces: coverage, ID switches and fragments before and after issue 12 (item 5).

    python -m bench.small_faces [--json PATH] [--no-save]

Deterministic (no timing). Each clip is replayed through the pipeline's detection and tracking
without threads (``bench.faces_kept.replay``: the batcher's cadence and re-finding, then the
``Tracker``), for four variants:

- ``default@before``: the default detection on every frame, the tracker before issue 12
  (max_age_s 1.0, no centre-distance pass, no size hold while lost);
- ``default``: the default detection on every frame, today's tracker;
- ``cpu-before``: the cpu profile and tracker before issue 12 (see ``bench.faces_kept``);
- ``cpu``: today's cpu profile (full detection every 12th frame, known faces re-found in between).

Clips with ground truth (one face box per frame):

- ``otb-david@1/2`` and ``@1/3``: OTB David (471 frames of 320x240, read as 30 fps) downscaled by 2
  and 3 with INTER_AREA (faces 12-35 px, median 24 px; and 8-23 px, median 16 px), its
  ``groundtruth_rect.txt`` scaled the same; ``otb-david`` (full size) for reference.
- ``occlusion-100px`` / ``occlusion-36px``: the demo's two people (``stream.demo.render_frames``) on a
  960x540, 25 fps stage; Grace Hopper (face 100 or 36 px high) walks behind Eileen Collins (1.25x
  larger, still) at 2 face heights a second, so MTCNN loses her for about 0.9 s; ground truth is
  both placements' face boxes.

Per clip and variant: ``coverage`` = share of ground-truth boxes with a shown track (CONFIRMED or
LOST, what the overlay draws) at IoU >= 0.5; ``id_switches``, ``fragmentations``, ``idf1``, ``mota``
from py-motmetrics (tests/mot_helpers.py); ``tracks`` = confirmed track IDs; for the occlusion
clips ``hidden_s`` (longest run of frames where the full-quality detector does not find the walking
face) and ``walker_ids`` (track IDs that covered the walking face while it was in view).

Clips without ground truth (Intel preview GIFs: classroom, 15-25 px faces; face-demographics-walking
and -walking-and-pause): ``tracks``, their lengths in frames (shown), ``fragments`` = tracks
confirmed within 1 s after another track was last shown and within one face size of where it was
(a face that came back with a new ID), and the full-quality detector's faces per frame.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bench.faces_kept import SHARED, Detectors, Variant, decode, paired, publish, variant
from stream.config import parse_config
from stream.faces.images import read_bgr
from trackers import Tracker, TrackState, iou_matrix

DAVID = "otb-david/demo/David"
DAVID_FPS = 30.0
GIFS = ("classroom", "face-demographics-walking", "face-demographics-walking-and-pause")
GIF_DIR = "intel-sample-videos/preview"
OCCLUSION_FPS = 25
MIN_IOU = 0.5
REFILL_S = 1.0  # a track confirmed this soon after another vanished nearby counts as a fragment


def variants() -> list[Variant]:
    """default@before, default, cpu-before, cpu (see the module docstring)."""
    old_tracker = variant("cpu-before").tracking
    default = variant("default")
    return [
        Variant("default@before", default.detection, old_tracker),
        default,
        variant("cpu-before"),
        variant("cpu"),
    ]


# ---------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    name: str
    frames: list[np.ndarray]
    times: list[float]
    truth: list[dict[int, np.ndarray]] | None  # per frame: object id -> x1, y1, x2, y2
    walker: int | None = None  # the object that passes behind another (occlusion clips)


def otb_david(scale: float, shared: Path = SHARED) -> Clip:
    folder = shared / DAVID
    xywh = np.loadtxt(folder / "groundtruth_rect.txt", delimiter=",", ndmin=2)
    gt = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * scale
    frames = []
    for number in range(300, 300 + len(gt)):
        image = read_bgr(folder / "img" / f"{number:04d}.jpg")
        if scale != 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        frames.append(image)
    name = "otb-david" if scale == 1.0 else f"otb-david@1/{round(1 / scale)}"
    return Clip(name, frames, [i / DAVID_FPS for i in range(len(gt))], [{0: box} for box in gt])


def occlusion(face_h: float, speed_faces_per_s: float = 2.0, size: tuple[int, int] = (960, 540)) -> Clip:
    """Grace Hopper walks behind a still, 1.25x larger Eileen Collins (back to front)."""
    from stream.demo import EILEEN, HOPPER, Placement, render_frames

    width, height = size
    speed = speed_faces_per_s * face_h / OCCLUSION_FPS
    start, end = width / 2 - 3 * face_h, width / 2 + 3 * face_h
    placements = [
        (
            Placement(HOPPER, start + speed * k, height / 2 + 0.05 * face_h, face_h),
            Placement(EILEEN, width / 2, height / 2, 1.25 * face_h),
        )
        for k in range(int((end - start) / speed))
    ]
    frames = list(render_frames(placements, size))
    truth = [{i: np.array(p.face_box()) for i, p in enumerate(frame)} for frame in placements]
    times = [k / OCCLUSION_FPS for k in range(len(frames))]
    return Clip(f"occlusion-{round(face_h)}px", frames, times, truth, walker=0)


def gif(name: str, shared: Path = SHARED) -> Clip:
    frames, times = decode(shared / GIF_DIR / f"{name}.gif", None)
    return Clip(name, frames, times, None)


# ---------------------------------------------------------------- running


@dataclass
class Run:
    """Every shown track per frame: id -> box."""

    shown: list[dict[int, np.ndarray]]


def run(v: Variant, clip: Clip, detectors: Detectors) -> Run:
    """``bench.faces_kept.replay`` with the track IDs kept."""
    from bench.faces_kept import _cached_detect  # the same full-detection cache as faces_kept
    from stream.pipeline.batcher import FaceMemory, detect_batch
    from stream.types import Frame

    det = v.detection
    tracker = Tracker(v.tracking)
    detector = detectors.detector(det)
    refine = detector.refine if det.refine_between and det.every_n_frames > 1 else None
    memory = FaceMemory() if refine is not None else None
    shown = []
    for index, (image, t) in enumerate(zip(clip.frames, clip.times, strict=True)):
        frame = Frame(clip.name, index, 0, t, t, image)
        detect = functools.partial(_cached_detect, detectors, det, f"{clip.name}#{index}")
        (item,) = detect_batch([frame], detect, lambda f: f.index % det.every_n_frames == 0, refine, memory)
        dets = getattr(item, "detections", None)
        snaps = tracker.update(None, None, t) if dets is None else tracker.update(dets.boxes, dets.scores, t)
        shown.append(
            {s.track_id: s.box for s in snaps if s.state in (TrackState.CONFIRMED, TrackState.LOST) and s.track_id > 0}
        )
    return Run(shown)


def truth_metrics(clip: Clip, result: Run) -> dict[str, Any]:
    from tests.mot_helpers import mot_summary  # py-motmetrics, shared with the tests

    assert clip.truth is not None
    mot = mot_summary(clip.truth, result.shown)
    covered = total = 0
    for truth, shown in zip(clip.truth, result.shown, strict=True):
        boxes = np.stack(list(shown.values())) if shown else np.zeros((0, 4))
        covered += paired(np.stack(list(truth.values())), boxes, MIN_IOU)
        total += len(truth)
    out: dict[str, Any] = {
        "coverage": round(covered / total, 4),
        "id_switches": int(mot["num_switches"]),
        "fragmentations": int(mot.get("num_fragmentations", -1)),
        "idf1": round(mot["idf1"], 3),
        "mota": round(mot["mota"], 3),
        "tracks": len({i for shown in result.shown for i in shown}),
    }
    if clip.walker is not None:
        out["walker_ids"] = sorted(walker_ids(clip, result))
    return out


def walker_ids(clip: Clip, result: Run) -> set[int]:
    """Track IDs that covered the walking face (IoU >= 0.5) on frames where it is clear of the other."""
    assert clip.truth is not None and clip.walker is not None
    ids = set()
    for truth, shown in zip(clip.truth, result.shown, strict=True):
        walker = truth[clip.walker][None, :]
        others = np.stack([box for key, box in truth.items() if key != clip.walker])
        if iou_matrix(walker, others).max() > 0 or not shown:
            continue
        for track_id, box in shown.items():
            if iou_matrix(walker, box[None, :])[0, 0] >= MIN_IOU:
                ids.add(track_id)
    return ids


def hidden_seconds(clip: Clip, detectors: Detectors) -> float:
    """Longest run of frames where the full-quality detector misses the walking face."""
    assert clip.truth is not None and clip.walker is not None
    reference = variant("default").detection
    longest = current = 0
    for index, (image, truth) in enumerate(zip(clip.frames, clip.truth, strict=True)):
        found = detectors.detect(reference, f"{clip.name}#{index}", image).boxes
        walker = truth[clip.walker][None, :]
        others = np.stack([box for key, box in truth.items() if key != clip.walker])
        seen = len(found) > 0 and bool(
            np.any((iou_matrix(walker, found)[0] >= 0.3) & (iou_matrix(others, found).max(axis=0) < 0.3))
        )
        current = 0 if seen else current + 1
        longest = max(longest, current)
    return round(longest / OCCLUSION_FPS, 2)


def unlabelled_metrics(clip: Clip, result: Run, detectors: Detectors) -> dict[str, Any]:
    lengths: dict[int, int] = {}
    first: dict[int, int] = {}
    last_seen: dict[int, tuple[int, np.ndarray]] = {}
    fragments = 0
    for index, shown in enumerate(result.shown):
        for track_id, box in shown.items():
            lengths[track_id] = lengths.get(track_id, 0) + 1
            if track_id not in first:
                first[track_id] = index
                fragments += _refills(index, box, last_seen, shown, clip.times)
            last_seen[track_id] = (index, box)
    reference = variant("default").detection
    faces = [len(detectors.detect(reference, f"{clip.name}#{i}", im)) for i, im in enumerate(clip.frames)]
    return {
        "tracks": len(lengths),
        "track_lengths": sorted(lengths.values(), reverse=True),
        "fragments": fragments,
        "frames": len(clip.frames),
        "reference_faces_per_frame": round(float(np.mean(faces)), 2),
    }


def _refills(
    index: int,
    box: np.ndarray,
    last_seen: dict[int, tuple[int, np.ndarray]],
    shown: dict[int, Any],
    times: Sequence[float],
) -> int:
    """1 when a track that is no longer shown was last seen within ``REFILL_S`` and one face size of ``box``."""
    size = float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1.0)))
    centre = (box[:2] + box[2:]) / 2
    for track_id, (seen, old) in last_seen.items():
        if track_id in shown or times[index] - times[seen] > REFILL_S:
            continue
        if np.hypot(*(centre - (old[:2] + old[2:]) / 2)) <= size:
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.small_faces", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    detectors, tested = Detectors(), variants()
    clips = [otb_david(1.0), otb_david(1 / 2), otb_david(1 / 3), occlusion(100.0), occlusion(36.0)]
    results: dict[str, Any] = {}
    for clip in clips:
        entry: dict[str, Any] = {
            "frames": len(clip.frames),
            "size": f"{clip.frames[0].shape[1]}x{clip.frames[0].shape[0]}",
        }
        if clip.walker is not None:
            entry["hidden_s"] = hidden_seconds(clip, detectors)
        for v in tested:
            entry[v.name] = truth_metrics(clip, run(v, clip, detectors))
        results[clip.name] = entry
        print(clip.name, json.dumps(entry), flush=True)
    for name in GIFS:
        clip = gif(name)
        results[name] = {v.name: unlabelled_metrics(clip, run(v, clip, detectors), detectors) for v in tested}
        print(clip.name, json.dumps(results[name]), flush=True)
    result = {
        "date": dt.date.today().isoformat(),
        "variants": [v.name for v in tested],
        "clips": results,
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__},
        "config_cpu": parse_config("profile: cpu\n").detection.model_dump(mode="json"),
    }
    publish(result, "small-faces", save=not args.no_save, json_path=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
