"""outputs.blur_unknown end to end: the demo clip through the real app (MTCNN, FaceNet, tracker,
H.264 writer), then the real MTCNN on the annotated video: Grace Hopper (not enrolled) carries no
detectable face in any frame, Eileen Collins (named) is still found where she is."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from stream.app import RunOptions, build_app
from stream.config import parse_config
from stream.demo import EILEEN, HOPPER, scene
from stream.faces.models import ModelOverrides
from tests.conftest import app_config_text

FPS = 25


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def _inside(box: np.ndarray, region: tuple[float, float, float, float]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(region[0] <= cx <= region[2] and region[1] <= cy <= region[3])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union)


@pytest.mark.slow
def test_blur_unknown_hides_grace_hopper_and_keeps_eileen_collins(demo: tuple[Path, Path], tmp_path: Path) -> None:
    from stream.faces.detector import MtcnnDetector

    clip, gallery = demo
    config = parse_config(app_config_text(tmp_path) + "  blur_unknown: true\n").resolve_paths(tmp_path)
    assert config.outputs.blur_unknown
    video, events_path = tmp_path / "demo.mp4", tmp_path / "events.jsonl"
    options = RunOptions(sources=(str(clip),), gallery=gallery, output=video, events=events_path)
    summary = build_app(config, options, ModelOverrides(device="cpu")).run()
    assert sorted(set(summary.identities.values()), key=str) == [None, EILEEN]  # Hopper stays unknown
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    named_at = min(e["pts_s"] for e in events if e["kind"] == "identity_assigned" and e["person"] == EILEEN)

    out, original = _decode(video), _decode(clip)
    assert len(out) == len(original) == 150
    detector = MtcnnDetector()  # default settings, full resolution: stricter than the app's 640-px copy
    hopper_seen = hopper_checked = 0
    for index in range(0, len(out), 3):
        places = {p.person: p.face_box() for p in scene(index / FPS)}
        found = detector.detect_one(out[index])
        if HOPPER in places:
            hopper_checked += 1
            before = detector.detect_one(original[index])
            hopper_seen += any(_inside(box, places[HOPPER]) for box in before.boxes)
            leaked = [
                (box, s) for box, s in zip(found.boxes, found.scores, strict=True) if _inside(box, places[HOPPER])
            ]
            assert not leaked, f"frame {index}: MTCNN finds Grace Hopper in the annotated video: {leaked}"
        eileen = [box for box in found.boxes if _inside(box, places[EILEEN])]
        if index / FPS > named_at:
            # Named: found where the input has her. Her box is not pixel-exact: the overlay's box
            # outline lies on her face's edge and the video is re-encoded (H.264, crf 23).
            before_boxes = [box for box in detector.detect_one(original[index]).boxes if _inside(box, places[EILEEN])]
            assert len(eileen) == 1 and len(before_boxes) == 1, f"frame {index}: Eileen Collins not found"
            assert _iou(eileen[0], before_boxes[0]) > 0.7, (index, eileen[0], before_boxes[0])
        elif index <= 3:  # not yet confirmed (tentative, min_confirm_s 0.2 s): hidden too
            assert not eileen, f"frame {index}: Eileen Collins visible before she is named"
    # The check is not vacuous: in the input MTCNN finds Grace Hopper in most of the frames she is in.
    assert hopper_checked >= 20 and hopper_seen >= 0.7 * hopper_checked, (hopper_seen, hopper_checked)
