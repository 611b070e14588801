"""How many embeddings best-shot selection saves on a real crowd clip, versus embedding every face.

    python -m bench.tracking [--device cpu] [--detect-width 640] [--time-embed] [--json PATH]

Decodes ../shared/data/facenet-pytorch/examples/video.mp4 (1080p, 105 frames, 25 fps) with PyAV,
detects faces with MTCNN on a ``--detect-width`` copy, tracks them with the default ``Tracker``
(time = the frame's pts in seconds) and offers the crop of every matched confirmed track to a
``BestShotSelector`` with default settings, drained every frame (``ready`` with no practical
limit). It counts the crops the selector hands out (what the embedder would run on) against every
detected face of every frame (what embedding each face each frame costs). No ground truth: no MOTA.

A second selector with ``min_quality=0`` runs on the same crops, and ``tracks`` lists each confirmed
track's best crop factors: on this clip most mid-size faces (40-70 px at 1080p) score under the
default ``min_quality`` (0.1), mainly through the sharpness factor, so they are never embedded.

With ``--time-embed`` both sets are also embedded with FaceNet (``checkpoints/``) and timed; the
every-face set is ~20x larger, so this takes a while on a CPU. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from stream.faces.align import warp_to_template
from stream.faces.detector import DetectorSettings, MtcnnDetector, detector_min_face_px
from stream.faces.embedder import crop_for
from stream.identity.bestshot import BestShotSelector, BestShotSettings, CropQuality, crop_quality
from stream.types import FaceCrop, FaceDetections, TrackKey
from trackers import Tracker, TrackerSettings, TrackSnapshot, TrackState

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared/data/facenet-pytorch/examples/video.mp4"
DRAIN_ALL = 1_000_000  # "drained each frame": hand out every due crop
STREAM = "bench"


@dataclass
class Counts:
    frames: int = 0
    seconds_of_video: float = 0.0
    faces_total: int = 0
    faces_on_confirmed_tracks: int = 0
    crops_offered: int = 0
    crops_held: int = 0
    best_shot: int = 0
    track_ids: set[int] = field(default_factory=set)
    embedded_tracks: set[int] = field(default_factory=set)
    best_shot_no_floor: int = 0  # the same selection with min_quality=0 (every track gets embedded)
    embedded_tracks_no_floor: set[int] = field(default_factory=set)
    max_faces_in_frame: int = 0
    per_track: dict[int, dict[str, Any]] = field(default_factory=dict)
    detect_s: float = 0.0
    track_and_select_s: float = 0.0


@dataclass
class Crops:
    """Embedder crops kept for ``--time-embed`` (empty otherwise)."""

    every_face: list[np.ndarray] = field(default_factory=list)
    best_shot: list[np.ndarray] = field(default_factory=list)


def frame_rate(path: Path) -> float:
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    if not rate:
        raise SystemExit(f"{path}: no frame rate in the video stream")
    return float(rate)


def decode(path: Path, rate: float) -> Iterator[tuple[float, np.ndarray]]:
    """(pts seconds, BGR frame) for each video frame, streamed (1080p frames are not all kept)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else index / rate
            yield t, frame.to_ndarray(format="bgr24")


def quality_crop(
    image: np.ndarray, dets: FaceDetections, snap: TrackSnapshot, frame: int, min_face_px: float, embed_crop
) -> tuple[FaceCrop, CropQuality]:
    """The track's matched face as a FaceCrop scored by ``crop_quality``; crop = what gets embedded."""
    box, score, points = dets.boxes[snap.det_index], float(dets.scores[snap.det_index]), dets.landmarks[snap.det_index]
    aligned = warp_to_template(image, points)
    quality = crop_quality(box, score, points, image.shape[:2], aligned, min_face_px)
    crop = embed_crop(image, box, points) if embed_crop is not None else aligned
    return FaceCrop(TrackKey(STREAM, 0, snap.track_id), frame, crop, quality.score, quality.flags), quality


def note_track(counts: Counts, track_id: int, quality: CropQuality) -> None:
    """Per track: faces offered and the factors of its best crop (why a track is or is not embedded)."""
    entry = counts.per_track.setdefault(track_id, {"track_id": track_id, "faces": 0, "embedded": 0, "best": None})
    entry["faces"] += 1
    best = entry["best"]
    if best is None or quality.score > best["score"]:
        factors = ("score", "size", "det", "sharp", "pose", "inside")
        entry["best"] = {name: round(getattr(quality, name), 3) for name in factors}
        entry["best"]["flags"] = sorted(quality.flags)


def run(args: argparse.Namespace, embedder) -> tuple[Counts, Crops]:
    settings = DetectorSettings(detect_width=args.detect_width, device=args.device)
    detector = MtcnnDetector(settings)
    tracker = Tracker(TrackerSettings())
    selector = BestShotSelector()
    no_floor = BestShotSelector(BestShotSettings(min_quality=0.0))
    counts, crops = Counts(), Crops()
    embed_crop = (lambda img, box, pts: crop_for(embedder, img, box, pts)) if embedder is not None else None
    rate = frame_rate(args.video)
    first_t = None
    for frame, (t, image) in enumerate(decode(args.video, rate)):
        first_t = t if first_t is None else first_t
        start = time.perf_counter()
        dets = detector.detect_one(image)
        counts.detect_s += time.perf_counter() - start
        start = time.perf_counter()
        min_face = effective_min_face(settings, image.shape[1])
        step(counts, crops, tracker, (selector, no_floor), image, dets, frame, t - first_t, embed_crop, min_face)
        counts.track_and_select_s += time.perf_counter() - start
        counts.frames += 1
    counts.seconds_of_video = counts.frames / rate
    return counts, crops


def effective_min_face(settings: DetectorSettings, width: int) -> float:
    """The smallest face MTCNN finds, in full-frame pixels (see ``stream.faces.detector``)."""
    scale = min(1.0, settings.detect_width / width) if settings.detect_width else 1.0
    return detector_min_face_px(settings.min_face_px, scale) / scale


def step(counts, crops, tracker, selectors, image, dets, frame, t, embed_crop, min_face) -> None:
    """One frame: count faces, track, offer confirmed tracks' crops, drain the selectors."""
    selector, no_floor = selectors
    counts.faces_total += len(dets)
    counts.max_faces_in_frame = max(counts.max_faces_in_frame, len(dets))
    if embed_crop is not None:
        crops.every_face += [embed_crop(image, b, p) for b, p in zip(dets.boxes, dets.landmarks, strict=True)]
    snaps = tracker.update(dets.boxes, dets.scores, t, extras=list(dets.landmarks))
    for snap in snaps:
        if snap.state is TrackState.REMOVED:
            selector.end(TrackKey(STREAM, 0, snap.track_id))
            no_floor.end(TrackKey(STREAM, 0, snap.track_id))
        if snap.state is not TrackState.CONFIRMED or not snap.matched:
            continue
        counts.track_ids.add(snap.track_id)
        counts.faces_on_confirmed_tracks += 1
        counts.crops_offered += 1
        crop, quality = quality_crop(image, dets, snap, frame, min_face, embed_crop)
        note_track(counts, snap.track_id, quality)
        counts.crops_held += selector.offer(crop, t)
        no_floor.offer(crop, t)
    handed = selector.ready(t, DRAIN_ALL)
    counts.best_shot += len(handed)
    for crop in handed:
        counts.embedded_tracks.add(crop.track.track_id)
        counts.per_track[crop.track.track_id]["embedded"] += 1
    crops.best_shot += [c.crop for c in handed]
    unfloored = no_floor.ready(t, DRAIN_ALL)
    counts.best_shot_no_floor += len(unfloored)
    counts.embedded_tracks_no_floor.update(c.track.track_id for c in unfloored)


def time_embedding(embedder, crops: Crops) -> dict[str, float]:
    out = {}
    for name, items in (("best_shot", crops.best_shot), ("every_face", crops.every_face)):
        start = time.perf_counter()
        if items:
            embedder.embed(np.stack(items))
        out[f"embed_seconds_{name}"] = round(time.perf_counter() - start, 2)
    return out


def report(args: argparse.Namespace, counts: Counts) -> dict[str, object]:
    seconds = counts.seconds_of_video
    return {
        "video": str(args.video.relative_to(REPO.parent))
        if args.video.is_relative_to(REPO.parent)
        else str(args.video),
        "detect_width": args.detect_width,
        "frames": counts.frames,
        "seconds_of_video": round(seconds, 3),
        "faces_total": counts.faces_total,
        "max_faces_in_frame": counts.max_faces_in_frame,
        "confirmed_tracks": len(counts.track_ids),
        "faces_on_confirmed_tracks": counts.faces_on_confirmed_tracks,
        "crops_offered": counts.crops_offered,
        "crops_held": counts.crops_held,
        "tracks_embedded": len(counts.embedded_tracks),
        "embeddings_every_face": counts.faces_total,
        "embeddings_best_shot": counts.best_shot,
        "ratio": round(counts.faces_total / counts.best_shot, 2) if counts.best_shot else None,
        "embeddings_per_video_second_every_face": round(counts.faces_total / seconds, 1) if seconds else None,
        "embeddings_per_video_second_best_shot": round(counts.best_shot / seconds, 1) if seconds else None,
        "detect_seconds": round(counts.detect_s, 2),
        "track_and_select_seconds": round(counts.track_and_select_s, 2),
        "min_quality": BestShotSettings().min_quality,
        "embeddings_best_shot_min_quality_0": counts.best_shot_no_floor,
        "tracks_embedded_min_quality_0": len(counts.embedded_tracks_no_floor),
        "tracks": [counts.per_track[k] for k in sorted(counts.per_track)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=CLIP)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detect-width", type=int, default=640)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--time-embed", action="store_true", help="also embed both sets with FaceNet and time it")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    embedder = None
    if args.time_embed:
        from stream.faces.facenet import FaceNetEmbedder

        embedder = FaceNetEmbedder(REPO / "checkpoints", device=args.device, batch_size=32)
    counts, crops = run(args, embedder)
    result = report(args, counts)
    if embedder is not None:
        result.update(time_embedding(embedder, crops))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
